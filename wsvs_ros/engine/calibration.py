"""INT8 calibration data: real frames with real optical flow, preprocessed exactly as the node does it.

INT8 scales are only as good as the activations they are measured on. A flow stream calibrated on zeros (or on
random noise) quantises the real flows badly, so the calibration inputs come from recorded driving: a folder of
consecutive frames or a bag (rosbag2 folder, .mcap, .db3 or ROS 1 .bag, read by `wsvs_ros.messages.bag_reader`
as `wsvs replay` reads it), run through the node's own path (`frame_to_tensor`, a `FlowWindow` over `make_flow(spec)`
with `encode_flow`, `normalize_rgb`). Samples are spread evenly over the whole recording, each with its L real flows.

Everything here but `make_int8_calibrator` runs without TensorRT: the batching (`calibration_batches`,
`CalibrationFeed`), the device staging (`DeviceStaging`) and the cache file (`CalibrationCache`). The TensorRT
calibrator class only delegates to them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from wsvs_ros.engine.engine_cache import atomic_write_bytes, short_hash
from wsvs_ros.flow import FlowWindow, make_flow
from wsvs_ros.preprocess import encode_flow, frame_to_tensor, normalize_rgb
from wsvs_ros.spec import ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
BAG_SUFFIXES = (".mcap", ".db3", ".bag")
CALIBRATORS = ("entropy", "minmax")
DEFAULT_CALIBRATION_FRAMES = 300

_LOG = logging.getLogger(__name__)


def is_bag(source: str | os.PathLike[str]) -> bool:
    """A bag file (.mcap, .db3, .bag) or a rosbag2 folder (it holds metadata.yaml)."""
    path = Path(source)
    return path.suffix in BAG_SUFFIXES if path.is_file() else (path / "metadata.yaml").is_file()


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The images directly in `folder`, sorted by name (the frame order)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def spread_ends(total: int, max_batches: int, flow_length: int) -> list[int]:
    """Indices of the frames to calibrate on, spread evenly over `total` frames.

    Each chosen frame is the last of a run of L + 1 consecutive frames (its L flows are real), so the first possible
    one is frame L. Returns min(max_batches, total - L) distinct sorted indices in [L, total - 1].
    """
    if max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    span = total - 1 - flow_length  # ends lie in [L, L + span]
    if span < 0:
        return []
    count = min(max_batches, span + 1)
    if count == 1:
        return [flow_length]
    return [flow_length + (k * span) // (count - 1) for k in range(count)]


@dataclass(frozen=True)
class _Frame:
    index: int
    load: Callable[[], tuple[np.ndarray, float]]  # -> ((H, W, 3) uint8 RGB, stamp in seconds); ValueError if bad


def _read_image(path: Path, index: int) -> tuple[np.ndarray, float]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path} is not a readable image")
    # A folder has no clock: one second per frame keeps the stamps increasing (the window has no max_gap here).
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), float(index)


def _folder_frames(files: Sequence[Path]) -> Iterator[_Frame]:
    for index, path in enumerate(files):
        yield _Frame(index, functools.partial(_read_image, path, index))


def _bag_topic(path: Path, topic: str | None) -> tuple[str, int]:
    """(camera topic, its message count)."""
    from wsvs_ros.messages.bag_reader import humble_typestore, open_bag, select_topic

    with open_bag(path, humble_typestore()) as reader:
        name = select_topic({c.topic: c.msgtype for c in reader.connections}, topic)
        return name, sum(c.msgcount for c in reader.connections if c.topic == name)


def _bag_frames(path: Path, topic: str) -> Iterator[_Frame]:
    """The topic's frames, read as `wsvs replay` reads them (`BagFrameReader`); an unreadable one raises
    `ImageDecodeError` when its frame is used."""
    from wsvs_ros.messages.bag_reader import BagFrameReader, humble_typestore, open_bag

    typestore = humble_typestore()
    with open_bag(path, typestore) as reader:
        frames = BagFrameReader(reader, typestore)
        connections = [c for c in reader.connections if c.topic == topic]

        def decode(connection: Any, raw: bytes) -> tuple[np.ndarray, float]:
            rgb, _, stamp = frames.read(connection, raw)
            return rgb, stamp

        for index, (connection, _, raw) in enumerate(reader.messages(connections=connections)):
            # Deserialised only when the frame is used: most of a long drive is skipped.
            yield _Frame(index, functools.partial(decode, connection, raw))


def _frames(source: Path, topic: str | None) -> tuple[int, Iterator[_Frame]]:
    """(number of frames, the frames in recording order) of a folder of images or a bag's camera topic."""
    if not source.exists():
        raise FileNotFoundError(f"calibration source {source} does not exist")
    if is_bag(source):
        name, count = _bag_topic(source, topic)
        return count, _bag_frames(source, name)
    if not source.is_dir():
        raise ValueError(f"{source} is neither a folder of images nor a bag ({', '.join(BAG_SUFFIXES)})")
    if topic is not None:
        raise ValueError(f"a topic ({topic!r}) only applies to bags; {source} is a folder of images")
    files = image_files(source)
    if not files:
        raise ValueError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)}) and is not a rosbag2 folder")
    return len(files), _folder_frames(files)


