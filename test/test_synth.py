"""Synthetic drives: determinism, label geometry, tags, on-disk layout, iconic images and motion."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsvs_ros.labels import DRIVE, VOID_ID
from wsvs_training.synth.drives import (
    ICONIC_SIZE,
    TAG_MIN_FRACTION,
    iconic_images,
    main,
    render_clip,
    write_drives,
)
from wsvs_training.synth.props import car_prop
from wsvs_training.synth.render import SceneRenderer
from wsvs_training.synth.sampling import sample_scene
from wsvs_training.synth.scene import CAR, FPS, ROAD, SKY, Scene

SIZE = (64, 32)
CLIPS, FRAMES, VAL = 3, 3, 1


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny data set written through the command line: 3 clips (the last one val) of 3 frames, 1 iconic a class."""
    out = tmp_path_factory.mktemp("drives") / "synth"
    args = ["--out", str(out), "--clips", str(CLIPS), "--seed", "3", "--frames", str(FRAMES), "--size", "64x32"]
    assert main([*args, "--val-clips", str(VAL), "--iconic", "1"]) == 0
    return out


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _straight(seed: int) -> Scene:
    """A sampled scene with its road straightened and the camera's yaw wobble removed."""
    scene = sample_scene(np.random.default_rng(seed), duration=1.0)
    road = replace(scene.road, curvature=0.0, curvature_wave=0.0)
    return replace(scene, road=road, ego=replace(scene.ego, wobble=0.0))


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_drives(tmp_path / name, clips=2, frames_per_clip=2, size=SIZE, seed=11, iconic_per_class=0)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.suffix in (".png", ".json"))
    assert len(files) == 2 * 2 * 2 + 2
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_same_seed_gives_the_same_iconic_images() -> None:
    first = list(itertools.islice(iconic_images(4, per_class=1), 3))
    again = list(itertools.islice(iconic_images(4, per_class=1), 3))
    assert [name for name, _ in first] == [name for name, _ in again]
    for (_, a), (_, b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_give_different_clips() -> None:
    (rgb_a, labels_a), (rgb_b, labels_b) = (next(render_clip(seed, frames=1, size=SIZE)) for seed in (1, 2))
    assert not np.array_equal(rgb_a, rgb_b)
    assert not np.array_equal(labels_a, labels_b)


def test_frames_and_labels_have_the_requested_size_and_types() -> None:
    frames = list(render_clip(0, frames=2, size=(40, 24)))
    assert len(frames) == 2
    for rgb, labels in frames:
        assert rgb.shape == (24, 40, 3) and rgb.dtype == np.uint8
        assert labels.shape == (24, 40) and labels.dtype == np.uint8


def test_label_maps_hold_only_drive_ids_or_void(drives: Path) -> None:
    allowed = {*range(len(DRIVE)), VOID_ID}
    label_files = sorted((drives / "gtFine").rglob("*_gtFine_labelTrainIds.png"))
    assert len(label_files) == CLIPS * FRAMES
    for path in label_files:
        labels = _read(path)
        assert labels.shape == (SIZE[1], SIZE[0]) and labels.dtype == np.uint8
        assert set(np.unique(labels).tolist()) <= allowed


@pytest.mark.parametrize("seed", range(4))
def test_on_a_straight_road_the_road_fills_the_bottom_centre_and_the_sky_lies_above_the_horizon(seed: int) -> None:
    scene = _straight(seed)
    renderer = SceneRenderer(scene, size=SIZE)
    _, labels = renderer.render(0)
    width, height = SIZE
    assert np.all(labels[int(0.8 * height) :, int(0.4 * width) : int(0.6 * width)] == ROAD)
    # The camera has no roll: the horizon is the image row where the pitched optical axis meets the sky.
    horizon = renderer.cy + renderer.focal * math.tan(scene.ego.pitch)
    rows = np.arange(height)[:, None]
    assert not np.any((labels == SKY) & (rows > horizon + 1))
    assert not np.any((labels == ROAD) & (rows < horizon - 1))
    assert np.any(labels[: height // 4] == SKY)


def test_tags_are_the_classes_covering_enough_pixels_in_some_frame(drives: Path) -> None:
    least = math.ceil(TAG_MIN_FRACTION * SIZE[0] * SIZE[1])
    tag_files = sorted((drives / "tags").rglob("*.json"))
    assert len(tag_files) == CLIPS
    for tag_file in tag_files:
        split, stem = tag_file.parent.name, tag_file.stem
        record = json.loads(tag_file.read_text())
        assert record["frames"] == FRAMES and record["fps"] == FPS
        label_files = sorted((drives / "gtFine" / split / "synth").glob(f"{stem}_*_gtFine_labelTrainIds.png"))
        most = np.max([np.bincount(_read(p).ravel(), minlength=256)[: len(DRIVE)] for p in label_files], axis=0)
        assert record["tags"] == [c.name for c in DRIVE.classes if most[c.id] >= least]


def test_files_follow_the_documented_cityscapes_layout(drives: Path) -> None:
    expected = {Path("README.md")}
    for seq in range(CLIPS):
        split = "train" if seq < CLIPS - VAL else "val"
        expected.add(Path("tags", split, f"synth_{seq:06d}.json"))
        for frame in range(FRAMES):
            stem = f"synth_{seq:06d}_{frame:06d}"
            expected.add(Path("leftImg8bit_sequence", split, "synth", f"{stem}_leftImg8bit.png"))
            expected.add(Path("gtFine", split, "synth", f"{stem}_gtFine_labelTrainIds.png"))
    expected |= {Path("iconic", name, "0000.png") for name in DRIVE.names}
    written = {p.relative_to(drives) for p in drives.rglob("*") if p.is_file()}
    assert written == expected
    frame = _read(drives / "leftImg8bit_sequence" / "val" / "synth" / "synth_000002_000001_leftImg8bit.png")
    assert frame.shape == (SIZE[1], SIZE[0], 3)
    readme = (drives / "README.md").read_text()
    assert "--clips 3 --seed 3 --frames 3 --size 64x32 --val-clips 1 --iconic 1" in readme


def test_iconic_images_exist_for_every_class(drives: Path) -> None:
    for name in DRIVE.names:
        image = _read(drives / "iconic" / name / "0000.png")
        assert image.shape == (ICONIC_SIZE, ICONIC_SIZE, 3)
        assert image.std() > 1.0  # a picture, not a blank


def test_writing_into_a_directory_with_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old.png").write_bytes(b"")
    with pytest.raises(ValueError, match="not empty"):
        write_drives(tmp_path, clips=1, frames_per_clip=1, size=SIZE, seed=0, iconic_per_class=0)


def test_more_val_clips_than_clips_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_clips"):
        write_drives(tmp_path / "out", clips=2, size=SIZE, seed=0, val_clips=3, iconic_per_class=0)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [sample_scene(np.random.default_rng(seed), duration=2.0) for seed in range(20)]


def test_not_every_class_is_in_every_scene(scenes: list[Scene]) -> None:
    present = [{f.class_id for p in scene.props for f in p.faces} for scene in scenes]
    for name in ("building", "vegetation", "car", "pole", "person"):
        class_id = DRIVE.by_name(name).id
        assert any(class_id in classes for classes in present), name
        assert any(class_id not in classes for classes in present), name


def test_colour_alone_does_not_give_the_class(scenes: list[Scene]) -> None:
    foliage = [scene.look.foliage[0] for scene in scenes]
    walls = [facade.wall for scene in scenes for facade in scene.look.facades]
    pavers = [scene.look.pavers for scene in scenes]
    assert any(g > r for r, g, _ in foliage) and any(r > g for r, g, _ in foliage)  # summer and autumn
    assert any(g > r and g > b for r, g, b in walls)  # greenish facades
    assert any(r > g + 0.1 for r, g, _ in pavers) and any(abs(r - g) < 0.05 for r, g, _ in pavers)  # red, grey
    asphalt = [sum(scene.look.asphalt) / 3 for scene in scenes]
    assert max(asphalt) - min(asphalt) > 0.15  # dark and light roads


def test_consecutive_frames_move() -> None:
    (rgb_a, labels_a), (rgb_b, labels_b) = render_clip(5, frames=2, size=(128, 64))
    assert np.abs(rgb_a.astype(np.int16) - rgb_b).mean() > 0
    # Beyond sensor noise: smoothed frames still differ, and so do the noise-free label maps.
    smooth_a, smooth_b = (cv2.GaussianBlur(x, (0, 0), 2).astype(np.int16) for x in (rgb_a, rgb_b))
    assert np.abs(smooth_a - smooth_b).mean() > 0.5
    assert np.any(labels_a != labels_b)


def _lone_car_area(speed_factor: float) -> tuple[int, int]:
    """Car pixels at t = 0 and t = 10 frames of a straight road with one car 15 m ahead in the camera's lane."""
    scene = _straight(8)
    speed = speed_factor * scene.ego.speed
    car = car_prop(np.random.default_rng(0), s=15.0, d=scene.camera_d, speed=speed, reverse=False)
    renderer = SceneRenderer(replace(scene, props=(car,)), size=(128, 64))
    return tuple(int((renderer.render(frame)[1] == CAR).sum()) for frame in (0, 10))


def test_a_car_driving_along_keeps_its_image_size_while_a_parked_car_looms() -> None:
    moving_before, moving_after = _lone_car_area(1.0)
    parked_before, parked_after = _lone_car_area(0.0)
    assert moving_before == parked_before > 0
    assert abs(moving_after - moving_before) <= 0.05 * moving_before
    assert parked_after > 1.5 * parked_before
