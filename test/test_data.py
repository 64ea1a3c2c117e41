"""Dataset layouts, tags, label maps and train/deploy flow parity."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_spec
from weak_fixtures import write_during_first_save, write_mp4, write_tiny_drives

from wsvs_ros.engine import TorchEngine
from wsvs_ros.flow import make_flow
from wsvs_ros.labels import CAMVID, CITYSCAPES, DRIVE, VOID_ID
from wsvs_ros.model.checkpoint import build_model, save_checkpoint
from wsvs_ros.pipeline import Segmenter
from wsvs_ros.spec import ModelSpec
from wsvs_training import flow_snippets
from wsvs_training.datasets.camvid import camvid_clips
from wsvs_training.datasets.cityscapes import cityscapes_clips
from wsvs_training.datasets.clips import load_label_map, read_rgb, write_tags_from_annotations
from wsvs_training.datasets.layouts import dataset_clips
from wsvs_training.datasets.synth_drives import synth_clips
from wsvs_training.datasets.video import video_clips
from wsvs_training.flow_snippets import FlowCache, pair_flows, window_flows
from wsvs_training.weak_dataset import WeakDataset


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def _moving_frames(n: int, *, size: tuple[int, int] = (64, 32), seed: int = 0) -> list[np.ndarray]:
    """n RGB frames of a smooth random texture sliding right by 1.5 px per frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h, w + 4 * n, 3)).astype(np.float32), (0, 0), 2)
    frames = []
    for i in range(n):
        m = np.float32([[1, 0, -1.5 * i], [0, 1, 0]])
        frames.append(cv2.warpAffine(base, m, (w + 4 * n, h))[:, :w].clip(0, 255).astype(np.uint8))
    return frames


def _camvid_spec(window: str) -> ModelSpec:
    return ModelSpec("camvid", CAMVID.names, input_width=64, input_height=32, flow_length=4, window=window)


def _write_cityscapes(root: Path, *, frames: int = 30) -> None:
    rng = np.random.default_rng(0)
    for i in range(frames):
        _png(
            root / "leftImg8bit_sequence/val/aachen" / f"aachen_000001_{i:06d}_leftImg8bit.png",
            rng.integers(0, 255, (8, 16, 3), dtype=np.uint8),
        )
    label_ids = np.zeros((8, 16), np.uint8)  # 0 = unlabeled -> void
    label_ids[4:] = 7  # road
    label_ids[:2, :4] = 26  # car
    _png(root / "gtFine/val/aachen/aachen_000001_000019_gtFine_labelIds.png", label_ids)


def _write_camvid(root: Path) -> None:
    """One annotated still (road, void top row) of video 0001TP with the video frames 6684..6696 around it."""
    rng = np.random.default_rng(0)
    annot = np.full((8, 16), 3, np.uint8)  # road
    annot[0] = 11  # void
    _png(root / "train/0001TP_006690.png", rng.integers(0, 255, (8, 16, 3), dtype=np.uint8))
    _png(root / "trainannot/0001TP_006690.png", annot)
    for n in range(6684, 6697):
        _png(root / f"frames/0001TP/0001TP_{n:06d}.png", rng.integers(0, 255, (8, 16, 3), dtype=np.uint8))