def calibration_batches(
    source: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    max_batches: int = DEFAULT_CALIBRATION_FRAMES,
    device: torch.device | str = "cpu",
    topic: str | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Network inputs made from recorded frames exactly as the node makes them.

    Up to `max_batches` frames spread evenly over the recording (`spread_ends`); for each, the L frames before it
    are pushed through a fresh stretch of the flow window, so all of its L flows are real (no warm-up zeros).
    Unreadable frames are skipped and counted, as the node skips them.

    Args:
        source: a folder of consecutive frames (sorted by file name) or a bag (.mcap / .db3 / .bag file, or a
            rosbag2 folder).
        spec: the model's preprocessing metadata.
        max_batches: the most samples to yield.
        device: where frames, flows and the yielded tensors live.
        topic: the bag's camera topic (None: its only Image / CompressedImage topic;
            `wsvs_ros.messages.bag_reader.select_topic`).
    Returns:
        An iterator of {"rgb": (1, 3, H, W), "flow": (1, 2L, H, W)} contiguous float32 tensors on `device`; the
        frames are read as it is consumed.
    Raises:
        FileNotFoundError: no such source.
        ValueError: not a folder of images nor a bag, an ambiguous or absent topic, fewer than L + 1 frames;
            while iterating: no sample at all (too many unreadable frames).
        ImportError: a bag and no rosbags.
    """
    source = Path(source)
    total, frames = _frames(source, topic)  # here, so that a bad source fails at the call, not at the first batch
    if total <= spec.flow_length:
        raise ValueError(
            f"{source} has {total} frame(s); a calibration sample needs {spec.flow_length + 1} consecutive frames "
            f"(flow_length={spec.flow_length})"
        )
    return _samples(source, total, frames, spec, max_batches=max_batches, device=torch.device(device))


def _samples(
    source: Path, total: int, frames: Iterator[_Frame], spec: ModelSpec, *, max_batches: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    ends = spread_ends(total, max_batches, spec.flow_length)
    wanted = {i for end in ends for i in range(end - spec.flow_length, end + 1)}
    ends_set = set(ends)
    flow = make_flow(spec)
    window = FlowWindow(
        lambda prev, cur: encode_flow(flow(prev, cur), spec), length=spec.flow_length, window=spec.window
    )
    produced = skipped = 0
    previous: int | None = None
    for frame in frames:
        if frame.index not in wanted:
            continue
        if previous is not None and frame.index != previous + 1:
            window.flush()  # the next run starts afresh; what a flush returns is warming, so not calibration data
        previous = frame.index
        try:
            rgb, stamp = frame.load()
        except ValueError as e:  # conversions.ImageDecodeError is a ValueError
            skipped += 1
            _LOG.warning("calibration: skipping frame %d of %s: %s", frame.index, source, e)
            continue
        for sample in window.push(frame_to_tensor(rgb, spec, device), stamp):
            if frame.index in ends_set and not sample.warming:
                yield {"rgb": normalize_rgb(sample.frame, spec).contiguous(), "flow": sample.flows.contiguous()}
                produced += 1
    if produced == 0:
        raise ValueError(
            f"{source} gave no calibration sample: {total} frame(s), {skipped} unreadable; each sample needs "
            f"{spec.flow_length + 1} consecutive readable frames (flow_length={spec.flow_length})"
        )
    if produced < len(ends):
        _LOG.warning(
            "calibration: %d of %d samples from %s (%d unreadable frames)", produced, len(ends), source, skipped
        )


def source_fingerprint(source: str | os.PathLike[str], topic: str | None = None) -> str:
    """Short hash of a calibration source's identity: its resolved path, topic, and its files' names, sizes, mtimes."""
    path = Path(source).resolve()
    if path.is_file():
        files = [path]
    elif is_bag(path):
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        files = image_files(path)
    entries = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return short_hash(str(path), topic, entries)


def calibration_cache_path(
    cache_dir: str | os.PathLike[str],
    *,
    onnx_sha256: str,
    source: str | os.PathLike[str],
    topic: str | None,
    algorithm: str,
    max_batches: int,
) -> Path:
    """Where TensorRT's calibration table for this model, source and algorithm is kept.

    Any change to the model, the recording (a file added, replaced or touched), the topic, the algorithm or the
    number of samples gives another file, so a stale table is never reused.
    """
    if algorithm not in CALIBRATORS:
        raise ValueError(f"calibrator must be one of {CALIBRATORS}, got {algorithm!r}")
    key = short_hash(onnx_sha256, source_fingerprint(source, topic), algorithm, max_batches)
    return Path(cache_dir) / "calibration" / f"{algorithm}-{key}.cache"


class CalibrationCache:
    """TensorRT's calibration table in one file: read back on rebuilds so calibration runs once.

    Args:
        path: the cache file (see `calibration_cache_path`).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def read(self) -> bytes | None:
        """The stored table, or None when there is none yet (TensorRT then calibrates)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data or None

    def write(self, data: bytes) -> None:
        """Store a table atomically."""
        atomic_write_bytes(self.path, bytes(data))
        _LOG.info("calibration table written to %s", self.path)


class DeviceStaging:
    """Puts named float32 tensors in GPU memory and returns their addresses, for TensorRT to read.

    With CUDA-enabled PyTorch the tensors are moved to `device` (a no-op for the usual CUDA inputs) and kept alive
    until the next call; otherwise one pycuda buffer per name is allocated on first use and refilled.

    Args:
        device: the CUDA device TensorRT builds on.
    Raises:
        ImportError: torch has no CUDA and pycuda is not installed.
    """

    def __init__(self, device: torch.device | str = "cuda"):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"TensorRT reads calibration data from a CUDA device, got {device}")
        self.device = torch.device("cuda", device.index if device.index is not None else 0)
        self._held: dict[str, torch.Tensor] = {}
        self._pycuda: Any = None
        self._buffers: dict[str, Any] = {}
        if not torch.cuda.is_available():
            from wsvs_ros.engine.tensorrt_runtime import pycuda_context

            self._pycuda = pycuda_context(self.device.index or 0)

    def stage(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """name -> device address of that tensor's float32 data, valid until the next call."""
        if self._pycuda is None:
            self._held = {n: t.to(self.device, torch.float32).contiguous() for n, t in tensors.items()}
            return {n: t.data_ptr() for n, t in self._held.items()}
        cuda, context = self._pycuda
        context.push()
        try:
            for name, tensor in tensors.items():
                host = np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)
                if name not in self._buffers or self._buffers[name][1] != host.nbytes:
                    self._buffers[name] = (cuda.mem_alloc(host.nbytes), host.nbytes)
                cuda.memcpy_htod(self._buffers[name][0], host)
        finally:
            context.pop()
        return {name: int(self._buffers[name][0]) for name in tensors}


