"""Offline replay: bags written here with rosbags' writers, replayed with a tiny model, outputs read back."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, tiny_spec
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from wsvs_ros.engine.loading import open_engine
from wsvs_ros.flow import make_flow
from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import build_model, save_checkpoint
from wsvs_ros.pipeline import Segmenter
from wsvs_ros.tools import replay
from wsvs_ros.tools.cli import main
from wsvs_ros.tools.replay import estimate_fps, replay_bag, select_topic

ROS2 = get_typestore(Stores.ROS2_HUMBLE)
ROS1 = get_typestore(Stores.ROS1_NOETIC)
IMAGE, COMPRESSED, STRING = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "std_msgs/msg/String"

TOPIC = "/camera/image_raw"
FRAME_ID = "camera_front"
N, HEIGHT, WIDTH = 12, 48, 96
RATE_HZ = 17.0
T0_NS = 1_700_000_000_000_000_000
RECEIVE_DELAY_NS = 3_000_000  # bag time = stamp + 3 ms, so a test can tell bag times from header stamps
OUT_TOPICS = ("labels", "overlay", "mask/road", "mask/sidewalk", "mask/vegetation")
STATS_KEYS = {
    "frames", "published", "skipped_bad", "flows_computed", "resets", "latency_ms", "stage_ms", "backend", "device",
    "model", "topic", "wall_s",
}  # fmt: skip


def stamp_ns(i: int) -> int:
    return T0_NS + round(i * 1e9 / RATE_HZ)


def moving_frames(n: int = N, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """A smooth random texture sliding 2 px right per frame: real flow for the flow stream, every frame distinct."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width + 2 * n, 3), np.uint8)
    texture = cv2.GaussianBlur(noise, (0, 0), 2)
    return [np.ascontiguousarray(texture[:, 2 * (n - i) : 2 * (n - i) + width]) for i in range(n)]


def header(store: Any, i: int, frame_id: str = FRAME_ID) -> Any:
    ns = stamp_ns(i)
    fields = {"stamp": store.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)}
    if store is ROS1:
        fields["seq"] = i
    return store.types["std_msgs/msg/Header"](**fields, frame_id=frame_id)


def image(rgb: np.ndarray, i: int, store: Any = ROS2) -> Any:
    h, w = rgb.shape[:2]
    return store.types[IMAGE](
        header=header(store, i), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=rgb.reshape(-1)
    )


def compressed(rgb: np.ndarray, i: int, ext: str = ".png") -> Any:
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return ROS2.types[COMPRESSED](header=header(ROS2, i), format=ext[1:], data=data.reshape(-1))


def write_bag(path: Path, topics: dict[str, list[tuple[int, Any]]], storage: str = "sqlite3") -> Path:
    """A rosbag2 with {topic: [(frame index, message or raw CDR bytes)]}; returns what to pass to replay.

    Each message is stored at bag time stamp(i) + RECEIVE_DELAY_NS. An mcap bag is returned as its bare .mcap file,
    the way `wsvs replay drive_log.mcap` is typed.
    """
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for topic, messages in topics.items():
            msgtype = next(m.__msgtype__ for _, m in messages if not isinstance(m, bytes))
            connection = writer.add_connection(topic, msgtype, typestore=ROS2)
            for i, msg in messages:
                raw = msg if isinstance(msg, bytes) else ROS2.serialize_cdr(msg, msgtype)
                writer.write(connection, stamp_ns(i) + RECEIVE_DELAY_NS, raw)
    return path / f"{path.name}.mcap" if storage == "mcap" else path


def camera_bag(path: Path, frames: list[np.ndarray], storage: str = "sqlite3") -> Path:
    return write_bag(path, {TOPIC: [(i, image(rgb, i)) for i, rgb in enumerate(frames)]}, storage)


