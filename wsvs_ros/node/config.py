"""The segmentation node's configuration: its parameters, one typed `NodeConfig`, and the start-up checks against
the model. ROS-free, so all of it is tested without ROS.

`node.py` declares every entry of `PARAMETERS` as a ROS parameter (type from the default, description from here),
reads them once and hands the values to `NodeConfig.from_params`; `load_model` then opens the model and refuses a
setting that contradicts it. config/segment.yaml documents the same parameters for `ros2 launch`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsvs_ros.engine.loading import BACKENDS, PRECISIONS
from wsvs_ros.engine.tensorrt_cache import EngineNotBuiltError
from wsvs_ros.labels import LabelSet, get_label_set
from wsvs_ros.messages.conversions import DEFAULT_MAX_IMAGE_PIXELS
from wsvs_ros.messages.outputs import DEFAULT_MASK_CLASSES, DEFAULT_MAX_GAP_S, resolve_classes
from wsvs_ros.model.checkpoint import check_model_file, default_model_path
from wsvs_ros.pipeline import Segmenter, open_segmenter
from wsvs_ros.spec import WINDOWS, ModelSpec

# The node logs this (followed by the topic) once it is subscribed; launch/segment.launch.py waits for it before
# starting `ros2 bag play`, so a replay does not lose its first frames to the model's warm-up.
READY_MESSAGE = "ready: segmenting"

RELIABILITIES = ("best_effort", "reliable")
ParamValue = str | bool | int | float | tuple[str, ...]


@dataclass(frozen=True)
class ParamInfo:
    """One ROS parameter: its name, default (whose Python type is the parameter's type) and description."""

    name: str
    default: ParamValue
    description: str


PARAMETERS: tuple[ParamInfo, ...] = (
    ParamInfo(
        "model",
        "",
        "Model file: a .pt checkpoint (torch; onnxruntime exports it once into ~/.cache/wsvs_ros/onnx) or an "
        "exported .onnx (onnxruntime, tensorrt); ~ is expanded. "
        "Empty: the package's default model, wsvs_ros/data/default_model.pt.",
    ),
    ParamInfo("backend", "torch", "Inference runtime: torch, onnxruntime or tensorrt."),
    ParamInfo("device", "cpu", "Where frames, flows and the network run: cpu, cuda or cuda:N."),
    ParamInfo("precision", "auto", "auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, or int8 (tensorrt only)."),
    ParamInfo(
        "build_engine_if_missing",
        False,
        "tensorrt only: build the engine at start-up (minutes) when none is cached, instead of exiting with the "
        "`wsvs build-engine` command to run.",
    ),
    ParamInfo("camera_topic", "/camera/image_raw", "The sensor_msgs/Image topic to segment."),
    ParamInfo(
        "compressed",
        False,
        "Subscribe to sensor_msgs/CompressedImage on <camera_topic>/compressed (image_transport's convention).",
    ),
    ParamInfo(
        "window",
        "",
        "Flow window alignment: empty for the model's own; causal or centered only to state what you expect, "
        "since a value that contradicts the model is refused.",
    ),
    ParamInfo(
        "publish_classes",
        DEFAULT_MASK_CLASSES,
        "Classes that get a mono8 0/255 mask on ~/mask/<class> (names or aliases of the model's label set).",
    ),
    ParamInfo("publish_overlay", True, "Publish ~/overlay, the label colours blended over the frame (bgr8)."),
    ParamInfo(
        "max_gap",
        DEFAULT_MAX_GAP_S,
        "Seconds between frame stamps above which the flow window restarts (flow across a longer gap is "
        "meaningless); 0.0 never restarts on a gap.",
    ),
    ParamInfo(
        "crf_iterations",
        0,
        "Mean-field steps of the dense CRF that refines each mask along image edges (the paper's test-time "
        "post-processing; 5 is densecrf's default). 0: off. Costs more than the network on a CPU.",
    ),
    ParamInfo(
        "cuda_graph",
        True,
        "On CUDA: replay each frame's torch flow and torch network as captured CUDA graphs (the flow about 7x "
        "faster than launching its kernels one by one); false runs them eagerly.",
    ),
    ParamInfo(
        "qos_reliability",
        "best_effort",
        "Camera subscription reliability: best_effort (the sensor-data default) or reliable.",
    ),
    ParamInfo(
        "queue_size",
        1,
        "Unprocessed frames held while inference runs; 1 = newest wins (lowest latency). A frame replaced "
        "before it was processed counts as dropped.",
    ),
    ParamInfo(
        "max_image_pixels",
        DEFAULT_MAX_IMAGE_PIXELS,
        "Frames with more pixels (width x height) are skipped as bad, refused from the JPEG/PNG header before "
        "anything is decoded: a corrupt or hostile frame cannot exhaust memory. Default 4096x4096.",
    ),
)

# Parameters rclpy or the middleware give every node; they may be in any params file or on any command line.
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
ROS_PARAMETER_PREFIXES = ("qos_overrides.",)

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class StartupError(Exception):
    """The node cannot start as configured; the message is one line naming the parameter and the fix."""


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameters, validated (see `PARAMETERS` for what each means).

    Raises:
        ValueError: naming the parameter, the value and what it may be.
    """

    model: str
    backend: str
    device: str
    precision: str
    build_engine_if_missing: bool
    camera_topic: str
    compressed: bool
    window: str
    publish_classes: tuple[str, ...]
    publish_overlay: bool
    max_gap: float
    crf_iterations: int
    cuda_graph: bool
    qos_reliability: str
    queue_size: int
    max_image_pixels: int

    def __post_init__(self) -> None:
        _one_of("backend", self.backend, BACKENDS)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N (e.g. cuda:0), got {self.device!r}")
        _one_of("precision", self.precision, PRECISIONS)
        if not self.camera_topic or any(c.isspace() for c in self.camera_topic):
            raise ValueError(f"camera_topic must be a topic name such as /camera/image_raw, got {self.camera_topic!r}")
        if self.compressed and self.camera_topic.rstrip("/").endswith("/compressed"):
            raise ValueError(
                f"camera_topic {self.camera_topic!r} already ends in /compressed and compressed is true; "
                "give the raw image topic (e.g. /camera/image_raw): /compressed is appended"
            )
        _one_of("window", self.window, ("", *WINDOWS))
        if any(not name.strip() for name in self.publish_classes):
            raise ValueError(f"publish_classes must be class names, got {list(self.publish_classes)}")
        if not (math.isfinite(self.max_gap) and self.max_gap >= 0):
            raise ValueError(f"max_gap must be seconds >= 0 (0.0: never restart on a gap), got {self.max_gap}")
        if self.crf_iterations < 0:
            raise ValueError(f"crf_iterations must be >= 0 (0: no CRF, 5: the usual), got {self.crf_iterations}")
        _one_of("qos_reliability", self.qos_reliability, RELIABILITIES)
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be at least 1 (1 = newest frame wins), got {self.queue_size}")
        if self.max_image_pixels < 1:
            raise ValueError(
                f"max_image_pixels must be at least 1 (default {DEFAULT_MAX_IMAGE_PIXELS}, 4096x4096), "
                f"got {self.max_image_pixels}"
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> NodeConfig:
        """Build from {parameter name: value}; a parameter left out takes its default.

        Lists become tuples and integers are accepted for doubles; every other type must match the default's.

        Raises:
            ValueError: an unknown parameter, a value of the wrong type, or an invalid value (each named).
        """
        known = {p.name: p for p in PARAMETERS}
        check_known(params)
        values: dict[str, Any] = {name: _typed(p, params.get(name, p.default)) for name, p in known.items()}
        return cls(**values)

    @property
    def input_topic(self) -> str:
        """The topic subscribed to: `camera_topic`, or `<camera_topic>/compressed` when `compressed`."""
        return self.camera_topic.rstrip("/") + "/compressed" if self.compressed else self.camera_topic

    @property
    def max_gap_s(self) -> float | None:
        """`max_gap` for the Segmenter: None when 0 (never restart on a gap)."""
        return self.max_gap or None


def check_known(names: Iterable[str]) -> None:
    """Refuse parameter names the node does not take (a typo would otherwise leave its default in force).

    Names rclpy gives every node (`ROS_PARAMETERS`, `qos_overrides.*`) pass.

    Raises:
        ValueError: one line naming each unknown parameter and the nearest known one.
    """
    known = [p.name for p in PARAMETERS]
    unknown = sorted(
        name for name in set(names) - set(known)
        if name not in ROS_PARAMETERS and not name.startswith(ROS_PARAMETER_PREFIXES)
    )  # fmt: skip
    if not unknown:
        return
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        named.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise ValueError(
        f"unknown parameter {', '.join(named)}; the node's parameters are {', '.join(known)} "
        "(documented in config/segment.yaml)"
    )


def resolve_model_path(model: str) -> Path:
    """The model file the `model` parameter names (empty: the default model), checked to exist.

    Raises:
        StartupError: the file does not exist, saying how to pass one.
    """
    if not model:
        path = default_model_path()
        if not path.is_file():
            raise StartupError(
                f"no model given and the package's default model {path} is not installed; pass one with "
                "model:=/path/to/model.pt (a wsvs-train checkpoint) or model:=/path/to/model.onnx (`wsvs export`)"
            )
        return path
    path = Path(model).expanduser()
    try:
        check_model_file(path)
    except (FileNotFoundError, ValueError) as e:
        raise StartupError(f"{e}; check the model parameter (model:=/path/to/model.pt)") from None
    return path


def mask_class_ids(config: NodeConfig, spec: ModelSpec) -> tuple[int, ...]:
    """Check the config against the model; return the class ids of `publish_classes`.

    Raises:
        StartupError: `window` contradicts the model's, or `publish_classes` names a class the model does not have
            (listing the ones it has) or the same class twice.
    """
    if config.window and config.window != spec.window:
        raise StartupError(
            f"window {config.window!r} contradicts the model, which was trained with a {spec.window!r} window; "
            "leave window empty to use the model's, or pass a model trained with the window you want"
        )
    try:
        ids = resolve_classes(get_label_set(spec.label_set), config.publish_classes)
    except ValueError as e:
        raise StartupError(str(e)) from None
    if len(set(ids)) != len(ids):
        raise StartupError(f"publish_classes {list(config.publish_classes)} names a class twice (aliases count)")
    return ids


# What open_segmenter (open_engine, make_flow) raises for a bad file or setting; each message names the fix (for
# EngineNotBuiltError, the `wsvs build-engine` command to run once on the device).
_ENGINE_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, ImportError, EngineNotBuiltError)


@dataclass(frozen=True)
class LoadedModel:
    """What the node runs: the segmenter and what it needs to publish the results."""

    segmenter: Segmenter
    spec: ModelSpec
    path: Path
    label_set: LabelSet
    mask_class_ids: tuple[int, ...]


def load_model(config: NodeConfig) -> LoadedModel:
    """Open the model for `config` and build the Segmenter (no warm-up).

    Raises:
        StartupError: for every configuration or model-file problem (missing file, a backend/device/precision
            combination that cannot work, a runtime that is not installed, an engine not built yet, a setting that
            contradicts the model), with the message that names the fix.
    """
    path = resolve_model_path(config.model)
    try:
        segmenter = open_segmenter(
            path, backend=config.backend, device=config.device, precision=config.precision,
            max_gap=config.max_gap_s, cuda_graph=config.cuda_graph, crf_iterations=config.crf_iterations,
            build_engine_if_missing=config.build_engine_if_missing,
        )  # fmt: skip
    except _ENGINE_ERRORS as e:
        raise StartupError(f"cannot load {path} ({config.backend} on {config.device}): {e}") from e
    spec = segmenter.spec
    return LoadedModel(
        segmenter=segmenter,
        spec=spec,
        path=path,
        label_set=get_label_set(spec.label_set),
        mask_class_ids=mask_class_ids(config, spec),
    )


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) if a == "" else a for a in allowed)
        raise ValueError(f"{name} must be one of {shown}; got {value!r}")


def _typed(param: ParamInfo, value: Any) -> ParamValue:
    """`value` as the type of `param`'s default. Raises ValueError naming the parameter and the expected type."""
    default = param.default
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "a boolean (true or false)"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number of seconds"
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        kind = "a list of strings, e.g. [road, sidewalk]"
        value = tuple(value) if ok else value
    if not ok:
        raise ValueError(f"parameter {param.name} must be {kind}, got {value!r} ({type(value).__name__})")
    return value
