"""INT8 calibration data: real flows from recorded frames, exactly the inputs the node would feed the network."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_spec

from wsvs_ros.engine.calibration import (
    CalibrationCache,
    CalibrationFeed,
    DeviceStaging,
    calibration_batches,
    calibration_cache_path,
    make_int8_calibrator,
    spread_ends,
)
from wsvs_ros.flow import make_flow
from wsvs_ros.pipeline import Segmenter
from wsvs_ros.spec import ModelSpec

SHIFT = 3  # pixels per frame the scene moves right, at the 96x48 camera size (2 px at the 64x32 network input)
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _moving_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """(48, 96, 3) uint8 RGB frames of a smooth random texture sliding right by SHIFT pixels per frame."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (48, 96 + SHIFT * n, 3), np.uint8)
    texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    return [np.ascontiguousarray(texture[:, SHIFT * (n - k) : SHIFT * (n - k) + 96]) for k in range(n)]


def _write_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{k:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


class RecordingEngine:
    """Stands where the network goes in `Segmenter` and records the inputs it is given (logits are zeros)."""

    def __init__(self, spec: ModelSpec, device: torch.device):
        self.device = device
        self.spec = spec
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        self.inputs.append((rgb.clone(), flow.clone()))
        return torch.zeros(1, self.spec.num_classes, *rgb.shape[2:], device=self.device)


def _segmenter_inputs(frames: list[np.ndarray], spec: ModelSpec, device: torch.device) -> list[tuple]:
    """What the node's Segmenter feeds the network for each frame, in frame order."""
    engine = RecordingEngine(spec, device)
    segmenter = Segmenter(engine, spec, flow=make_flow(spec))
    for k, rgb in enumerate(frames):
        segmenter.push(rgb, float(k))
    segmenter.flush()
    return engine.inputs


def test_spread_ends_cover_the_recording_evenly() -> None:
    assert spread_ends(100, 5, 4) == [4, 27, 51, 75, 99]
    assert spread_ends(100, 1, 4) == [4]


def test_spread_ends_take_every_usable_frame_of_a_short_recording() -> None:
    assert spread_ends(8, 100, 4) == [4, 5, 6, 7]
    assert spread_ends(5, 3, 4) == [4]
    assert spread_ends(4, 3, 4) == []


def test_batches_have_the_network_input_shapes_dtype_and_device(tmp_path: Path, device: torch.device) -> None:
    spec = tiny_spec()
    folder = _write_folder(tmp_path / "frames", _moving_frames(10))
    batches = list(calibration_batches(folder, spec, max_batches=4, device=device))
    assert len(batches) == 4
    for batch in batches:
        assert batch["rgb"].shape == (1, 3, 32, 64)
        assert batch["flow"].shape == (1, 2 * spec.flow_length, 32, 64)
        for tensor in batch.values():
            assert tensor.dtype == torch.float32 and tensor.device.type == device.type and tensor.is_contiguous()


def test_every_flow_of_a_moving_sequence_is_real_not_a_warm_up_zero(tmp_path: Path) -> None:
    spec = tiny_spec()
    folder = _write_folder(tmp_path / "frames", _moving_frames(12))
    for batch in calibration_batches(folder, spec, max_batches=3):
        flow_x = batch["flow"][0, 0::2].abs().mean(dim=(1, 2))  # mean |x flow| of each of the L flows
        # The scene moves 2 px per frame at the network size: encoded 2 / flow_scale = 0.2.
        assert (flow_x > 0.1).all(), flow_x


@pytest.mark.parametrize("window", ["causal", "centered"])
def test_spread_samples_equal_what_the_node_feeds_the_network_for_those_frames(
    tmp_path: Path, device: torch.device, window: str
) -> None:
    spec = tiny_spec(window=window)
    frames = _moving_frames(24)
    folder = _write_folder(tmp_path / "frames", frames)
    ends = spread_ends(len(frames), 3, spec.flow_length)
    assert ends == [4, 13, 23]  # three separate runs of L + 1 frames: the window restarts between them
    batches = list(calibration_batches(folder, spec, max_batches=3, device=device))
    # A PNG round trip is lossless, so the node sees the same pixels.
    node_inputs = _segmenter_inputs(frames, spec, device)
    assert len(batches) == 3
    for end, batch in zip(ends, batches, strict=True):
        rgb, flow = node_inputs[end - spec.flow_length // 2 if window == "centered" else end]
        torch.testing.assert_close(batch["rgb"], rgb)
        torch.testing.assert_close(batch["flow"], flow)


def test_unreadable_frame_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = tiny_spec()
    folder = _write_folder(tmp_path / "frames", _moving_frames(12))
    (folder / "frame_0005.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        batches = list(calibration_batches(folder, spec, max_batches=100))
    assert 0 < len(batches) < 12 - spec.flow_length
    assert "skipping frame 5" in caplog.text and "unreadable" in caplog.text


def test_too_short_a_recording_is_refused_with_the_frames_needed(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "frames", _moving_frames(4))
    with pytest.raises(ValueError, match="needs 5 consecutive frames"):
        calibration_batches(folder, tiny_spec(), max_batches=4)


def test_folder_without_images_and_missing_source_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no frames here")
    with pytest.raises(ValueError, match="holds no images"):
        calibration_batches(tmp_path, tiny_spec())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        calibration_batches(tmp_path / "missing", tiny_spec())


def _write_bag(path: Path, frames: list[np.ndarray], topics: tuple[str, ...]) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header, Time = (
        store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    with Writer(path, version=8) as writer:
        connections = [writer.add_connection(t, "sensor_msgs/msg/Image", typestore=store) for t in topics]
        for k, rgb in enumerate(frames):
            stamp_ns = 1_700_000_000_000_000_000 + k * 33_333_333
            header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="camera")
            msg = Image(
                header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                step=rgb.shape[1] * 3, data=rgb.reshape(-1),
            )  # fmt: skip
            for connection in connections:
                writer.write(connection, stamp_ns, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_a_bag_gives_the_same_samples_as_a_folder_of_the_same_frames(tmp_path: Path) -> None:
    pytest.importorskip("rosbags")
    spec = tiny_spec()
    frames = _moving_frames(10)
    bag = _write_bag(tmp_path / "drive", frames, ("/camera/image_raw",))
    folder = _write_folder(tmp_path / "frames", frames)
    from_bag = list(calibration_batches(bag, spec, max_batches=3))
    from_folder = list(calibration_batches(folder, spec, max_batches=3))
    assert len(from_bag) == len(from_folder) == 3
    for a, b in zip(from_bag, from_folder, strict=True):
        torch.testing.assert_close(a["rgb"], b["rgb"])
        torch.testing.assert_close(a["flow"], b["flow"])


def test_a_bag_with_two_cameras_needs_the_topic(tmp_path: Path) -> None:
    pytest.importorskip("rosbags")
    bag = _write_bag(tmp_path / "drive", _moving_frames(6), ("/left/image_raw", "/right/image_raw"))
    with pytest.raises(ValueError, match="--topic"):
        calibration_batches(bag, tiny_spec())
    assert len(list(calibration_batches(bag, tiny_spec(), max_batches=1, topic="/left/image_raw"))) == 1


def test_calibration_table_round_trips_atomically(tmp_path: Path) -> None:
    cache = CalibrationCache(tmp_path / "calibration" / "entropy-0123.cache")
    assert cache.read() is None  # TensorRT then calibrates
    cache.write(b"TRT-100300-EntropyCalibration2\nrgb: 3c010a14\n")
    assert cache.read() == b"TRT-100300-EntropyCalibration2\nrgb: 3c010a14\n"
    assert os.listdir(tmp_path / "calibration") == ["entropy-0123.cache"]


def test_calibration_table_is_keyed_by_model_source_topic_algorithm_and_frame_count(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "frames", _moving_frames(6))

    def path(**change: object) -> Path:
        args = {"onnx_sha256": "ab" * 32, "source": folder, "topic": None, "algorithm": "entropy", "max_batches": 300}
        return calibration_cache_path(tmp_path / "cache", **{**args, **change})

    base = path()
    assert base == path() and base.parent == tmp_path / "cache" / "calibration"
    others = [path(onnx_sha256="cd" * 32), path(topic="/cam"), path(algorithm="minmax"), path(max_batches=100)]
    assert len({base, *others}) == 5
    (folder / "frame_0002.png").write_bytes((folder / "frame_0001.png").read_bytes())  # the recording changed
    assert path() != base
    with pytest.raises(ValueError, match="calibrator must be one of"):
        path(algorithm="percentile")


def test_feed_serves_the_inputs_tensorrt_names_then_ends() -> None:
    batches = [
        {"rgb": torch.full((1, 3, 2, 2), float(k)), "flow": torch.full((1, 8, 2, 2), -float(k))} for k in range(2)
    ]
    feed = CalibrationFeed(batches)
    assert feed.batch_size == 1
    first = feed.next_batch(["flow", "rgb"])
    assert list(first) == ["flow", "rgb"] and first["rgb"].eq(0).all()
    assert feed.next_batch(["rgb", "flow"])["flow"].eq(-1).all()
    assert feed.next_batch(["rgb", "flow"]) is None
    assert feed.served == 2


def test_feed_refuses_inputs_the_model_does_not_have() -> None:
    feed = CalibrationFeed([{"rgb": torch.zeros(1, 3, 2, 2), "flow": torch.zeros(1, 8, 2, 2)}])
    with pytest.raises(ValueError, match=r"asks for inputs \['images'\]"):
        feed.next_batch(["images"])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA-enabled PyTorch and a GPU")


@needs_cuda
def test_staged_batches_are_device_addresses_of_the_batch_data() -> None:
    staging = DeviceStaging("cuda")
    rgb, flow = torch.randn(1, 3, 4, 4), torch.randn(1, 8, 4, 4)  # on the CPU: staged to the GPU
    feed = CalibrationFeed([{"rgb": rgb, "flow": flow}], staging=staging)
    pointers = feed.next_pointers(["rgb", "flow"])
    held = staging._held
    assert pointers == [held["rgb"].data_ptr(), held["flow"].data_ptr()]
    assert held["rgb"].is_cuda and held["rgb"].is_contiguous()
    torch.testing.assert_close(held["rgb"].cpu(), rgb)
    torch.testing.assert_close(held["flow"].cpu(), flow)
    assert feed.next_pointers(["rgb", "flow"]) is None and feed.error is None


@needs_cuda
def test_feed_keeps_the_error_that_stopped_calibration_for_the_builder(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "frames", _moving_frames(6))
    (folder / "frame_0004.png").write_bytes(b"broken")  # the only sample's last frame: no sample at all
    feed = CalibrationFeed(calibration_batches(folder, tiny_spec(), max_batches=1), staging=DeviceStaging("cuda"))
    assert feed.next_pointers(["rgb", "flow"]) is None  # TensorRT only hears "no more batches"
    assert isinstance(feed.error, ValueError) and "no calibration sample" in str(feed.error)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed")
def test_int8_calibrator_without_tensorrt_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"pip install tensorrt.*|JetPack"):
        make_int8_calibrator("entropy", CalibrationFeed([]), CalibrationCache(tmp_path / "x.cache"))


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs tensorrt")
@pytest.mark.parametrize(
    ("algorithm", "base"), [("entropy", "IInt8EntropyCalibrator2"), ("minmax", "IInt8MinMaxCalibrator")]
)
def test_int8_calibrator_is_tensorrts_class_and_delegates_to_feed_and_table(
    tmp_path: Path, algorithm: str, base: str
) -> None:
    import tensorrt as trt

    cache = CalibrationCache(tmp_path / "table.cache")
    calibrator = make_int8_calibrator(algorithm, CalibrationFeed([]), cache)
    assert isinstance(calibrator, getattr(trt, base))
    assert calibrator.get_batch_size() == 1
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(b"table")
    assert calibrator.read_calibration_cache() == b"table" == cache.read()
