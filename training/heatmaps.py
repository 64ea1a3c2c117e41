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
import torch
import torch.nn.functional as F
from torch import nn

from wsvs_ros.atomic_file import atomic_write
from wsvs_ros.labels import LabelSet
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
        if self.iconic is not None:
            fcn, names = self.iconic
            # One-vs-all activations (logits), not sigmoids: a sigmoid saturates near 1 over every region that looks
            # somewhat like the class, so 20% of its maximum keeps most of the frame; a negative logit says "not
            # this class" and stays outside B_k (binary_masks treats a map with no positive value as empty).
            scores = F.interpolate(fcn(x), size=size, mode="bilinear", align_corners=False)
            maps.update({n: scores[:, i] for i, n in enumerate(names)})
        if self.imagenet is not None:
            probs = self.imagenet(x).softmax(dim=1)
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            for c in self.label_set.classes:
                if c.imagenet_ids:
                    maps[c.name] = probs[:, list(c.imagenet_ids)].sum(dim=1)
        return torch.stack([maps[c.name] for c in self.label_set.classes], dim=1)


def heatmap_source(
    label_set: LabelSet,
    *,
    iconic_path: str | Path | None,
    vgg16_path: str | Path | None = None,
    scale: float | tuple[float, ...] = 1.0,
) -> HeatmapSource:
    """Build the heatmap source from a `wsvs-train classifiers` file and optionally an ImageNet VGG-16 file."""
    iconic = None
    if iconic_path is not None:
        model, names = load_iconic_classifier(iconic_path)
        iconic = (fully_convolutional(model), names)
    imagenet = fully_convolutional(load_imagenet_vgg16(vgg16_path)) if vgg16_path is not None else None
    return HeatmapSource(label_set, iconic, imagenet, scale)


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
