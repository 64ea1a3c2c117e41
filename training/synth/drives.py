"""Synthetic driving clips on disk, laid out like Cityscapes so that one loader reads both.

Command line (the same as `write_drives`):

    wsvs-train synth --out DIR --clips N --seed S [--frames 30] [--size 512x256] [--val-clips K] [--iconic 100]

Layout under DIR (`city` is always "synth", `seq` numbers the clips 0..N-1 across both splits, `frame` 0..F-1):

    leftImg8bit_sequence/{split}/synth/synth_{seq:06d}_{frame:06d}_leftImg8bit.png       RGB frames
    gtFine/{split}/synth/synth_{seq:06d}_{frame:06d}_gtFine_labelTrainIds.png             DRIVE ids, 255 void
    tags/{split}/synth_{seq:06d}.json      {"tags": ["road", "sidewalk", ...], "frames": F, "fps": 15.0}
    iconic/{class_name}/{index:04d}.png    single-class close-ups, ICONIC_SIZE square (paper 3.1, Table 1)
    README.md                              this layout, the command and the seed

`split` is "train", or "val" for the last K clips. Training may use only the tags and the iconic images; the label
maps (every frame, unlike Cityscapes' one per snippet) are for evaluation. A class is a tag of a clip when it covers
at least `TAG_MIN_FRACTION` of the pixels (0.2 %, 262 px at 512x256) in at least one frame: visible, not a speck.

Iconic images stand in for the background images the paper crawled from ImageNet: square crops of views from scenes
that are not among the clips (cameras also turned sideways, up and down), in which one class covers at least
`ICONIC_MIN_FRACTION[class]` of the crop, resized to ICONIC_SIZE. Every DRIVE class gets them, car included, as no
ImageNet classifier is reachable here to supply its heatmap.

The same seed gives byte-identical files. `render_clip` renders a clip in memory (tests, demo bags).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from wsvs_ros.labels import DRIVE
from wsvs_training.synth.render import SceneRenderer
from wsvs_training.synth.sampling import sample_scene
from wsvs_training.synth.scene import CAR, FPS, PERSON, POLE, Scene

CITY = "synth"
TAG_MIN_FRACTION = 0.002
"""A class is a clip's tag when it covers at least this fraction of the pixels of at least one frame."""

ICONIC_SIZE = 128
"""Side of the square iconic images (px)."""

ICONIC_MIN_FRACTION = {
    "road": 0.8,
    "sidewalk": 0.7,
    "vegetation": 0.8,
    "building": 0.8,
    "sky": 0.85,
    "pole": 0.2,
    "car": 0.55,
    "person": 0.25,
}
"""Share of an iconic crop the class must cover. Thin things (poles, people) cannot fill a square; they get less."""

ICONIC_MIXED = tuple(name for name, share in ICONIC_MIN_FRACTION.items() if share < 0.5)
"""Classes whose iconic crops are mostly other classes: `wsvs-train classifiers --mixed` should name them."""

_ICONIC_SOURCE = (512, 256)  # px, views the crops are cut from
_ICONIC_WINDOWS = (48, 64, 96, 128, 160, 192, 224)  # px, square crop sides tried in a view
_ICONIC_VIEWS_PER_SCENE = 6
_ICONIC_SCENE_SECONDS = 6.0  # s of driving a scene for iconic views covers
_CLIP_STREAM, _ICONIC_STREAM = 0, 1  # seed spawn keys: clips and iconic scenes never share random numbers


def render_clip(seed: int, *, frames: int, size: tuple[int, int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Render a random clip: for each frame, RGB (H, W, 3) uint8 and DRIVE labels (H, W) uint8 (255 void).

    Args:
        seed: picks the scene; the same seed gives the same frames.
        frames: number of frames, `FPS` apart.
        size: (width, height) in pixels.

    Raises:
        ValueError: if frames < 1 or the size is below 16x16.
    """
    if frames < 1:
        raise ValueError(f"frames={frames}: a clip needs at least one frame")
    renderer = SceneRenderer(sample_scene(np.random.default_rng(seed), duration=frames / FPS), size=size)
    for frame in range(frames):
        yield renderer.render(frame)


def clip_tags(pixel_counts: np.ndarray, *, frame_pixels: int) -> list[str]:
    """Tags of a clip from the largest per-frame pixel count of each DRIVE class (len(DRIVE),), in DRIVE order."""
    least = math.ceil(TAG_MIN_FRACTION * frame_pixels)
    return [DRIVE.by_id(int(i)).name for i in np.flatnonzero(pixel_counts >= least)]


def iconic_images(seed: int, *, per_class: int) -> Iterator[tuple[str, np.ndarray]]:
    """(class name, RGB (ICONIC_SIZE, ICONIC_SIZE, 3) uint8) pairs until every DRIVE class has `per_class`.

    Views are aimed at a class still short of images; each view gives at most one crop per class, cut where the
    class covers at least ICONIC_MIN_FRACTION of a square window.

    Raises:
        RuntimeError: if some class cannot be found in many more scenes than it should take.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_ICONIC_STREAM,)))
    missing = dict.fromkeys(DRIVE.names, per_class)
    budget = 40 + per_class  # scenes; each usually gives several classes
    for _ in range(budget):
        if not any(missing.values()):
            return
        scene = sample_scene(rng, duration=_ICONIC_SCENE_SECONDS)
        renderer = SceneRenderer(scene, size=_ICONIC_SOURCE)
        for _ in range(_ICONIC_VIEWS_PER_SCENE):
            wanted = [name for name, n in missing.items() if n > 0]
            if not wanted:
                return
            frame, yaw, pitch = _aim(rng, scene, str(rng.choice(wanted)))
            rgb, labels = renderer.render(frame, yaw=yaw, pitch=pitch)
            for name in wanted:
                crop = _iconic_crop(rng, rgb, labels == DRIVE.by_name(name).id, ICONIC_MIN_FRACTION[name])
                if crop is not None:
                    missing[name] -= 1
                    yield name, crop
    short = ", ".join(f"{name} ({n} short)" for name, n in missing.items() if n > 0)
    if short:
        raise RuntimeError(f"no iconic crops found for {short} in {budget} scenes; ask for fewer with --iconic")


