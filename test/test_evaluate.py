"""Evaluation metrics against hand-computed confusion matrices, and the evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_spec
from weak_fixtures import write_stills_layout, write_tiny_drives

from wsvs_ros.labels import CAMVID, DRIVE, VOID_ID
from wsvs_ros.model.checkpoint import build_model, save_checkpoint
from wsvs_training.cli import main as cli_main
from wsvs_training.datasets.synth_drives import synth_clips
from wsvs_training.evaluate import (
    confusion_matrix,
    evaluate_checkpoint,
    metrics_from_confusion,
    perfect_coarse_labels,
    truth_mapping,
)

V = VOID_ID


def test_confusion_matrix_counts_truth_rows_prediction_columns_and_skips_void() -> None:
    truth = np.array([[0, 0, 1], [2, V, 1]])
    pred = np.array([[0, 1, 1], [0, 2, 1]])
    expected = np.array(
        [
            [1, 1, 0],  # truth 0: once right, once called 1
            [0, 2, 0],  # truth 1: twice right
            [1, 0, 0],  # truth 2: called 0
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(pred, truth, 3), expected)


def test_confusion_matrix_refuses_mismatched_shapes_and_ids() -> None:
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion_matrix(np.array([[3]]), np.array([[0]]), 3)


def test_metrics_from_a_hand_computed_confusion_matrix() -> None:
    cm = np.array(
        [
            [6, 2, 0, 0],  # class a: 8 pixels
            [1, 3, 0, 0],  # class b: 4 pixels
            [0, 0, 0, 0],  # class c: absent from truth and prediction -> no IoU, left out of the means
            [0, 2, 0, 0],  # class d: 2 pixels, never predicted
        ]
    )
    m = metrics_from_confusion(cm, ["a", "b", "c", "d"])
    # IoU a = 6 / (8 + 7 - 6) = 6/9; b = 3 / (4 + 7 - 3) = 3/8; d = 0 / 2 = 0
    assert m["per_class_iou"] == pytest.approx({"a": 6 / 9, "b": 3 / 8, "c": None, "d": 0.0})
    assert m["miou"] == pytest.approx((6 / 9 + 3 / 8 + 0) / 3)
    assert m["per_class_acc"] == pytest.approx({"a": 6 / 8, "b": 3 / 4, "c": None, "d": 0.0})
    assert m["mean_class_acc"] == pytest.approx((6 / 8 + 3 / 4 + 0) / 3)
    assert m["global_acc"] == pytest.approx(9 / 14)
    assert m["pixels"] == 14


def test_class_predicted_but_absent_from_truth_counts_as_zero_iou_without_accuracy() -> None:
    cm = np.array([[3, 1], [0, 0]])
    m = metrics_from_confusion(cm, ["a", "b"])
    assert m["per_class_iou"] == pytest.approx({"a": 3 / 4, "b": 0.0})
    assert m["per_class_acc"] == pytest.approx({"a": 3 / 4, "b": None})
    assert m["miou"] == pytest.approx(3 / 8)
    assert m["mean_class_acc"] == pytest.approx(3 / 4)


def test_camvid_annotations_map_onto_the_drive_set_by_name_the_rest_unscored() -> None:
    lut = truth_mapping(CAMVID, DRIVE)
    assert lut is not None and truth_mapping(DRIVE, DRIVE) is None
    mapped = {CAMVID.by_id(i).name: int(lut[i]) for i in range(len(CAMVID))}
    unscored = len(DRIVE)
    assert mapped == {
        "sky": DRIVE.by_name("sky").id, "building": DRIVE.by_name("building").id, "pole": DRIVE.by_name("pole").id,
        "road": DRIVE.by_name("road").id, "sidewalk": DRIVE.by_name("sidewalk").id,
        "vegetation": DRIVE.by_name("vegetation").id, "car": DRIVE.by_name("car").id,
        "pedestrian": DRIVE.by_name("person").id,
        "sign symbol": unscored, "fence": unscored, "bicyclist": unscored,
    }  # fmt: skip
    assert lut[VOID_ID] == VOID_ID and lut[11] == VOID_ID  # CamVid's void decodes to VOID_ID before the mapping


def test_unscored_pixels_count_against_what_was_predicted_there_but_have_no_iou() -> None:
    cm = np.array(
        [
            [4, 0],  # class a: 4 pixels, all right
            [0, 2],  # class b: 2 pixels, all right
        ]
    )
    unscored = np.array([[4, 0, 0], [0, 2, 0], [3, 1, 0]])  # + 4 pixels of a class the model lacks: 3 called a
    m = metrics_from_confusion(unscored, ["a", "b"])
    assert m["per_class_iou"] == pytest.approx({"a": 4 / 7, "b": 2 / 3})
    assert m["per_class_acc"] == metrics_from_confusion(cm, ["a", "b"])["per_class_acc"]
    assert m["global_acc"] == pytest.approx(6 / 10) and m["pixels"] == 10


@pytest.fixture(scope="module")
def drives_and_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = write_tiny_drives(tmp_path_factory.mktemp("drives"), clips=2, frames=6)
    torch.manual_seed(0)
    spec = tiny_spec(flow_length=2)
    path = root / "model.pt"
    save_checkpoint(path, build_model(spec), spec, info={"command": "test"})
    return root, path


@pytest.mark.parametrize("crf", [False, True])
def test_evaluation_writes_metrics_confusion_and_overlays(
    drives_and_checkpoint: tuple[Path, Path], tmp_path: Path, crf: bool
) -> None:
    root, ckpt = drives_and_checkpoint
    clips = synth_clips(root, "val")
    metrics = evaluate_checkpoint(ckpt, clips, out=tmp_path / "eval", cache_dir=tmp_path / "cache", crf=crf)
    assert metrics["frames"] == 4  # frames 2..5 have both flows of L = 2
    assert metrics["pixels"] > 0 and 0 <= metrics["miou"] <= 1
    saved = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert saved["miou"] == pytest.approx(metrics["miou"])
    assert saved["crf"] is crf  # says how the figures were made
    assert np.array(saved["confusion"]).sum() == metrics["pixels"]
    assert (tmp_path / "eval/confusion.png").stat().st_size > 1000
    assert len(list((tmp_path / "eval").glob("overlay_*.png"))) == 1  # one per clip


def test_evaluate_command_prints_the_summary(
    drives_and_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ckpt = drives_and_checkpoint
    assert cli_main(["evaluate", str(ckpt), "--data", str(root), "--split", "val", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"miou", "mean_class_acc", "global_acc", "frames", "per_class_iou"}


def test_an_ideal_coarse_score_map_keeps_grid_aligned_regions_and_loses_a_thin_stripe() -> None:
    blocks = np.zeros((16, 32), np.uint8)
    blocks[:, 8:16] = 1
    blocks[:, 24:] = 2
    np.testing.assert_array_equal(perfect_coarse_labels(blocks, 3, (2, 4)), blocks)  # boundaries on the 8-px grid

    stripe = np.zeros((32, 64), np.uint8)
    stripe[:, 29:32] = 1
    stripe[0, :] = V  # void is nobody's evidence
    assert not (perfect_coarse_labels(stripe, 2, (1, 2)) == 1).any()  # 3 of every 32 pixels: always outvoted
    fine = perfect_coarse_labels(stripe, 2, (8, 16))  # 4x4 cells: 3/4 of one column of cells is stripe
    assert (fine[1:, 29:31] == 1).all() and (fine[:, :29] == 0).all() and (fine[:, 32:] == 0).all()


def test_stride_bound_command_writes_one_row_per_stride(
    drives_and_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = drives_and_checkpoint
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {root}\nout: {tmp_path / 'run'}\ninput_width: 64\ninput_height: 32\nflow_length: 2\nheatmap_weight: 0\n"
    )
    out = tmp_path / "bound.json"
    assert cli_main(["stride-bound", str(config), "--strides", "32", "8", "1", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert list(saved["strides"]) == ["32", "8", "1"]
    assert saved["strides"]["32"]["cells"] == [1, 2] and saved["strides"]["8"]["cells"] == [4, 8]
    assert saved["strides"]["1"]["miou"] == 1.0  # a score per pixel loses nothing
    assert saved["strides"]["32"]["miou"] < saved["strides"]["1"]["miou"]
    assert "   8x4 " in capsys.readouterr().out  # the table names each stride's grid, width x height


def test_stills_are_evaluated_on_their_first_frame_in_the_models_classes(
    drives_and_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ckpt = drives_and_checkpoint
    stills = write_stills_layout(root, tmp_path / "stills", split="val", every=1)
    annotations = sorted((stills / "valannot").glob("*.png"))
    fence = cv2.imread(str(annotations[0]), cv2.IMREAD_UNCHANGED)
    fence[:4, :10] = 7  # CamVid's Fence, which the drive set lacks
    cv2.imwrite(str(annotations[0]), fence)
    argv = ["evaluate", str(ckpt), "--dataset", "stills", "--data", str(stills), "--split", "val"]
    assert cli_main([*argv, "--out", str(tmp_path / "eval")]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == len(annotations)  # no flow window, still scored
    confusion = np.array(json.loads((tmp_path / "eval/metrics.json").read_text())["confusion"])
    assert confusion.shape == (len(DRIVE) + 1, len(DRIVE) + 1)
    assert confusion[-1].sum() == 40 and confusion[:, -1].sum() == 0  # the fence block: scored against predictions
