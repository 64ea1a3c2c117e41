"""Heatmaps for real frames: EfficientNet-Lite0's ImageNet FCN, one-vs-all heads trained from iconic folders named
in YAML, real annotated stills (CamVid, Cityscapes snippets) scored in another label set."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from weak_fixtures import noisy_colour, write_iconic

from wsvs_ros.labels import CAMVID, CITYSCAPES, DRIVE, VOID_ID
from wsvs_ros.model.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, load_efficientnet_lite0
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.stills import OTHER_ID, relabel_lut, stills
from wsvs_training.heatmap_quality import mask_quality
from wsvs_training.heatmaps import (
    ImageNetToLite,
    OneVsAllHead,
    _normalise,
    heatmap_source,
    load_iconic_fcn,
    load_iconic_folders,
    save_lite_iconic_classifier,
    train_lite_iconic_classifier,
)

FOLDERS_YAML = """
classes:
  sky: [blue_photos, pale_blue_photos]
  road: [grey_photos]
"""


@pytest.fixture(scope="module")
def lite0():
    return load_efficientnet_lite0()


def test_imagenet_normalised_input_becomes_the_lite_models_minus_one_to_one() -> None:
    rgb = torch.rand(2, 3, 4, 5, dtype=torch.float64) * 255
    lite = ImageNetToLite().double()(_normalise(rgb))
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(lite, (rgb / 255 - mean) / std)
    torch.testing.assert_close(lite, (rgb - 127) / 128)


def test_one_vs_all_head_maps_features_cell_by_cell() -> None:
    head = OneVsAllHead(6, 3, hidden=4).eval()
    x = torch.randn(2, 6, 3, 5)
    out = head(x)
    assert out.shape == (2, 3, 3, 5)
    torch.testing.assert_close(out[:, :, 1, 2], head(x[:, :, 1:2, 2:3])[:, :, 0, 0])


def _write_folders(root: Path) -> Path:
    rng = np.random.default_rng(0)
    write_iconic(
        root / "iconic",
        {
            "blue_photos": [noisy_colour(rng, (60, 110, 220), 12) for _ in range(4)],
            "pale_blue_photos": [noisy_colour(rng, (150, 190, 240), 12) for _ in range(4)],
            "grey_photos": [noisy_colour(rng, (95, 95, 95), 12) for _ in range(6)],
            "unlisted": [noisy_colour(rng, (0, 200, 0), 12) for _ in range(2)],  # not in the YAML: never read
        },
    )
    (root / "folders.yaml").write_text(FOLDERS_YAML)
    return root / "folders.yaml"


def _sky_over_road(rng: np.random.Generator) -> np.ndarray:
    """A 128 x 128 frame: sky-blue top half, grey bottom half."""
    sky = np.concatenate([noisy_colour(rng, (60, 110, 220), 12)] * 2, axis=1)
    road = np.concatenate([noisy_colour(rng, (95, 95, 95), 12)] * 2, axis=1)
    return cv2.resize(np.concatenate([sky, road]), (128, 128))


@pytest.mark.slow
def test_heads_train_from_the_folders_the_yaml_maps_to_each_class(tmp_path: Path, lite0) -> None:
    folders = load_iconic_folders(_write_folders(tmp_path))
    assert folders == {"sky": ("blue_photos", "pale_blue_photos"), "road": ("grey_photos",)}
    head, info = train_lite_iconic_classifier(
        tmp_path / "iconic", folders, size=64, window=1, epochs=20, backbone=lite0, log=False
    )
    assert info["images"] == {"sky": 8, "road": 6} and info["frames"] == 0
    assert info["train_accuracy"] > 0.95
    save_lite_iconic_classifier(tmp_path / "heads.pt", head, folders, size=64, window=1, info=info)
    fcn, names = load_iconic_fcn(tmp_path / "heads.pt")
    assert names == ("sky", "road")
    frame = _sky_over_road(np.random.default_rng(1))
    with torch.no_grad():
        probs = fcn(_normalise(torch.from_numpy(frame).permute(2, 0, 1)[None].float()))[0]  # (2, 4, 4)
    assert probs.shape == (2, 4, 4)
    torch.testing.assert_close(probs.sum(dim=0), torch.ones(4, 4))  # a softmax over the heads
    assert (probs[0, 0] > 0.5).all() and (probs[1, -1] > 0.5).all()  # sky on top, road below


@pytest.mark.slow
def test_unlabelled_frames_add_their_confident_cells_to_the_training(tmp_path: Path, lite0) -> None:
    folders = load_iconic_folders(_write_folders(tmp_path))
    rng = np.random.default_rng(2)
    frames = []
    for i in range(2):
        frames.append(tmp_path / f"frame{i}.png")
        cv2.imwrite(str(frames[-1]), cv2.cvtColor(_sky_over_road(rng), cv2.COLOR_RGB2BGR))
    _, info = train_lite_iconic_classifier(
        tmp_path / "iconic", folders, size=64, window=1, epochs=20, backbone=lite0, log=False, frames=frames,
        frame_size=(128, 128), confidence=0.6,
    )  # fmt: skip
    assert info["frames"] == 2
    assert 0 < sum(info["frame_cells"].values()) <= 2 * 16  # 4 x 4 cells a frame, only the confident ones


@pytest.mark.slow
def test_wsvs_train_classifiers_with_the_lite_backbone_writes_the_yaml_classes(tmp_path: Path) -> None:
    from wsvs_training.cli import main

    yaml_path = _write_folders(tmp_path)
    out = tmp_path / "heads.pt"
    args = ["classifiers", "--backbone", "efficientnet-lite0", "--folders", str(yaml_path), "--iconic",
            str(tmp_path / "iconic"), "--out", str(out), "--epochs", "2", "--size", "64", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["class_names"] == ["sky", "road"] and payload["folders"]["sky"] == [
        "blue_photos",
        "pale_blue_photos",
    ]
    assert payload["info"]["command"].startswith("wsvs-train classifiers --backbone efficientnet-lite0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classes: {sky: [a], road: [a]}", "folder 'a' is listed for both 'sky' and 'road'"),
        ("classes: {sky: []}", "classes.sky must be a non-empty list"),
        ("sky: [a]", "expected `classes:`"),
    ],
)
def test_a_bad_folder_mapping_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "f.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_iconic_folders(tmp_path / "f.yaml")


def test_a_listed_folder_that_is_missing_is_named(tmp_path: Path, lite0) -> None:
    with pytest.raises(FileNotFoundError, match="no iconic images for class 'sky' in .*nowhere"):
        train_lite_iconic_classifier(tmp_path, {"sky": ["nowhere"]}, backbone=lite0, log=False)


def test_camvid_ids_map_onto_the_drive_set_by_name() -> None:
    lut = relabel_lut(CAMVID, DRIVE)
    for camvid, drive in [("sky", "sky"), ("pavement", "sidewalk"), ("tree", "vegetation"), ("pedestrian", "person"),
                          ("car", "car"), ("pole", "pole")]:  # fmt: skip
        assert lut[CAMVID.by_name(camvid).id] == DRIVE.by_name(drive).id
    for other in ("sign symbol", "fence", "bicyclist"):
        assert lut[CAMVID.by_name(other).id] == OTHER_ID
    assert lut[11] == VOID_ID and lut[VOID_ID] == VOID_ID  # CamVid's void is 11; load_label_map makes it 255
    assert relabel_lut(CITYSCAPES, DRIVE)[CITYSCAPES.by_name("terrain").id] == OTHER_ID


def _write_camvid(root: Path) -> None:
    """Two 64x32 CamVid stills: sky over road, and sky over fence (a class the drive set lacks), void in a corner."""
    (root / "test").mkdir(parents=True)
    (root / "testannot").mkdir()
    for name, lower in (("0001TP_000010", 3), ("0001TP_000040", 7)):
        labels = np.full((32, 64), 0, np.uint8)
        labels[16:] = lower
        labels[:8, :8] = 11
        cv2.imwrite(str(root / "test" / f"{name}.jpg"), np.zeros((32, 64, 3), np.uint8))
        cv2.imwrite(str(root / "testannot" / f"{name}.png"), labels)


def test_camvid_stills_are_tagged_in_the_scoring_label_set(tmp_path: Path) -> None:
    _write_camvid(tmp_path)
    clips, truth = stills("camvid", tmp_path, "test", DRIVE)
    assert [c.tags for c in clips] == [frozenset({"sky", "road"}), frozenset({"sky"})]
    labels = truth(clips[1], 0)
    assert labels[0, 0] == VOID_ID and labels[0, 20] == DRIVE.by_name("sky").id and labels[20, 0] == OTHER_ID


def test_pixels_of_classes_the_label_set_lacks_count_against_precision(tmp_path: Path) -> None:
    # Both frames: the sky mask covers the whole frame. Frame 1's lower half is road (not tagged sky there),
    # frame 2's is fence (OTHER_ID): wrong sky pixels, not void.
    _write_camvid(tmp_path)
    clips, truth = stills("camvid", tmp_path, "test", DRIVE)
    sky = DRIVE.by_name("sky").id

    def source(image: torch.Tensor) -> torch.Tensor:
        heat = torch.full((1, len(DRIVE), 4, 8), -1.0)
        heat[0, sky] = 1.0
        return heat

    spec = ModelSpec(DRIVE.name, DRIVE.names, input_width=64, input_height=32)
    quality = mask_quality(source, clips, spec, progress=False, truth=truth)["per_class"]["sky"]
    # per frame: 32 grid cells, 1 void (the 8 x 8 corner), 15 sky, 16 road or fence
    assert (quality["mask_pixels"], quality["class_pixels"], quality["hits"]) == (62, 30, 30)
    assert quality["precision"] == pytest.approx(30 / 62) and quality["recall"] == 1.0


def test_cityscapes_stills_have_no_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use --split all"):
        stills("cityscapes", tmp_path, "train", DRIVE)


def test_lite_imagenet_heatmaps_need_no_vgg16_file(tmp_path: Path) -> None:
    head = OneVsAllHead(1280, 2).eval()
    save_lite_iconic_classifier(tmp_path / "h.pt", head, {"road": ["a"], "sky": ["b"]}, size=64, window=3, info={})
    with pytest.raises(ValueError, match="class 'sidewalk' has no heatmap source"):
        heatmap_source(DRIVE, iconic_path=tmp_path / "h.pt", imagenet="efficientnet-lite0")
    with pytest.raises(ValueError, match="imagenet='resnet'"):
        heatmap_source(DRIVE, iconic_path=tmp_path / "h.pt", imagenet="resnet")


def test_the_classifiers_command_defaults_are_the_trainers() -> None:
    import wsvs_training.cli as cli
    import wsvs_training.heatmaps as heatmaps

    defaults = (cli.LITE_ICONIC_SIZE, cli.LITE_ICONIC_WINDOW, cli.LITE_ICONIC_HIDDEN)
    assert defaults == (heatmaps.LITE_ICONIC_SIZE, heatmaps.LITE_ICONIC_WINDOW, heatmaps.LITE_ICONIC_HIDDEN)