def _aim(rng: np.random.Generator, scene: Scene, name: str) -> tuple[int, float, float]:
    """A frame and camera yaw and pitch (rad) that tend to show `name` large.

    Things (poles, cars, people) are aimed at: a prop of the class is picked and the frame is the one where it is
    a few metres ahead (curves and wobble are small enough to ignore). Stuff is found by turning the camera down at
    the ground, up at the sky or sideways at facades and foliage.
    """
    ego = scene.ego
    frames = round(_ICONIC_SCENE_SECONDS * FPS)
    class_id = DRIVE.by_name(name).id
    if class_id in (POLE, CAR, PERSON):
        props = [p for p in scene.props if p.faces[0].class_id == class_id and ego.speed - p.speed > 1.0]
        for k in rng.permutation(len(props)):
            prop, ahead = props[k], rng.uniform(4.0, 14.0)
            frame = round((prop.s - ahead) / (ego.speed - prop.speed) * FPS)
            if 0 <= frame < frames:
                aside = prop.d - scene.camera_d
                height = rng.uniform(1.0, 4.0) if class_id == POLE else 0.8
                pitch = math.atan2(height - ego.height, math.hypot(ahead, aside)) - ego.pitch
                return frame, math.atan2(aside, ahead) + rng.normal(0, 0.05), pitch
    frame = int(rng.integers(frames))
    side = float(rng.choice((-1.0, 1.0)))
    if name == "road":
        return frame, rng.normal(0, 0.15), -rng.uniform(0.4, 0.9)
    if name == "sidewalk":
        return frame, side * rng.uniform(0.5, 1.1), -rng.uniform(0.4, 0.8)
    if name == "sky":
        return frame, rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 0.7)
    return frame, side * rng.uniform(0.5, 1.5), rng.uniform(-0.2, 0.4)  # facades, foliage, or things not found


def _iconic_crop(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, min_fraction: float) -> np.ndarray | None:
    """A random square window of rgb in which mask (H, W) bool covers >= min_fraction, resized; None if none."""
    integral = cv2.integral(mask.astype(np.uint8))
    height, width = mask.shape
    for side in rng.permutation([w for w in _ICONIC_WINDOWS if w <= min(height, width)]):
        covered = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
        ys, xs = np.nonzero(covered >= min_fraction * side * side)
        if ys.size:
            k = int(rng.integers(ys.size))
            crop = rgb[ys[k] : ys[k] + side, xs[k] : xs[k] + side]
            interpolation = cv2.INTER_AREA if side > ICONIC_SIZE else cv2.INTER_LINEAR
            return cv2.resize(crop, (ICONIC_SIZE, ICONIC_SIZE), interpolation=interpolation)
    return None