class CalibrationFeed:
    """The batches TensorRT's calibrator asks for, one `get_batch` call at a time.

    Args:
        batches: {"rgb": ..., "flow": ...} dicts, e.g. `calibration_batches(...)` (consumed lazily: when a
            calibration table is cached, TensorRT never asks and no frame is decoded).
        staging: puts a batch in GPU memory (None: only `next_batch` is usable).
    """

    batch_size = 1  # the exported network's static batch dimension

    def __init__(self, batches: Iterable[Mapping[str, torch.Tensor]], *, staging: DeviceStaging | None = None):
        self._batches = iter(batches)
        self._staging = staging
        self.served = 0
        self.error: Exception | None = None  # what stopped the feed early; TensorRT only sees "no more batches"

    def next_batch(self, names: Sequence[str]) -> dict[str, torch.Tensor] | None:
        """The next batch restricted to `names`, or None when the source is exhausted.

        Raises:
            ValueError: the batch lacks one of `names` (the network's inputs are not the model's).
        """
        batch = next(self._batches, None)
        if batch is None:
            return None
        missing = [n for n in names if n not in batch]
        if missing:
            raise ValueError(f"TensorRT asks for inputs {list(names)}; calibration batches hold {sorted(batch)}")
        self.served += 1
        return {n: batch[n] for n in names}

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        """Addresses of the next batch's tensors in `names` order, or None at the end (what get_batch returns)."""
        if self._staging is None:
            raise RuntimeError("CalibrationFeed was made without staging; pass staging=DeviceStaging(device)")
        try:
            batch = self.next_batch(names)
            if batch is not None:
                addresses = self._staging.stage(batch)
                return [addresses[n] for n in names]
        except Exception as e:  # an exception cannot cross TensorRT's C++ callback: keep it for the builder to raise
            self.error = e
            _LOG.error("calibration stopped after %d samples: %s", self.served, e)
            return None
        _LOG.info("calibration: %d samples fed to TensorRT", self.served)
        return None