def read_back(masks: Path) -> dict[str, list[tuple[int, Any]]]:
    """{topic: [(bag time ns, message)]} of a replay's masks bag, in bag order."""
    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([masks]) as reader:
        for connection, bag_ns, raw in reader.messages():
            out.setdefault(connection.topic, []).append((bag_ns, reader.deserialize(raw, connection.msgtype)))
    return out


def stamps_of(messages: list[tuple[int, Any]]) -> list[int]:
    return [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages]


def labels_of(messages: list[tuple[int, Any]]) -> list[np.ndarray]:
    return [m.data.reshape(m.height, m.width) for _, m in messages]


def video_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def file_digests(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run(bag: Path, out: Path, model: Path, **kw: Any) -> dict[str, Any]:
    return replay_bag(bag, out, model=model, progress=False, **kw)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_writes_the_node_topics_with_the_input_stamps_and_bag_times(
    storage: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    bag = camera_bag(tmp_path / "drive", moving_frames(), storage)
    before = file_digests(bag)
    stats = run(bag, tmp_path / "out", tiny_checkpoint, png_every=5)

    topics = read_back(tmp_path / "out" / "masks")
    assert set(topics) == {f"/wsvs_segmenter/{t}" for t in (*OUT_TOPICS, "class_map")}
    expected_stamps = [stamp_ns(i) for i in range(N)]
    for name in OUT_TOPICS:
        messages = topics[f"/wsvs_segmenter/{name}"]
        assert stamps_of(messages) == expected_stamps, name
        assert [bag_ns for bag_ns, _ in messages] == [s + RECEIVE_DELAY_NS for s in expected_stamps], name
        assert {m.header.frame_id for _, m in messages} == {FRAME_ID}
        assert {(m.width, m.height) for _, m in messages} == {(WIDTH, HEIGHT)}
    labels = labels_of(topics["/wsvs_segmenter/labels"])
    for name in ("road", "sidewalk", "vegetation"):
        for mask, ids in zip(labels_of(topics[f"/wsvs_segmenter/mask/{name}"]), labels, strict=True):
            np.testing.assert_array_equal(mask, np.where(ids == DRIVE.by_name(name).id, 255, 0))
    ((_, class_map),) = topics["/wsvs_segmenter/class_map"]
    assert [c["name"] for c in json.loads(class_map.data)["classes"]] == list(DRIVE.names)

    out = tmp_path / "out"
    assert video_frames(out / "overlay.mp4") == N
    assert cv2.VideoCapture(str(out / "overlay.mp4")).get(cv2.CAP_PROP_FPS) == pytest.approx(RATE_HZ, rel=0.01)
    assert len(list((out / "overlays").glob("*.png"))) == math.ceil(N / 5)
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    assert set(stats) >= STATS_KEYS
    assert (stats["frames"], stats["published"], stats["skipped_bad"]) == (N, N, 0)
    assert (stats["flows_computed"], stats["resets"]) == (N - 1, 0)
    assert set(stats["stage_ms"]) == {"decode", "preprocess", "flow", "network", "crf", "postprocess", "total"}
    assert 0 < stats["latency_ms"]["p50"] <= stats["latency_ms"]["p95"]
    assert (stats["backend"], stats["device"], stats["topic"]) == ("torch", "cpu", TOPIC)
    assert stats["model"] == str(tiny_checkpoint.resolve()) and stats["wall_s"] > 0
    assert file_digests(bag) == before, "the input bag must not change"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive", "out", "tiny.pt"], "no partial directory left"


def test_replayed_labels_equal_the_segmenter_fed_the_same_frames_and_stamps(tmp_path: Path) -> None:
    # A centered window, so the tail frames only come out of the final flush.
    torch.manual_seed(1)
    spec = tiny_spec(window="centered")
    checkpoint = tmp_path / "centered.pt"
    save_checkpoint(checkpoint, build_model(spec), spec, info={})
    frames = moving_frames()
    stats = run(camera_bag(tmp_path / "drive", frames), tmp_path / "out", checkpoint)

    engine, spec = open_engine(checkpoint)
    segmenter = Segmenter(engine, spec, flow=make_flow(spec), max_gap=0.5)
    direct = [r for i, rgb in enumerate(frames) for r in segmenter.push(rgb, stamp_ns(i) / 1e9)]
    direct += segmenter.flush()

    replayed = read_back(tmp_path / "out" / "masks")["/wsvs_segmenter/labels"]
    assert stats["published"] == len(replayed) == len(direct) == N
    assert stamps_of(replayed) == [stamp_ns(i) for i in range(N)]
    for got, want in zip(labels_of(replayed), direct, strict=True):
        np.testing.assert_array_equal(got, want.labels)


@pytest.mark.parametrize("kind", ["image", "compressed"])
def test_corrupt_frames_are_skipped_counted_and_later_frames_processed(
    kind: str, tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = moving_frames()
    bad = {3, 7, 9}
    messages: list[tuple[int, Any]] = []
    for i, rgb in enumerate(frames):
        if kind == "image":
            msg = image(rgb, i)
            if i == 3:
                msg.data = msg.data[:-10]  # shorter than step x height
            elif i == 7:
                msg.encoding = "jpeg"  # not a raw encoding
            messages.append((i, bytes(ROS2.serialize_cdr(msg, IMAGE))[:40] if i == 9 else msg))  # 9: truncated CDR
        else:
            msg = compressed(rgb, i)
            if i in bad:
                msg.data = np.frombuffer(b"\xff\xd8 this is not a jpeg at all" * (i + 1), np.uint8)
            messages.append((i, msg))
    bag = write_bag(tmp_path / "drive", {TOPIC: messages})

    with caplog.at_level(logging.WARNING, logger="wsvs_ros.tools.replay"):
        stats = run(bag, tmp_path / "out", tiny_checkpoint)

    good = [i for i in range(N) if i not in bad]
    assert (stats["frames"], stats["skipped_bad"], stats["published"]) == (N, len(bad), len(good))
    labels = read_back(tmp_path / "out" / "masks")["/wsvs_segmenter/labels"]
    assert stamps_of(labels) == [stamp_ns(i) for i in good], "frames after a bad one are still segmented"
    warnings = [r.getMessage() for r in caplog.records if r.name == "wsvs_ros.tools.replay"]
    assert len(warnings) == 2, "the first bad frame and a total at the end, not one line per frame"
    assert "later frames are processed" in warnings[0] and f"skipped {len(bad)} undecodable" in warnings[1]


def test_the_only_image_topic_is_picked_when_no_topic_is_given(tiny_checkpoint: Path, tmp_path: Path) -> None:
    frames = moving_frames(4)
    bag = write_bag(
        tmp_path / "drive",
        {
            "/diagnostics_text": [(0, ROS2.types[STRING](data="ok"))],
            TOPIC: [(i, image(rgb, i)) for i, rgb in enumerate(frames)],
        },
    )
    stats = run(bag, tmp_path / "out", tiny_checkpoint, png_every=0)
    assert stats["topic"] == TOPIC and stats["published"] == 4
    assert not (tmp_path / "out" / "overlays").exists(), "png_every=0 writes no PNGs"


def test_several_image_topics_need_topic_and_the_error_lists_them(tiny_checkpoint: Path, tmp_path: Path) -> None:
    rgb = moving_frames(1)[0]
    bag = write_bag(
        tmp_path / "drive",
        {TOPIC: [(0, image(rgb, 0))], f"{TOPIC}/compressed": [(0, compressed(rgb, 0))]},
    )
    with pytest.raises(ValueError, match="choose one with --topic") as e:
        run(bag, tmp_path / "out", tiny_checkpoint)
    assert f"{TOPIC} ({IMAGE})" in str(e.value) and f"{TOPIC}/compressed ({COMPRESSED})" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert run(bag, tmp_path / "out", tiny_checkpoint, topic=f"{TOPIC}/compressed")["published"] == 1


def test_a_topic_not_in_the_bag_is_refused_with_the_bag_topics_listed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bag = camera_bag(tmp_path / "drive", moving_frames(2))
    with pytest.raises(ValueError, match=r"topic /front/image is not in the bag; pass --topic") as e:
        run(bag, tmp_path / "out", tiny_checkpoint, topic="/front/image")
    assert f"{TOPIC} ({IMAGE})" in str(e.value)


def test_a_topic_that_is_not_an_image_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "drive", {"/text": [(0, ROS2.types[STRING](data="hi"))]})
    with pytest.raises(ValueError, match="carries std_msgs/msg/String, not sensor_msgs/msg/Image"):
        run(bag, tmp_path / "out", tiny_checkpoint, topic="/text")
    with pytest.raises(ValueError, match="no sensor_msgs/Image or CompressedImage topic"):
        run(bag, tmp_path / "out", tiny_checkpoint)


def test_select_topic_picks_the_only_image_topic_among_others() -> None:
    topics = {"/imu": "sensor_msgs/msg/Imu", "/cam/compressed": COMPRESSED, "/mixed": None}
    assert select_topic(topics, None) == "/cam/compressed"
    assert select_topic(topics, "/imu") == "/imu", "a named topic is returned; its type is checked by the caller"


def test_fps_comes_from_header_stamps_then_bag_times() -> None:
    assert estimate_fps([0.0, 0.1, 0.2, 0.35, 0.4], []) == pytest.approx(10.0)
    assert estimate_fps([5.0, 5.0, 5.0], [1.0, 1.05, 1.1]) == pytest.approx(20.0), "unset stamps: bag times"
    assert estimate_fps([], []) == replay.FALLBACK_FPS


def test_an_existing_output_is_replaced_only_with_force(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bag = camera_bag(tmp_path / "drive", moving_frames(3))
    out = tmp_path / "out"
    run(bag, out, tiny_checkpoint)
    (out / "marker").write_text("from the first run")
    with pytest.raises(FileExistsError, match="pass --force to replace it"):
        run(bag, out, tiny_checkpoint)
    assert (out / "marker").exists()
    run(bag, out, tiny_checkpoint, force=True)
    assert not (out / "marker").exists() and (out / "stats.json").is_file()

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("not a replay output")
    with pytest.raises(FileExistsError, match="not an earlier replay's output"):
        run(bag, precious, tiny_checkpoint, force=True)
    assert (precious / "thesis.tex").read_text() == "not a replay output"


def test_a_failed_replay_leaves_no_output_directory(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bag = camera_bag(tmp_path / "drive", moving_frames(6))
    push = Segmenter.push
    calls = []

    def failing_push(self: Segmenter, *args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash mid-bag")
        return push(self, *args, **kw)

    monkeypatch.setattr(Segmenter, "push", failing_push)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(bag, tmp_path / "out", tiny_checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive", "tiny.pt"], "neither out/ nor a partial left"


def test_a_missing_mp4_encoder_is_reported_not_faked(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class NoEncoder:
        fourcc = staticmethod(cv2.VideoWriter.fourcc)

        def __init__(self, *args: Any) -> None:
            pass

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(replay.cv2, "VideoWriter", NoEncoder)
    with caplog.at_level(logging.WARNING, logger="wsvs_ros.tools.replay"):
        stats = run(camera_bag(tmp_path / "drive", moving_frames(3)), tmp_path / "out", tiny_checkpoint)
    video = stats["outputs"]["video"]
    assert video["path"] is None and "cannot write mp4v" in video["error"]
    assert not (tmp_path / "out" / "overlay.mp4").exists()
    assert any("not writing overlay.mp4" in r.getMessage() for r in caplog.records)
    assert len(read_back(tmp_path / "out" / "masks")["/wsvs_segmenter/labels"]) == 3


def test_ros1_bags_are_replayed_with_their_stamps(tiny_checkpoint: Path, tmp_path: Path) -> None:
    frames = moving_frames(5)
    bag = tmp_path / "drive.bag"
    with Writer1(bag) as writer:
        connection = writer.add_connection(TOPIC, IMAGE, typestore=ROS1)
        for i, rgb in enumerate(frames):
            writer.write(connection, stamp_ns(i) + RECEIVE_DELAY_NS, ROS1.serialize_ros1(image(rgb, i, ROS1), IMAGE))
    stats = run(bag, tmp_path / "out", tiny_checkpoint)
    labels = read_back(tmp_path / "out" / "masks")["/wsvs_segmenter/labels"]
    assert stats["published"] == 5 and stamps_of(labels) == [stamp_ns(i) for i in range(5)]
    assert {m.header.frame_id for _, m in labels} == {FRAME_ID}


def test_cli_replay_prints_where_the_outputs_are(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = camera_bag(tmp_path / "drive", moving_frames(4), "mcap")
    out = tmp_path / "out"
    args = ["replay", str(bag), "--out", str(out), "--model", str(tiny_checkpoint), "--classes", "road",
            "--png-every", "2"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 frames from /camera/image_raw" in printed and "4 segmented" in printed
    for path in (out / "masks", out / "overlay.mp4", out / "stats.json"):
        assert str(path) in printed and path.exists()
    assert set(read_back(out / "masks")) == {
        f"/wsvs_segmenter/{t}" for t in ("labels", "overlay", "mask/road", "class_map")
    }
    assert len(list((out / "overlays").glob("*.png"))) == 2

    assert main(args) == 2, "an existing --out is refused"
    assert "pass --force" in capsys.readouterr().err


def test_cli_without_model_says_to_pass_one_when_none_is_packaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "default_model_path", lambda: tmp_path / "no_such_model.pt")
    bag = camera_bag(tmp_path / "drive", moving_frames(1))
    assert main(["replay", str(bag), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ships no default model" in err and "pass --model" in err
    assert not (tmp_path / "out").exists()


CITYSCAPES = SHARED_DATA / "cityscapes_aachen" / "seq0000" / "frames"


@pytest.mark.slow
@pytest.mark.skipif(not CITYSCAPES.is_dir(), reason=f"real footage not present at {CITYSCAPES}")
def test_cityscapes_jpeg_bag_gives_one_label_map_per_frame_with_its_stamp(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    jpegs = sorted(CITYSCAPES.glob("*.jpg"))[:20]
    messages = [
        (i, ROS2.types[COMPRESSED](header=header(ROS2, i), format="jpeg", data=np.fromfile(path, np.uint8)))
        for i, path in enumerate(jpegs)
    ]
    bag = write_bag(tmp_path / "aachen", {TOPIC: messages}, "mcap")
    stats = run(bag, tmp_path / "out", tiny_checkpoint)
    print(json.dumps(stats, indent=2))  # the figures, for `pytest -s`

    labels = read_back(tmp_path / "out" / "masks")["/wsvs_segmenter/labels"]
    assert stamps_of(labels) == [stamp_ns(i) for i in range(len(jpegs))]
    assert {(m.width, m.height) for _, m in labels} == {(1024, 512)}
    assert (stats["frames"], stats["published"], stats["skipped_bad"]) == (len(jpegs), len(jpegs), 0)
    assert stats["outputs"]["video"]["fps"] == pytest.approx(RATE_HZ, rel=0.01)
    assert video_frames(tmp_path / "out" / "overlay.mp4") == len(jpegs)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_replay_errors_are_one_line_and_exit_2(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = camera_bag(tmp_path / "drive", moving_frames(2))
    replay_args = ["replay", str(bag), "--model", str(tiny_checkpoint)]
    assert main([*replay_args, "--out", str(tmp_path / "o1"), "--classes", "road", "road"]) == 2
    assert "--classes road road names a class twice" in one_error_line(capsys)

    (tmp_path / "a_file").write_text("")
    assert main([*replay_args, "--out", str(tmp_path / "a_file" / "out")]) == 2
    assert f"cannot create the output directory {tmp_path / 'a_file' / 'out'}" in one_error_line(capsys)

    with pytest.raises(SystemExit) as e:
        main([*replay_args, "--out", str(tmp_path / "o2"), "--device", "gpu"])
    assert e.value.code == 2
    assert "--device: expected cpu, cuda or cuda:N (e.g. cuda:0), got 'gpu'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "drive", "tiny.pt"]


def test_frames_over_the_pixel_limit_are_skipped_as_bad(tiny_checkpoint: Path, tmp_path: Path) -> None:
    frames = moving_frames(4)
    big = cv2.resize(frames[2], (WIDTH * 2, HEIGHT * 2))
    bag = write_bag(tmp_path / "drive", {TOPIC: [(0, compressed(frames[0], 0)), (1, compressed(frames[1], 1)),
                                                 (2, compressed(big, 2)), (3, compressed(frames[3], 3))]})  # fmt: skip
    stats = run(bag, tmp_path / "out", tiny_checkpoint, max_image_pixels=WIDTH * HEIGHT)
    assert (stats["frames"], stats["published"], stats["skipped_bad"]) == (4, 3, 1)
    assert stats["max_image_pixels"] == WIDTH * HEIGHT


# Runs `wsvs replay` with every frame slowed down, and says when the first one is through, so that a test can
# interrupt it mid-bag.
_SLOW_REPLAY = """
import sys, time
from wsvs_ros.tools.cli import main
from wsvs_ros.pipeline import Segmenter

push = Segmenter.push
def slow_push(self, *args, **kw):
    print("pushed", flush=True)
    time.sleep(0.05)
    return push(self, *args, **kw)
Segmenter.push = slow_push
sys.exit(main(sys.argv[1:]))
"""


def start_slow_replay(bag: Path, out: Path, model: Path) -> Any:
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_REPLAY, "replay", str(bag), "--out", str(out), "--model", str(model)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job may inherit SIG_IGN
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == "pushed":
            return process
    pytest.fail(f"the replay never pushed a frame: {process.communicate()[1]}")


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status", "says"), [("SIGINT", 130, "interrupted (Ctrl-C)"),
                                                     ("SIGTERM", 143, "terminated (SIGTERM)")])  # fmt: skip
def test_ctrl_c_or_sigterm_mid_replay_is_one_line_and_leaves_nothing(
    tiny_checkpoint: Path, tmp_path: Path, sig: str, status: int, says: str
) -> None:
    import signal

    bag = camera_bag(tmp_path / "drive", moving_frames(60))
    process = start_slow_replay(bag, tmp_path / "out", tiny_checkpoint)
    process.send_signal(getattr(signal, sig))
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    lines = [line for line in err.splitlines() if line.strip()]
    stopped = "nothing was written to --out (a replay's output appears only once complete)"
    assert lines == [f"wsvs replay: {says}; {stopped}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive", "tiny.pt"], "neither out/ nor a partial left"


@pytest.mark.slow
def test_the_next_replay_removes_the_partial_folder_a_killed_one_left(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import signal

    bag = camera_bag(tmp_path / "drive", moving_frames(60))
    process = start_slow_replay(bag, tmp_path / "out", tiny_checkpoint)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    (partial,) = tmp_path.glob(".out.*.partial")
    run(camera_bag(tmp_path / "short", moving_frames(2)), tmp_path / "out", tiny_checkpoint)
    assert not partial.exists() and (tmp_path / "out" / "stats.json").is_file()
    assert not list(tmp_path.glob(".out.*"))


def test_a_partial_folder_of_a_replay_still_running_is_left_alone(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import os

    live = tmp_path / f".out.{os.getppid()}.0123abcd.partial"  # the parent process: alive while this test runs
    live.mkdir()
    run(camera_bag(tmp_path / "drive", moving_frames(2)), tmp_path / "out", tiny_checkpoint)
    assert live.is_dir() and (tmp_path / "out" / "stats.json").is_file()
