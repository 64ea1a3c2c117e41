"""Heatmap mask quality: pooled precision / recall of B_k against annotations, tagged classes only, void excluded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_spec
from weak_fixtures import write_tiny_drives

from wsvs_ros.labels import DRIVE, VOID_ID
from wsvs_training.datasets.clips import Clip
from wsvs_training.heatmap_quality import mask_quality
from wsvs_training.heatmaps import save_iconic_classifier, train_iconic_classifier

ROAD, SKY, CAR = (DRIVE.by_name(n).id for n in ("road", "sky", "car"))
V = VOID_ID

# A 64x32 frame has a 4 x 8 heatmap grid (stride 8); labels are drawn per grid cell and blown up to 8 x 8 pixels.
CELLS = np.array(
    [
        [SKY, SKY, SKY, SKY, SKY, SKY, SKY, SKY],
        [ROAD, ROAD, ROAD, ROAD, CAR, CAR, V, V],
        [ROAD, ROAD, ROAD, ROAD, CAR, CAR, ROAD, ROAD],
        [ROAD] * 8,
    ],
    np.uint8,
)


def heatmaps(**rows: Sequence[int]) -> torch.Tensor:
    """(1, C, 4, 8) heatmaps: 1 on the given rows of the named classes' maps, 0.1 (under 20% of 1) elsewhere; -1 for
    classes not named (a negative maximum: empty B_k)."""
    heat = torch.full((1, len(DRIVE), 4, 8), -1.0)
    for name, rs in rows.items():
        k = DRIVE.by_name(name).id
        heat[0, k] = 0.1
        heat[0, k, list(rs)] = 1.0
    return heat


class FixedHeatmaps:
    """Stands in for a HeatmapSource: hands out the given heatmaps in call order, one per frame."""

    def __init__(self, *maps: torch.Tensor):
        self.maps = list(maps)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape == (1, 3, 32, 64)
        return self.maps.pop(0)


def make_clip(root: Path, labels: Sequence[np.ndarray], tags: set[str]) -> Clip:
    """A clip of black 64x32 frames annotated with the given per-cell label grids (train ids, 255 void)."""
    root.mkdir(parents=True, exist_ok=True)
    frames, annotations = [], {}
    for i, cells in enumerate(labels):
        frames.append(root / f"frame_{i}.png")
        cv2.imwrite(str(frames[-1]), np.zeros((32, 64, 3), np.uint8))
        annotations[i] = root / f"label_{i}.png"
        cv2.imwrite(str(annotations[i]), np.kron(cells, np.ones((8, 8), np.uint8)))
    return Clip("c", tuple(frames), frozenset(tags), tuple(range(len(labels))), annotations)


def quality(clip: Clip, *maps: torch.Tensor, every: int = 1) -> dict:
    return mask_quality(FixedHeatmaps(*maps), [clip], tiny_spec(), fraction=0.2, every=every, progress=False)


def test_precision_and_recall_are_pooled_over_frames(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, [CELLS, CELLS], {"road", "car"})
    q = quality(clip, heatmaps(road=[1, 2]), heatmaps(road=[3]))
    road = q["per_class"]["road"]
    # Frame 0: B_road = rows 1-2, 16 cells, 2 of them void -> 14, of which 10 road. Frame 1: row 3, 8 cells, all road.
    # Road pixels: 18 per frame.
    assert (road["hits"], road["mask_pixels"], road["class_pixels"]) == (18, 22, 36)
    assert road["precision"] == pytest.approx(18 / 22)  # not the mean of 10/14 and 8/8
    assert road["recall"] == pytest.approx(18 / 36)
    assert road["f1"] == pytest.approx(2 * (18 / 22) * 0.5 / (18 / 22 + 0.5))
    assert (road["frames"], road["masked_frames"]) == (2, 2)
    car = q["per_class"]["car"]  # tagged, but its classifier finds nothing: no mask, all of it missed
    assert (car["frames"], car["masked_frames"], car["mask_pixels"], car["class_pixels"]) == (2, 0, 0, 8)
    assert car["precision"] is None and car["recall"] == 0.0 and car["f1"] == 0.0
    assert q["mean_f1"] == pytest.approx(road["f1"]), "only classes with a mask enter the mean"
    assert q["frames"] == 2


def test_every_n_evaluates_every_nth_annotated_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, [CELLS, CELLS, CELLS], {"road"})
    q = quality(clip, heatmaps(road=[1, 2]), heatmaps(road=[3]), every=2)
    assert q["frames"] == 2 and q["per_class"]["road"]["mask_pixels"] == 14 + 8  # frames 0 and 2


def test_untagged_classes_are_not_counted(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, [CELLS], {"road"})
    q = quality(clip, heatmaps(road=[3], sky=[0]))  # sky's mask is perfect, but sky is not tagged: no Eq. 4 term
    sky = q["per_class"]["sky"]
    assert sky == {"precision": None, "recall": None, "f1": None, "frames": 0, "masked_frames": 0, "mask_pixels": 0,
                   "class_pixels": 0, "hits": 0}  # fmt: skip
    assert q["mean_f1"] == pytest.approx(2 * 8 / (8 + 18)), "road alone: precision 8/8, recall 8/18"


def test_void_pixels_count_neither_in_the_mask_nor_in_the_class(tmp_path: Path) -> None:
    cells = CELLS.copy()
    cells[3] = V
    clip = make_clip(tmp_path, [cells], {"road"})
    q = quality(clip, heatmaps(road=[3]))
    road = q["per_class"]["road"]
    assert (road["mask_pixels"], road["masked_frames"], road["class_pixels"]) == (0, 0, 10)
    assert road["precision"] is None and road["recall"] == 0.0
    assert q["mean_f1"] is None, "no class has a mask on annotated pixels"


def test_labels_are_sampled_at_heatmap_cell_centres(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, [np.full((4, 8), ROAD, np.uint8)], {"road"})
    label = np.full((32, 64), ROAD, np.uint8)
    label[::8], label[:, ::8] = V, V  # each cell's first row and column void, its centre road
    cv2.imwrite(str(clip.annotations[0]), label)
    road = quality(clip, heatmaps(road=[0, 1, 2, 3]))["per_class"]["road"]
    assert (road["hits"], road["mask_pixels"], road["class_pixels"]) == (32, 32, 32)


def test_heatmaps_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, [CELLS], {"road"})
    with pytest.raises(ValueError, match=r"expected \(1, 8, 4, 8\)"):
        quality(clip, torch.zeros(1, len(DRIVE), 8, 16))
    with pytest.raises(ValueError, match="every=0"):
        quality(clip, heatmaps(road=[3]), every=0)


def test_wsvs_train_heatmaps_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsvs_training.cli import main

    root = write_tiny_drives(tmp_path / "d", clips=2, frames=3)
    model, info = train_iconic_classifier(root / "iconic", DRIVE.names, epochs=1, seed=0, log=False)
    save_iconic_classifier(tmp_path / "iconic.pt", model, DRIVE.names, info)
    config = dict(
        data=str(root), out=str(tmp_path / "run"), iconic=str(tmp_path / "iconic.pt"), input_width=64,
        input_height=32, flow_length=2, width=1 / 32, flow_method="opencv",
    )  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "quality.json"
    assert main(["heatmaps", str(tmp_path / "config.yaml"), "--out", str(out), "--set", "mask_fraction=0.3"]) == 0
    printed = capsys.readouterr().out
    assert "precision" in printed and "mean F1" in printed
    record = json.loads(out.read_text())
    assert record["command"].startswith("wsvs-train heatmaps") and record["split"] == "val"
    assert record["frames"] == 3 and record["fraction"] == 0.3  # the one val clip, every frame annotated
    assert set(record["per_class"]) == set(DRIVE.names)
    tags = set(json.loads(next((root / "tags/val").glob("*.json")).read_text())["tags"])
    for name, q in record["per_class"].items():
        assert q["frames"] == (3 if name in tags else 0)
