"""Offline replay: segment a camera topic of a recorded bag with the live node's `Segmenter`, no ROS needed.

`replay_bag` reads rosbag2 (sqlite3 or mcap, a directory or a bare `.db3`/`.mcap` file) and ROS 1 `.bag` files with
the `rosbags` library and writes, into one output directory:

- `masks/`: a rosbag2 (mcap storage) with the node's output topics under its name (`/wsvs_segmenter/labels`,
  `/wsvs_segmenter/overlay`, `/wsvs_segmenter/mask/<class>`, and `/wsvs_segmenter/class_map` once). Every message
  carries its input frame's header stamp and frame_id, and is stored at its input frame's bag receive time, so
  `ros2 bag play` of both bags lines masks and camera up.
- `overlay.mp4`: the overlays as an MPEG-4 Part 2 (`mp4v`) video at the frame rate of the header stamps.
- `overlays/`: every `png_every`-th overlay as a PNG, named by result index and stamp.
- `stats.json`: counts, latency per stage, what ran and how long it took. `latency_ms` is decode (deserialise +
  image decode) plus the Segmenter's stages, per result, as the node would spend it; writing the outputs is timed
  apart (`write_ms`), being replay's own cost.

The directory is built under a hidden `.<name>.<pid>.*.partial` sibling and renamed into place only once everything
is written, so a crashed or interrupted replay never leaves a directory that looks complete. An interrupted replay
(Ctrl-C, or SIGTERM from `wsvs replay`, which treats it as Ctrl-C) removes its partial folder and writes nothing: a
masks bag cut short has no metadata and rosbags cannot open it. One killed outright (SIGKILL, power loss) leaves
the folder behind; the next replay into the same output removes it, once no process with its pid is running.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from importlib import resources
from itertools import pairwise
from pathlib import Path
from statistics import median
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np

try:
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys.store import Typestore
except ImportError as e:  # only replay needs rosbags; the node and the core run without it
    raise ImportError(
        f"wsvs replay reads and writes bags with the rosbags library ({e}); install it: pip install 'rosbags>=0.11'"
    ) from e
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from wsvs_ros.labels import LabelSet, get_label_set
from wsvs_ros.messages.bag_reader import IMAGE_TYPES, BagFrameReader, humble_typestore, open_bag, select_topic
from wsvs_ros.messages.conversions import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    stamp_of,
    stamp_to_seconds,
)
from wsvs_ros.messages.outputs import (
    CLASS_MAP_TOPIC,
    DEFAULT_MASK_CLASSES,
    DEFAULT_MAX_GAP_S,
    LABELS_TOPIC,
    NODE_NAME,
    OVERLAY_TOPIC,
    class_map_json,
    mask_topic,
    output_messages,
    resolve_classes,
)
from wsvs_ros.model.checkpoint import default_model_path
from wsvs_ros.pipeline import STAGES, SegmentResult, open_segmenter
from wsvs_ros.stats import RunStats, summarize, with_decode

log = logging.getLogger(__name__)


MASKS_BAG = "masks"
VIDEO_FILE = "overlay.mp4"
PNG_DIR = "overlays"
STATS_FILE = "stats.json"

# rosbag2 metadata version 9 writes QoS enums as names; 8 keeps the integer form that Humble's rosbag2 parses.
BAG_VERSION: Literal[8] = 8
WARN_EVERY = 100  # undecodable frames: the first is logged, then one line per this many, then a total at the end
FPS_PROBE_FRAMES = 30  # messages read ahead to estimate the video's frame rate
FALLBACK_FPS = 10.0  # when neither header stamps nor bag times tell a frame rate

_IMAGE = "sensor_msgs/msg/Image"
_STRING = "std_msgs/msg/String"
# How the live node offers class_map (published once, latched), so `ros2 bag play` republishes it latched too.
_LATCHED = Qos(
    QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, QosTime(0, 0), QosTime(0, 0),
    QosLiveliness.AUTOMATIC, QosTime(0, 0), False,
)  # fmt: skip


def sample_drive() -> Path:
    """The sample drive bag shipped for `wsvs demo` (wsvs_ros/data/sample_drive, made by wsvs_training.sample_bag)."""
    return Path(str(resources.files("wsvs_ros") / "data" / "sample_drive"))


def default_model() -> Path:
    """The model shipped inside the package (`wsvs_ros/data/default_model.pt`).

    Raises:
        FileNotFoundError: this install ships no default model; the message says to pass one.
    """
    path = default_model_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"this wsvs_ros ships no default model ({path} is missing); pass --model with a .pt "
            "checkpoint from wsvs-train (or an exported .onnx for --backend onnxruntime/tensorrt)"
        )
    return path


def replay_bag(
    bag: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    topic: str | None = None,
    model: str | os.PathLike[str],
    backend: str = "torch",
    device: str = "cpu",
    publish_classes: Sequence[str] = DEFAULT_MASK_CLASSES,
    png_every: int = 10,
    max_gap: float | None = DEFAULT_MAX_GAP_S,
    crf_iterations: int = 0,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment every frame of a bag's camera topic and write masks bag, overlay video, PNGs and stats to `out_dir`.

    Args:
        bag: a rosbag2 directory, a `.mcap` or `.db3` file, or a ROS 1 `.bag` file. It is only read.
        out_dir: directory to create (see the module docstring for what goes in it).
        topic: the sensor_msgs/Image or CompressedImage topic; None picks the bag's only image topic.
        model: `.pt` checkpoint (torch backend) or exported `.onnx` (onnxruntime, tensorrt), as for the node.
        backend, device: as for the node (`wsvs_ros.pipeline.open_segmenter`, CUDA graphs on CUDA as in the node).
        publish_classes: classes that get a `mask/<class>` topic (names or aliases of the model's label set).
        png_every: write every n-th overlay as a PNG (0: none).
        max_gap: seconds between frames above which the flow window restarts (None: never), as for the node.
        crf_iterations: dense-CRF post-processing steps, as for the node (0: off).
        max_image_pixels: frames with more pixels are skipped as bad before they are decoded, as in the node.
        force: replace an existing `out_dir` that holds an earlier replay's output.
        progress: show a progress bar over the topic's messages.

    Returns:
        The figures written to `stats.json`: frames (messages on the topic), published, skipped_bad
        (undecodable), flows_computed, resets, warming (results with fewer than L real flows), latency_ms,
        stage_ms and write_ms ({mean, p50, p95} in ms), fps (results per wall-clock second), wall_s, warm_up_s,
        and what ran (bag, topic, msgtype, frame_size, model, backend, device, spec, max_gap_s, crf_iterations,
        outputs).

    Raises:
        FileNotFoundError: no such bag or model file.
        FileExistsError: `out_dir` exists (without `force`, or with `force` when it is not a replay output).
        ValueError: the bag cannot be read, the topic is missing, ambiguous or not an image topic, an unknown class
            or one named twice, or a model/backend/device combination that cannot work.
        OSError: the output directory cannot be created (the message names it).
        ImportError: the backend's runtime is not installed.
    """
    start = time.perf_counter()
    bag, out_dir = Path(bag), Path(out_dir)
    if png_every < 0:
        raise ValueError(f"png_every must be >= 0 (0 writes no PNGs), got {png_every}")
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    _check_out_dir(out_dir, force=force)

    typestore = humble_typestore()
    with open_bag(bag, typestore) as reader:
        topic = select_topic({name: info.msgtype for name, info in reader.topics.items()}, topic)
        connections = [c for c in reader.connections if c.topic == topic and c.msgtype in IMAGE_TYPES]
        if not connections:
            raise ValueError(f"topic {topic} carries {reader.topics[topic].msgtype}, not {' or '.join(IMAGE_TYPES)}")
        fps = estimate_fps(*_probe_times(reader, connections))

        segmenter = open_segmenter(
            model, backend=backend, device=device, max_gap=max_gap, crf_iterations=crf_iterations
        )
        spec = segmenter.spec
        label_set = get_label_set(spec.label_set)
        mask_classes = resolve_classes(label_set, publish_classes)
        if len(set(mask_classes)) != len(mask_classes):
            named = " ".join(publish_classes)
            raise ValueError(f"--classes {named} names a class twice (aliases count); list each class once")
        warm_start = time.perf_counter()
        segmenter.warm_up()
        warm_up_s = time.perf_counter() - warm_start

        # A hidden sibling, renamed into place at the end (mkdir, unlike mkdtemp, honours the umask). The pid tells a
        # later run whether its writer is gone.
        work = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(out_dir)
            work.mkdir()
        except OSError as e:
            reason = e.strerror or e
            raise OSError(f"cannot create the output directory {out_dir}: {reason}; choose another --out") from e
        try:
            stats = RunStats()
            skipped = _SkipLog(topic)
            frame_reader = BagFrameReader(reader, typestore, max_pixels=max_image_pixels)
            with (
                _ReplayWriter(
                    work, typestore=typestore, label_set=label_set, mask_classes=mask_classes, fps=fps,
                    png_every=png_every,
                ) as writer,
                tqdm(total=sum(c.msgcount for c in connections), desc="wsvs replay", unit="frame",
                     disable=not progress) as bar,
                logging_redirect_tqdm() if progress else nullcontext(),
            ):  # fmt: skip
                # The class map goes first, at the bag's start, as a latched topic's message does in a recording.
                writer.write_class_map(class_map_json(label_set), reader.start_time)
                for connection, bag_ns, raw in reader.messages(connections):
                    bar.update()
                    stats.received += 1
                    decode_start = time.perf_counter()
                    try:
                        rgb, header, stamp = frame_reader.read(connection, raw)
                    except ImageDecodeError as e:
                        stats.skipped_bad += 1
                        skipped.add(bag_ns, e)
                        continue
                    decode_ms = (time.perf_counter() - decode_start) * 1e3
                    for i, result in enumerate(segmenter.push(rgb, stamp, _Payload(header, rgb, bag_ns))):
                        # As the Segmenter times its stages: the push that produced a result pays for its decode.
                        _publish(writer, stats, result, decode_ms if i == 0 else 0.0)
                for result in segmenter.flush():  # a centered window's last L/2 frames
                    _publish(writer, stats, result, 0.0)
            skipped.finish()

            summary = stats.summary()  # its "dropped" stays out: replay processes every frame, none is replaced
            figures: dict[str, Any] = {
                "frames": summary["received"],
                "published": summary["published"],
                "skipped_bad": summary["skipped_bad"],
                "flows_computed": segmenter.flows_computed,
                "resets": segmenter.resets,
                "warming": writer.warming,
                "latency_ms": summary["latency_ms"],
                "stage_ms": summary["stage_ms"],
                "write_ms": summarize(writer.write_ms),
                "fps": summary["fps"],
                "wall_s": time.perf_counter() - start,
                "warm_up_s": warm_up_s,
                "bag": str(bag.resolve()),
                "topic": topic,
                "msgtype": connections[0].msgtype,
                "frame_size": list(writer.frame_size) if writer.frame_size else None,
                "model": str(Path(model).resolve()),
                "backend": backend,
                "device": str(segmenter.device),
                "spec": {
                    "label_set": spec.label_set,
                    "input_size": list(spec.input_size),
                    "flow_length": spec.flow_length,
                    "window": spec.window,
                    "flow_method": spec.flow_method,
                },
                "max_gap_s": max_gap,
                "crf_iterations": crf_iterations,
                "max_image_pixels": max_image_pixels,
                "outputs": writer.outputs(),
            }
            (work / STATS_FILE).write_text(json.dumps(figures, indent=2) + "\n")
            _move_into_place(work, out_dir, force=force)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # never leave a half-written output behind
            raise
    return figures