def write_drives(
    out_dir: str | Path,
    *,
    clips: int,
    frames_per_clip: int = 30,
    size: tuple[int, int] = (512, 256),
    seed: int,
    val_clips: int | None = None,
    iconic_per_class: int = 100,
) -> None:
    """Render `clips` clips, their tags and iconic images into out_dir in the layout of the module docstring.

    Args:
        out_dir: a new or empty directory.
        clips: number of clips.
        frames_per_clip: frames per clip, `FPS` apart.
        size: (width, height) of the frames in pixels.
        seed: non-negative; the same seed gives byte-identical files.
        val_clips: how many of the clips (the last ones) form the "val" split; None: a fifth, rounded down.
        iconic_per_class: iconic images per DRIVE class (0: none).

    Raises:
        ValueError: on counts out of range, or if out_dir holds files already.
    """
    out = Path(out_dir)
    val = clips // 5 if val_clips is None else val_clips
    if clips < 1 or frames_per_clip < 1 or seed < 0 or iconic_per_class < 0:
        raise ValueError(
            f"clips={clips}, frames_per_clip={frames_per_clip}, seed={seed}, iconic_per_class={iconic_per_class}: "
            "clips and frames must be >= 1, seed and iconic images >= 0"
        )
    if not 0 <= val <= clips:
        raise ValueError(f"val_clips={val} must lie between 0 and clips={clips}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; write the drives into a new directory (old clips would mix in)")
    width, height = size

    for seq in tqdm(range(clips), desc="synthetic clips", unit="clip"):
        split = "train" if seq < clips - val else "val"
        frames_dir = out / "leftImg8bit_sequence" / split / CITY
        labels_dir = out / "gtFine" / split / CITY
        most = np.zeros(len(DRIVE), np.int64)
        clip_seed = int(np.random.SeedSequence(seed, spawn_key=(_CLIP_STREAM, seq)).generate_state(1, np.uint64)[0])
        for frame, (rgb, labels) in enumerate(render_clip(clip_seed, frames=frames_per_clip, size=size)):
            stem = f"{CITY}_{seq:06d}_{frame:06d}"
            _write_png(frames_dir / f"{stem}_leftImg8bit.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            _write_png(labels_dir / f"{stem}_gtFine_labelTrainIds.png", labels)
            most = np.maximum(most, np.bincount(labels.ravel(), minlength=256)[: len(DRIVE)])
        tags = {"tags": clip_tags(most, frame_pixels=width * height), "frames": frames_per_clip, "fps": FPS}
        tag_path = out / "tags" / split / f"{CITY}_{seq:06d}.json"
        tag_path.parent.mkdir(parents=True, exist_ok=True)
        tag_path.write_text(json.dumps(tags) + "\n")

    written = dict.fromkeys(DRIVE.names, 0)
    images = iconic_images(seed, per_class=iconic_per_class) if iconic_per_class else iter(())
    for name, image in tqdm(images, desc="iconic images", unit="img", total=iconic_per_class * len(DRIVE)):
        _write_png(out / "iconic" / name / f"{written[name]:04d}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        written[name] += 1

    command = (
        f"python -m wsvs_training.synth --out {shlex.quote(str(out))} --clips {clips} --seed {seed} "
        f"--frames {frames_per_clip} --size {width}x{height} --val-clips {val} --iconic {iconic_per_class}"
    )
    (out / "README.md").write_text(_readme(command, seed=seed, clips=clips, val=val, size=size))


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}; check the disk space and permissions")


def _readme(command: str, *, seed: int, clips: int, val: int, size: tuple[int, int]) -> str:
    width, height = size
    classes = "\n".join(f"| {c.id} | {c.name} | {c.color} |" for c in DRIVE.classes)
    thresholds = ", ".join(f"{name} {share:.0%}" for name, share in ICONIC_MIN_FRACTION.items())
    return f"""# Synthetic drives

Procedural driving clips from `training/synth.py` (wsvs_ros): {clips} clips ({clips - val} train, {val} val) of
{width}x{height} frames at {FPS:g} fps, seed {seed}. Regenerate, byte for byte, with

    {command}

## Layout (Cityscapes-like; city = `{CITY}`)

    leftImg8bit_sequence/{{split}}/{CITY}/{CITY}_{{seq:06d}}_{{frame:06d}}_leftImg8bit.png   RGB frames
    gtFine/{{split}}/{CITY}/{CITY}_{{seq:06d}}_{{frame:06d}}_gtFine_labelTrainIds.png         DRIVE class ids, 255 void
    tags/{{split}}/{CITY}_{{seq:06d}}.json    {{"tags": [...], "frames": F, "fps": {FPS:g}}}
    iconic/{{class_name}}/{{index:04d}}.png   {ICONIC_SIZE}x{ICONIC_SIZE} single-class crops (paper 3.1, Table 1)

`split` is `train` or `val` (the last {val} clips). Weak supervision uses only the tags and the iconic images; the
label maps are for evaluation. A class is a tag of a clip when it covers at least {TAG_MIN_FRACTION:.1%} of the pixels
of at least one frame. An iconic image is a crop, from scenes that are not among the clips, in which its class covers
at least: {thresholds}. The {" and ".join(ICONIC_MIXED)} crops are mostly other classes, so train the heatmap
classifiers with `wsvs-train classifiers --iconic iconic --mixed {" ".join(ICONIC_MIXED)} ...`.

## Classes (DRIVE label set)

| id | name | colour (RGB) |
|---|---|---|
{classes}
"""


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x256") from None
    return width, height


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m wsvs_training.synth", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new or empty output directory")
    parser.add_argument("--clips", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0); same seed, same files")
    parser.add_argument("--frames", type=int, default=30, help="frames per clip (default 30)")
    parser.add_argument("--size", type=parse_size, default=(512, 256), help="WIDTHxHEIGHT (default 512x256)")
    parser.add_argument("--val-clips", type=int, default=None, help="clips in the val split (default: a fifth)")
    parser.add_argument("--iconic", type=int, default=100, help="iconic images per class (default 100)")
    args = parser.parse_args(argv)
    try:
        write_drives(
            args.out,
            clips=args.clips,
            frames_per_clip=args.frames,
            size=args.size,
            seed=args.seed,
            val_clips=args.val_clips,
            iconic_per_class=args.iconic,
        )
    except ValueError as e:
        parser.error(str(e))
    return 0