def make_int8_calibrator(algorithm: str, feed: CalibrationFeed, cache: CalibrationCache) -> Any:
    """A TensorRT INT8 calibrator ("entropy": IInt8EntropyCalibrator2, "minmax": IInt8MinMaxCalibrator).

    Entropy is TensorRT's usual choice for CNNs; MinMax keeps the full activation range, which can suit the flow
    stream's clipped inputs better; compare both with `wsvs build-engine --int8 --calibrator ...` and the label
    agreement it reports. Calibrators are deprecated since TensorRT 10.1 (explicit Q/DQ quantization replaces
    them) but still work in 10.x; TensorRT 11 removed them.

    Raises:
        ImportError: tensorrt is not installed.
        ValueError: unknown algorithm.
    """
    from wsvs_ros.engine.tensorrt_runtime import import_tensorrt

    trt = import_tensorrt()
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise RuntimeError(
            f"TensorRT {trt.__version__} has no INT8 calibrators (removed in TensorRT 11); "
            "build fp16, or use TensorRT 10 (JetPack 6.1/6.2) for --int8"
        )
    bases = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}
    if algorithm not in bases:
        raise ValueError(f"calibrator must be one of {CALIBRATORS}, got {algorithm!r}")
    base = bases[algorithm]

    class Int8Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 classes need their base initialised explicitly (TensorRT docs)

        def get_batch_size(self) -> int:
            # Deprecated in TensorRT 10.0 with implicit batch; 8.6 and 10.x still call it.
            return feed.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            return feed.next_pointers(names)

        def read_calibration_cache(self) -> bytes | None:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

    return Int8Calibrator()