def estimate_fps(stamps: Sequence[float], bag_times: Sequence[float]) -> float:
    """Frames per second from the median spacing of header stamps (s), else of bag receive times (s).

    Stamps that do not advance (unset, or all equal) fall back to the bag times, and those to `FALLBACK_FPS`.
    """
    for times in (stamps, bag_times):
        steps = [b - a for a, b in pairwise(times) if b > a]
        if steps:
            return 1.0 / median(steps)
    return FALLBACK_FPS


def format_summary(stats: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> str:
    """A few lines for the terminal: what was replayed, latency, and where each output is."""
    out = Path(out_dir)
    outputs = stats["outputs"]
    lat = stats["latency_ms"]
    stages = stats["stage_ms"]
    stage = ", ".join(f"{name} {stages[name]['mean']:.1f}" for name in ("decode", *STAGES) if name in stages)
    video = outputs["video"]
    video_line = (
        f"{out / video['path']} ({video['frames']} frames at {video['fps']:.2f} fps)"
        if video["path"]
        else f"no overlay video: {video['error']}"
    )
    return "\n".join(
        [
            f"wsvs replay: {stats['frames']} frames from {stats['topic']} ({stats['msgtype']}): "
            f"{stats['published']} segmented, {stats['skipped_bad']} skipped as undecodable, "
            f"{stats['resets']} flow-window resets, {stats['wall_s']:.1f} s",
            f"  latency ms: mean {lat['mean']:.1f}, p50 {lat['p50']:.1f}, p95 {lat['p95']:.1f} "
            f"({stats['backend']} on {stats['device']}; stage means: {stage}); "
            f"writing outputs {stats['write_ms']['mean']:.1f} ms/frame",
            f"  masks bag:  {out / outputs['bag']} (rosbag2, mcap)",
            f"  video:      {video_line}",
            f"  PNGs:       {outputs['pngs']} in {out / outputs['png_dir']}",
            f"  stats:      {out / STATS_FILE}",
        ]
    )


class _Payload(NamedTuple):
    """What replay pushes with each frame and gets back with its result."""

    header: Any  # Humble std_msgs/Header: the input stamp and frame_id
    rgb: np.ndarray  # (H, W, 3) uint8, for the overlay
    bag_ns: int  # the input message's bag receive time, nanoseconds


class _ReplayWriter:
    """Writes each result to the masks bag, the overlay video and (every `png_every`-th) a PNG, under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        typestore: Typestore,
        label_set: LabelSet,
        mask_classes: Sequence[int],
        fps: float,
        png_every: int,
    ):
        self.root = root
        self.typestore = typestore
        self.label_set = label_set
        self.mask_classes = tuple(mask_classes)
        self.fps = fps
        self.png_every = png_every
        self.image_type = typestore.types[_IMAGE]
        self.published = 0
        self.warming = 0
        self.pngs = 0
        self.write_ms: list[float] = []
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the first frame: the video's size
        self.video: cv2.VideoWriter | None = None
        self.video_frames = 0
        self.video_error: str | None = None

        self.bag = Writer(root / MASKS_BAG, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        # zstd chunks: label maps and masks shrink tens of times; every rosbag2 mcap reader decompresses them.
        self.bag.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.bag.open()
        relative = [LABELS_TOPIC, OVERLAY_TOPIC, *(mask_topic(label_set.by_id(c).name) for c in self.mask_classes)]
        self.connections: dict[str, Connection] = {
            name: self.bag.add_connection(f"/{NODE_NAME}/{name}", _IMAGE, typestore=typestore) for name in relative
        }
        self.class_map = self.bag.add_connection(
            f"/{NODE_NAME}/{CLASS_MAP_TOPIC}", _STRING, typestore=typestore, offered_qos_profiles=[_LATCHED]
        )

    def __enter__(self) -> _ReplayWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.bag.close()
        else:
            self.bag.abort()
        if self.video is not None:
            self.video.release()

    def write_class_map(self, text: str, bag_ns: int) -> None:
        msg = self.typestore.types[_STRING](data=text)
        self.bag.write(self.class_map, bag_ns, self.typestore.serialize_cdr(msg, _STRING))

    def write(self, result: SegmentResult) -> None:
        """Publish one result: its messages into the bag at its frame's bag time, its overlay into video and PNG."""
        start = time.perf_counter()
        payload: _Payload = result.payload
        messages = output_messages(
            result, payload.rgb, payload.header, label_set=self.label_set, mask_classes=self.mask_classes,
            image_type=self.image_type,
        )  # fmt: skip
        for name, msg in messages.items():
            self.bag.write(self.connections[name], payload.bag_ns, self.typestore.serialize_cdr(msg, _IMAGE))
        over = messages[OVERLAY_TOPIC]
        bgr = over.data.reshape(over.height, over.width, 3)  # the overlay message is bgr8, what OpenCV writes
        self._write_video(bgr)
        if self.png_every and self.published % self.png_every == 0:
            self._write_png(bgr, payload.header.stamp)
        self.published += 1
        self.warming += result.warming
        self.write_ms.append((time.perf_counter() - start) * 1e3)

    def outputs(self) -> dict[str, Any]:
        """Where each output went, relative to the output directory, for stats.json."""
        video = (
            {"path": VIDEO_FILE, "frames": self.video_frames, "fps": self.fps, "codec": "mp4v"}
            if self.video is not None
            else {"path": None, "error": self.video_error or "no frame was segmented"}
        )
        return {"bag": MASKS_BAG, "video": video, "png_dir": PNG_DIR, "pngs": self.pngs}

    def _write_video(self, bgr: np.ndarray) -> None:
        height, width = bgr.shape[:2]
        if self.frame_size is None:
            self.frame_size = (width, height)
            video = cv2.VideoWriter(
                str(self.root / VIDEO_FILE), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (width, height)
            )
            if video.isOpened():
                self.video = video
            else:
                # Say so rather than leave an empty file: this OpenCV build has no MPEG-4 encoder.
                self.video_error = f"this OpenCV ({cv2.__version__}) cannot write mp4v video (no FFmpeg backend?)"
                log.warning(
                    "not writing %s: %s; the masks bag, PNGs and stats are written", VIDEO_FILE, self.video_error
                )
                (self.root / VIDEO_FILE).unlink(missing_ok=True)
        if self.video is None:
            return
        if (width, height) != self.frame_size:  # a camera that changed resolution mid-bag; the video keeps its size
            bgr = cv2.resize(bgr, self.frame_size, interpolation=cv2.INTER_AREA)
        self.video.write(bgr)
        self.video_frames += 1

    def _write_png(self, bgr: np.ndarray, stamp: Any) -> None:
        png_dir = self.root / PNG_DIR
        png_dir.mkdir(exist_ok=True)
        path = png_dir / f"{self.published:06d}_{stamp.sec}.{stamp.nanosec:09d}.png"
        if not cv2.imwrite(str(path), bgr):
            raise OSError(f"could not write {path}; check free space and permissions")
        self.pngs += 1


class _SkipLog:
    """Warns about undecodable frames without flooding: the first, every `WARN_EVERY`-th, and a total at the end."""

    def __init__(self, topic: str):
        self.topic = topic
        self.count = 0
        self.first: str | None = None

    def add(self, bag_ns: int, error: Exception) -> None:
        self.count += 1
        reason = f"bag time {bag_ns / 1e9:.3f} s: {error}"
        if self.first is None:
            self.first = reason
            log.warning("skipping an undecodable frame on %s (%s); later frames are processed", self.topic, reason)
        elif self.count % WARN_EVERY == 0:
            log.warning("%d undecodable frames skipped on %s so far; latest at %s", self.count, self.topic, reason)

    def finish(self) -> None:
        if self.count:
            log.warning("skipped %d undecodable frame(s) on %s; the first at %s", self.count, self.topic, self.first)


def _publish(writer: _ReplayWriter, stats: RunStats, result: SegmentResult, decode_ms: float) -> None:
    writer.write(result)
    stats.add_result(with_decode(result.timings_ms, decode_ms))


def _probe_times(reader: AnyReader, connections: Iterable[Connection]) -> tuple[list[float], list[float]]:
    """Header stamps and bag times (s) of the first `FPS_PROBE_FRAMES` readable messages, for `estimate_fps`."""
    stamps, bag_times = [], []
    for i, (connection, bag_ns, raw) in enumerate(reader.messages(list(connections))):
        if i == FPS_PROBE_FRAMES:
            break
        bag_times.append(bag_ns * 1e-9)
        try:
            msg: Any = reader.deserialize(raw, connection.msgtype)
            stamps.append(stamp_to_seconds(stamp_of(msg)))
        except AnyReaderError:
            continue  # the main pass reports it
    return stamps, bag_times


def _check_out_dir(out_dir: Path, *, force: bool) -> None:
    """Refuse an existing `out_dir`, unless `force` and it is an earlier replay's output (it has stats.json)."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not force:
        raise FileExistsError(f"output directory {out_dir} exists; pass --force to replace it, or choose another --out")
    if not out_dir.is_dir() or out_dir.is_symlink() or not (out_dir / STATS_FILE).is_file():
        raise FileExistsError(
            f"output directory {out_dir} exists and is not an earlier replay's output (no {STATS_FILE}); --force only "
            "replaces replay outputs, so choose another --out or remove it yourself"
        )


def _remove_stale_partials(out_dir: Path) -> None:
    """Remove what killed replays into `out_dir` left: `.<name>.<pid>.*.partial` and `.<name>.<pid>.old` siblings
    whose pid no longer runs (and partials of older releases, which had no pid in their names)."""
    for path in out_dir.parent.glob(f".{out_dir.name}.*"):
        parts = path.name[len(out_dir.name) + 2 :].split(".")
        if parts[-1] not in ("partial", "old") or not path.is_dir() or path.is_symlink():
            continue
        pid = int(parts[0]) if len(parts) >= 2 and parts[0].isdigit() else None
        if pid is not None and pid != os.getpid() and _pid_running(pid):
            continue  # another replay into the same folder is writing it right now
        log.warning("removing %s, left by a replay that was killed", path)
        shutil.rmtree(path, ignore_errors=True)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _move_into_place(work: Path, out_dir: Path, *, force: bool) -> None:
    """Rename the finished `work` directory to `out_dir`; with `force`, an earlier output is replaced only now.

    Without `force` the rename fails if something appeared at `out_dir` meanwhile, rather than replace it.
    """
    old = None
    if force and out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
        out_dir.rename(old)
    work.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)