def test_cityscapes_snippet_targets_its_annotated_20th_frame(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    (tmp_path / "tags/val").mkdir(parents=True)
    (tmp_path / "tags/val/aachen_000001.json").write_text(json.dumps({"tags": ["road", "car"]}))
    [clip] = cityscapes_clips(tmp_path, "val")
    assert clip.name == "aachen_000001"
    assert len(clip.frames) == 30
    assert clip.targets == (19,)
    assert clip.frames[19].name == "aachen_000001_000019_leftImg8bit.png"
    assert clip.tags == {"road", "car"}
    labels = load_label_map(clip, 19)
    assert labels[5, 0] == CITYSCAPES.by_name("road").id
    assert labels[0, 0] == CITYSCAPES.by_name("car").id
    assert labels[3, 8] == VOID_ID


def test_missing_tags_name_the_command_that_derives_them(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    command = f"wsvs-train tags --dataset cityscapes|camvid --data {tmp_path} --split val"
    with pytest.raises(FileNotFoundError, match=re.escape(command)):
        cityscapes_clips(tmp_path, "val")


def test_tags_are_derived_once_from_annotations(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    [untagged] = cityscapes_clips(tmp_path, "val", require_tags=False)
    assert untagged.tags == frozenset()
    write_tags_from_annotations(tmp_path, "val", [untagged], CITYSCAPES)
    assert json.loads((tmp_path / "tags/val/aachen_000001.json").read_text())["tags"] == ["road", "car"]
    assert cityscapes_clips(tmp_path, "val")[0].tags == {"road", "car"}


def test_camvid_tags_are_derived_once_from_annotations(tmp_path: Path) -> None:
    _write_camvid(tmp_path)
    spec = _camvid_spec("causal")
    write_tags_from_annotations(
        tmp_path, "train", camvid_clips(tmp_path, "train", spec=spec, require_tags=False), CAMVID
    )
    [clip] = camvid_clips(tmp_path, "train", spec=spec)
    assert clip.tags == {"road"}  # the void row is no class


def test_tags_are_not_derived_for_clips_without_annotations(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    (tmp_path / "gtFine/val/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    clips = cityscapes_clips(tmp_path, "val", require_tags=False)
    with pytest.raises(ValueError, match="no annotation to derive tags from"):
        write_tags_from_annotations(tmp_path, "val", clips, CITYSCAPES)
    assert not (tmp_path / "tags").exists()


def test_present_tag_files_are_still_checked_when_tags_are_optional(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    (tmp_path / "tags/val").mkdir(parents=True)
    (tmp_path / "tags/val/aachen_000001.json").write_text(json.dumps({"tags": ["lava"]}))
    with pytest.raises(ValueError, match="no class 'lava'"):
        cityscapes_clips(tmp_path, "val", require_tags=False)


def test_wsvs_train_tags_writes_the_tags_the_loader_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsvs_training.cli import main

    _write_cityscapes(tmp_path)
    assert main(["tags", "--dataset", "cityscapes", "--data", str(tmp_path), "--split", "val"]) == 0
    assert f"wrote 1 tag files to {tmp_path / 'tags/val'}" in capsys.readouterr().out
    [clip] = cityscapes_clips(tmp_path, "val")
    assert clip.tags == {"road", "car"}


def test_unknown_tag_is_refused_with_the_class_list(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    (tmp_path / "tags/val").mkdir(parents=True)
    (tmp_path / "tags/val/aachen_000001.json").write_text(json.dumps({"tags": ["lava"]}))
    with pytest.raises(ValueError, match="no class 'lava'"):
        cityscapes_clips(tmp_path, "val")


def test_camvid_still_gets_the_frames_of_its_flow_window(tmp_path: Path) -> None:
    _write_camvid(tmp_path)
    (tmp_path / "tags/train").mkdir(parents=True)
    (tmp_path / "tags/train/0001TP_006690.json").write_text(json.dumps({"tags": ["road", "pavement"]}))

    [causal] = camvid_clips(tmp_path, "train", spec=_camvid_spec("causal"))
    assert [p.stem for p in causal.frames] == [f"0001TP_{n:06d}" for n in range(6686, 6691)]  # L = 4 before
    assert causal.targets == (4,)
    assert causal.tags == {"road", "sidewalk"}  # "pavement" is CamVid's alias
    labels = load_label_map(causal, 4)
    assert labels[1, 0] == CAMVID.by_name("road").id and labels[0, 0] == VOID_ID

    centered = _camvid_spec("centered")
    [clip] = camvid_clips(tmp_path, "train", spec=centered)
    assert [p.stem for p in clip.frames] == [f"0001TP_{n:06d}" for n in range(6688, 6693)]
    assert clip.targets == (2,)


def test_camvid_without_video_frames_names_the_folder(tmp_path: Path) -> None:
    _png(tmp_path / "train/Seq05VD_f00000.png", np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="frames/Seq05VD"):
        camvid_clips(tmp_path, "train", spec=_camvid_spec("causal"))


def test_synthetic_drives_are_read_with_every_frame_annotated(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path, clips=2, frames=4)
    [train] = synth_clips(tmp_path, "train")
    [val] = synth_clips(tmp_path, "val")
    assert train.name == "synth_000000" and val.name == "synth_000001"
    assert train.targets == (0, 1, 2, 3) and sorted(train.annotations) == [0, 1, 2, 3]
    assert train.tags <= set(DRIVE.names) and "road" in train.tags
    assert load_label_map(val, 2).shape == (32, 64)


class _RecordingEngine:
    """Stands in for a runtime: records the flow stack the deployed Segmenter feeds the network."""

    def __init__(self, classes: int) -> None:
        self.device = torch.device("cpu")
        self.flows: list[torch.Tensor] = []
        self.classes = classes

    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        self.flows.append(flow.clone())
        return torch.zeros(1, self.classes, *rgb.shape[-2:])


@pytest.mark.parametrize("window", ["causal", "centered"])
def test_training_flow_windows_equal_the_deployed_segmenters(window: str) -> None:
    spec = tiny_spec(window=window, flow_length=4)
    frames = _moving_frames(9)
    engine = _RecordingEngine(spec.num_classes)
    segmenter = Segmenter(engine, spec, flow=make_flow(spec))
    for i, frame in enumerate(frames):
        segmenter.push(frame, float(i) / 15)
    segmenter.flush()
    flows = pair_flows(frames, spec)
    for t in range(len(frames)):
        stacked, _ = window_flows(flows, t, spec)
        torch.testing.assert_close(stacked, engine.flows[t][0], rtol=0, atol=0)
    assert float(engine.flows[6].abs().mean()) > 0.05  # real motion, not all zeros


def test_flow_cache_is_keyed_by_method_params_and_size(tmp_path: Path) -> None:
    dirs = {
        FlowCache(tmp_path, tiny_spec()).dir,
        FlowCache(tmp_path, tiny_spec(flow_method="torch")).dir,
        FlowCache(tmp_path, tiny_spec(flow_method="torch", flow_params={"warps": 2})).dir,
        FlowCache(tmp_path, tiny_spec(input_width=96)).dir,
    }
    assert len(dirs) == 4
    assert FlowCache(tmp_path, tiny_spec()).dir == FlowCache(tmp_path, tiny_spec(width=0.5)).dir


def test_cached_flows_are_read_back_not_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=5)
    [clip] = synth_clips(tmp_path / "d", "train")
    cache = FlowCache(tmp_path / "cache", tiny_spec())
    first, flows = cache.get(clip)
    assert (first, flows.shape) == (0, (5, 2, 32, 64))

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed a cached flow")

    monkeypatch.setattr(flow_snippets, "pair_flows", fail)
    torch.testing.assert_close(cache.get(clip)[1], flows)


def test_two_runs_sharing_the_cache_can_write_the_same_clip_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=3)
    [clip] = synth_clips(tmp_path / "d", "train")
    mine, theirs = FlowCache(tmp_path / "cache", tiny_spec()), FlowCache(tmp_path / "cache", tiny_spec())
    interleaved = write_during_first_save(monkeypatch, lambda: theirs.get(clip)[1])
    flows = mine.get(clip)[1]
    torch.testing.assert_close(interleaved[0], flows)
    torch.testing.assert_close(FlowCache(tmp_path / "cache", tiny_spec()).get(clip)[1], flows)
    assert [p.name for p in mine.dir.iterdir()] == [mine.path(clip).name]  # no temporary file left behind


def test_a_regenerated_dataset_is_not_served_the_old_flows(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=3, seed=0)
    [clip] = synth_clips(tmp_path / "d", "train")
    old = FlowCache(tmp_path / "cache", tiny_spec()).get(clip)[1]
    shutil.rmtree(tmp_path / "d")
    write_tiny_drives(tmp_path / "d", clips=2, frames=3, seed=1)  # same file names, other pixels
    [clip] = synth_clips(tmp_path / "d", "train")
    new = FlowCache(tmp_path / "cache", tiny_spec()).get(clip)[1]
    assert not torch.equal(old, new)


def test_training_samples_never_read_annotations(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=6)
    for gt in (tmp_path / "d/gtFine").rglob("*.png"):
        gt.unlink()
    spec = tiny_spec(flow_length=4)
    clips = synth_clips(tmp_path / "d", "train")
    ds = WeakDataset(clips, spec=spec, flow_cache=FlowCache(tmp_path / "c", spec), label_set=DRIVE)
    assert [t for _, t in ds.items] == [4, 5]  # only frames with all L = 4 flows
    sample = ds[0]
    assert sample.image.shape == (3, 32, 64) and sample.flows.shape == (8, 32, 64)
    assert sample.tags.dtype == torch.bool and bool(sample.tags[DRIVE.by_name("road").id])


def test_clips_too_short_for_the_window_are_refused(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=3)
    spec = tiny_spec(flow_length=4)
    with pytest.raises(ValueError, match="smaller flow_length"):
        WeakDataset(
            synth_clips(tmp_path / "d", "train"), spec=spec, flow_cache=FlowCache(tmp_path, spec), label_set=DRIVE
        )


def test_a_model_runs_on_a_training_sample(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=6)
    spec = tiny_spec(flow_length=4)
    ds = WeakDataset(
        synth_clips(tmp_path / "d", "train"), spec=spec, flow_cache=FlowCache(tmp_path, spec), label_set=DRIVE
    )
    engine = TorchEngine(build_model(spec))
    logits = engine.infer(ds[0].image[None], ds[0].flows[None])
    assert logits.shape == (1, len(DRIVE), 32, 64)


def test_wsvs_train_synth_wraps_the_generator(tmp_path: Path) -> None:
    from wsvs_training.cli import main

    args = ["synth", "--out", str(tmp_path), "--clips", "2", "--val-clips", "1", "--seed", "0", "--frames", "2"]
    assert main([*args, "--size", "32x16", "--iconic", "0"]) == 0
    assert [c.name for c in synth_clips(tmp_path, "val")] == ["synth_000001"]


def _tags(path: Path, tags: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tags": tags}))


def test_video_file_frames_decode_in_order_as_written(tmp_path: Path) -> None:
    written = _moving_frames(8, size=(64, 48))
    for i, rgb in enumerate(written):  # a brightness step per frame, so a swapped or repeated frame shows
        written[i] = np.clip(rgb.astype(int) // 2 + 12 * i, 0, 255).astype(np.uint8)
    write_mp4(tmp_path / "train/my_drive.mp4", written)
    _tags(tmp_path / "train/my_drive.tags.json", ["road", "Tree"])
    [clip] = video_clips(tmp_path, "train", label_set=CAMVID, frames_cache=tmp_path / "frames")
    assert clip.name == "my_drive" and clip.tags == {"road", "vegetation"}
    assert len(clip.frames) == 8 and clip.targets == tuple(range(8)) and not clip.annotations
    decoded = [read_rgb(p) for p in clip.frames]
    for i, rgb in enumerate(decoded):
        errors = [float(np.abs(rgb.astype(float) - w).mean()) for w in written]
        assert errors[i] < 6, errors  # mp4v at its default quality
        assert int(np.argmin(errors)) == i
    direct = cv2.VideoCapture(str(tmp_path / "train/my_drive.mp4"))
    np.testing.assert_array_equal(decoded[0], cv2.cvtColor(direct.read()[1], cv2.COLOR_BGR2RGB))  # RGB, lossless


def test_video_frames_are_extracted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mp4(tmp_path / "train/a.mp4", _moving_frames(3))
    _tags(tmp_path / "train/a.tags.json", ["road"])
    [first] = video_clips(tmp_path, "train", label_set=DRIVE, frames_cache=tmp_path / "frames")
    monkeypatch.setattr(cv2, "VideoCapture", None)  # a second decode would fail
    [again] = video_clips(tmp_path, "train", label_set=DRIVE, frames_cache=tmp_path / "frames")
    assert again.frames == first.frames
    assert [p.name for p in (tmp_path / "frames").iterdir()] == [first.frames[0].parent.name]  # no partial folder


def test_frame_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    written = _moving_frames(11)
    for i, rgb in enumerate(written):
        _png(tmp_path / f"train/drive/frame_{i}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "train/notes.txt").write_text("stills and notes are not clips")
    _tags(tmp_path / "train/drive.tags.json", ["road", "car"])
    [clip] = video_clips(tmp_path, "train", label_set=DRIVE, frames_cache=None)
    assert [p.name for p in clip.frames][9:] == ["frame_9.png", "frame_10.png"]
    for path, rgb in zip(clip.frames, written, strict=True):
        np.testing.assert_array_equal(read_rgb(path), rgb)


def test_tags_folder_keeps_tags_apart_from_read_only_footage(tmp_path: Path) -> None:
    write_mp4(tmp_path / "footage/video/drive.mp4", _moving_frames(2))
    _tags(tmp_path / "my_tags/drive.tags.json", ["sky"])
    [clip] = dataset_clips(
        "video", tmp_path / "footage", "video", spec=tiny_spec(), label_set=DRIVE, cache=tmp_path / "c",
        tags_dir=tmp_path / "my_tags",
    )  # fmt: skip
    assert clip.tags == {"sky"} and clip.frames[0].is_relative_to(tmp_path / "c/frames")


def test_missing_tags_file_names_where_to_write_it(tmp_path: Path) -> None:
    write_mp4(tmp_path / "train/drive.mp4", _moving_frames(2))
    with pytest.raises(FileNotFoundError, match=re.escape(f"no tags file {tmp_path / 'train/drive.tags.json'}")):
        video_clips(tmp_path, "train", label_set=DRIVE, frames_cache=tmp_path / "c")


@pytest.mark.parametrize(
    ("content", "problem"),
    [("road, car", "is not JSON"), ('["road"]', "must hold"), ('{"tag": ["road"]}', "must hold"),
     ('{"tags": "road"}', "must hold")],
)  # fmt: skip
def test_malformed_tags_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    from wsvs_training.cli import main

    write_mp4(tmp_path / "train/drive.mp4", _moving_frames(2))
    (tmp_path / "train/drive.tags.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"tag file {tmp_path / 'train/drive.tags.json'} {problem}")):
        video_clips(tmp_path, "train", label_set=DRIVE, frames_cache=tmp_path / "c")
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, build_model(tiny_spec()), tiny_spec())
    args = ["evaluate", str(checkpoint), "--dataset", "video", "--data", str(tmp_path), "--split", "train"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"tag file {tmp_path / 'train/drive.tags.json'} {problem}" in err


def test_unknown_class_in_a_tags_file_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsvs_training.cli import main

    _png(tmp_path / "val/drive/0.png", np.zeros((8, 8, 3), np.uint8))
    _tags(tmp_path / "val/drive.tags.json", ["lava"])
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, build_model(tiny_spec()), tiny_spec())
    assert (
        main(["evaluate", str(checkpoint), "--dataset", "video", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drive.tags.json: label set 'cityscapes' has no class 'lava'" in err


def test_label_maps_beside_the_frames_give_the_clips_tags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cityscapes_aachen layout: seqNNNN/frames/*.jpg with network-made labelIds in seqNNNN/labels_net/."""
    from wsvs_training.cli import main

    label_ids = np.full((20, 50), 7, np.uint8)  # road
    label_ids[:2] = 23  # sky: 100 of 1000 pixels
    label_ids[19, 0] = 26  # one stray car pixel, as network-made maps scatter them
    for i in range(3):
        _png(tmp_path / f"data/seq/seq0000/frames/aachen_000000_{i:06d}_leftImg8bit.jpg", np.zeros((20, 50, 3)))
        _png(tmp_path / f"data/seq/seq0000/labels_net/aachen_000000_{i:06d}_labelIds_net.png", label_ids)
    [clip] = video_clips(tmp_path / "data", "seq", label_set=CITYSCAPES, frames_cache=None, require_tags=False)
    assert len(clip.annotations) == 3 and clip.annotations[2].name == "aachen_000000_000002_labelIds_net.png"
    assert load_label_map(clip, 0)[0, 0] == CITYSCAPES.by_name("sky").id
    args = ["tags", "--dataset", "video", "--data", str(tmp_path / "data"), "--split", "seq", "--tags"]
    assert main([*args, str(tmp_path / "all")]) == 0
    assert main([*args, str(tmp_path / "some"), "--min-fraction", "0.01"]) == 0
    assert f"wrote 1 tag files to {tmp_path / 'some'}" in capsys.readouterr().out
    assert json.loads((tmp_path / "all/seq0000.tags.json").read_text())["tags"] == ["road", "sky", "car"]
    assert json.loads((tmp_path / "some/seq0000.tags.json").read_text())["tags"] == ["road", "sky"]
    [tagged] = video_clips(
        tmp_path / "data", "seq", label_set=CITYSCAPES, frames_cache=None, tags_dir=tmp_path / "some"
    )
    assert tagged.tags == {"road", "sky"}


def test_tags_named_in_another_label_set_are_translated_by_class_name() -> None:
    from wsvs_ros.labels import DRIVE
    from wsvs_training.datasets.stills import translate_tags

    camvid = frozenset({"road", "sidewalk", "vegetation", "pedestrian", "sign symbol", "bicyclist"})
    assert translate_tags(camvid, CAMVID, DRIVE) == {"road", "sidewalk", "vegetation", "person"}
    cityscapes = frozenset({"road", "terrain", "truck", "car", "person"})
    assert translate_tags(cityscapes, CITYSCAPES, DRIVE) == {"road", "car", "person"}  # no drive class is terrain


def test_stills_without_tags_files_name_the_command_that_derives_them(tmp_path: Path) -> None:
    from wsvs_training.datasets.stills import still_clips

    _write_camvid(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"wsvs-train tags --dataset stills --data .* --split train --tags"):
        still_clips(tmp_path, "train", label_set=CAMVID)
