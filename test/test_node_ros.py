"""The wsvs_segmenter node on a real ROS 2 graph (Humble, Jazzy): frames in, labels out with the frames' stamps.

Runs the node in-process (its own rclpy Context, a unique namespace) next to a probe node that publishes camera
frames and records what the segmenter publishes; `ros2 run`-style start-up and shutdown run `main` in a subprocess.
Skipped where ROS 2 is not installed.
"""

from __future__ import annotations

import array
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_spec

from wsvs_ros.labels import DRIVE
from wsvs_ros.messages.conversions import rgb_to_image
from wsvs_ros.model.checkpoint import build_model, save_checkpoint

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("sensor_msgs.msg")
pytest.importorskip("std_msgs.msg")
pytest.importorskip("diagnostic_msgs.msg")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from wsvs_ros.node.config import READY_MESSAGE, StartupError  # noqa: E402
from wsvs_ros.node.segment_node import SegmenterNode  # noqa: E402

HEIGHT, WIDTH = 48, 64
FRAME_ID = "camera_front"
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)  # fmt: skip
FIRST_TEST_SEC = 100  # priming frames are stamped before this; the frames under test from it on


@pytest.fixture
def context() -> Iterator[Context]:
    context = Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


def save_tiny_model(directory: Path, **spec_kw: Any) -> Path:
    torch.manual_seed(0)
    spec = tiny_spec(**spec_kw)
    path = directory / f"tiny_{spec.window}.pt"
    save_checkpoint(path, build_model(spec), spec)
    return path


def stamp_s(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def camera_frame(stamp: float) -> Image:
    """A textured rgb8 frame that moves one pixel per 0.1 s, so consecutive frames have real flow."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8), (WIDTH, HEIGHT))
    sec = int(stamp)
    header = Header(stamp=Time(sec=sec, nanosec=round((stamp - sec) * 1e9)), frame_id=FRAME_ID)
    return rgb_to_image(np.roll(base, shift=round(stamp * 10), axis=1), header, encoding="rgb8", msg_type=Image)


def truncated_frame(stamp: float) -> Image:
    msg = camera_frame(stamp)
    msg.data = array.array("B", bytes(10))  # a 64x48 rgb8 frame needs 9216 bytes
    return msg


def spin_until(executor: SingleThreadedExecutor, condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.05)
    return True


class Graph:
    """The segmenter under test and a probe node that feeds it frames and records its outputs."""

    def __init__(self, context: Context, **params: Any):
        self.namespace = f"/wsvs_test_{uuid.uuid4().hex[:8]}"
        self.camera_topic = f"{self.namespace}/camera/image_raw"
        overrides = [
            Parameter(name, value=value) for name, value in {"camera_topic": self.camera_topic, **params}.items()
        ]
        self.segmenter = SegmenterNode(context=context, namespace=self.namespace, parameter_overrides=overrides)
        self.probe = rclpy.create_node("wsvs_test_probe", context=context, namespace=self.namespace)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.segmenter)
        self.executor.add_node(self.probe)
        self.out = f"{self.namespace}/wsvs_segmenter"
        self.labels: list[Image] = []
        self.road_masks: list[Image] = []
        self.statuses: list[DiagnosticStatus] = []
        self.probe.create_subscription(Image, f"{self.out}/labels", self.labels.append, RELIABLE)
        self.probe.create_subscription(Image, f"{self.out}/mask/road", self.road_masks.append, RELIABLE)
        name = f"{self.out}: segmentation"
        self.probe.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: self.statuses.extend(s for s in m.status if s.name == name), 10
        )
        self.camera = self.probe.create_publisher(Image, self.camera_topic, RELIABLE)

    def close(self) -> None:
        self.segmenter.close()
        self.executor.shutdown()
        self.segmenter.destroy_node()
        self.probe.destroy_node()

    def spin_until(self, condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
        return spin_until(self.executor, condition, timeout_s)

    def prime(self) -> None:
        """Publish early frames until outputs arrive, so no frame under test is lost to discovery."""
        assert self.spin_until(lambda: self.camera.get_subscription_count() > 0), "the segmenter never subscribed"
        for k in range(30):
            self.camera.publish(camera_frame(50 + k / 10))
            if self.spin_until(lambda: bool(self.labels) and bool(self.road_masks), timeout_s=1.0):
                return
        pytest.fail("no labels from the segmenter after 30 priming frames")

    def under_test(self, messages: list[Image]) -> list[Image]:
        return [m for m in messages if m.header.stamp.sec >= FIRST_TEST_SEC]

    def latest_status(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.statuses[-1].values} if self.statuses else {}


@pytest.fixture
def graph_factory(context: Context) -> Iterator[Callable[..., Graph]]:
    graphs: list[Graph] = []

    def make(**params: Any) -> Graph:
        graphs.append(Graph(context, **params))
        return graphs[-1]

    yield make
    for graph in graphs:
        graph.close()


def test_every_frame_gets_labels_with_its_stamp_and_a_truncated_frame_is_skipped_and_counted(
    graph_factory: Callable[..., Graph], tmp_path: Path
) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)), qos_reliability="reliable")
    graph.prime()
    stamps = [FIRST_TEST_SEC + i / 10 for i in range(30)]
    for i, stamp in enumerate(stamps):
        if i == 15:
            graph.camera.publish(truncated_frame(stamp - 0.05))
            assert graph.spin_until(lambda: graph.latest_status().get("skipped_bad") == "1"), graph.latest_status()
        graph.camera.publish(camera_frame(stamp))
        assert graph.spin_until(lambda i=i: len(graph.under_test(graph.labels)) == i + 1), f"no labels for frame {i}"

    labels = graph.under_test(graph.labels)
    assert [stamp_s(m) for m in labels] == pytest.approx(stamps, abs=1e-6)
    for msg in labels:
        assert (msg.header.frame_id, msg.encoding, msg.height, msg.width) == (FRAME_ID, "mono8", HEIGHT, WIDTH)
        assert max(msg.data) < len(DRIVE)

    assert graph.spin_until(lambda: len(graph.under_test(graph.road_masks)) == 30)
    road = DRIVE.by_name("road").id
    for label_msg, mask_msg in zip(labels, graph.under_test(graph.road_masks), strict=True):
        ids = np.frombuffer(label_msg.data, np.uint8)
        assert stamp_s(mask_msg) == stamp_s(label_msg)
        np.testing.assert_array_equal(np.frombuffer(mask_msg.data, np.uint8), np.where(ids == road, 255, 0))

    def settled() -> bool:
        status = graph.latest_status()
        return bool(status) and status["dropped"] == "0" and int(status["published"]) == int(status["received"]) - 1

    assert graph.spin_until(settled), graph.latest_status()
    assert graph.latest_status()["skipped_bad"] == "1"
    # decoding the message is part of the latency the node reports, as in replay and bench
    latency = graph.latest_status()
    assert 0 <= float(latency["latency_decode_mean_ms"]) <= float(latency["latency_total_mean_ms"])
    assert graph.spin_until(lambda: graph.statuses[-1].level == DiagnosticStatus.OK), graph.statuses[-1].message


def test_a_looped_bag_restarts_the_flow_window_and_keeps_segmenting(
    graph_factory: Callable[..., Graph], tmp_path: Path
) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)), qos_reliability="reliable")
    graph.prime()
    stamps = [FIRST_TEST_SEC + i / 10 for i in range(5)] + [FIRST_TEST_SEC + i / 10 for i in range(3)]
    for i, stamp in enumerate(stamps):
        graph.camera.publish(camera_frame(stamp))
        assert graph.spin_until(lambda i=i: len(graph.under_test(graph.labels)) == i + 1), f"no labels for frame {i}"
    assert [stamp_s(m) for m in graph.under_test(graph.labels)] == pytest.approx(stamps, abs=1e-6)
    # One restart for the jump from the priming frames to the frames under test, one for time going backwards.
    assert graph.spin_until(lambda: graph.latest_status().get("resets") == "2"), graph.latest_status()


def test_the_crf_refines_every_frame_when_asked_and_its_latency_is_reported(
    graph_factory: Callable[..., Graph], tmp_path: Path
) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)), qos_reliability="reliable", crf_iterations=2)
    assert graph.segmenter.config.crf_iterations == 2
    graph.prime()
    for i in range(3):
        graph.camera.publish(camera_frame(FIRST_TEST_SEC + i / 10))
        assert graph.spin_until(lambda i=i: len(graph.under_test(graph.labels)) == i + 1), f"no labels for frame {i}"

    def crf_timed() -> bool:
        return float(graph.latest_status().get("latency_crf_mean_ms", "0")) > 0

    assert graph.spin_until(crf_timed), graph.latest_status()


def test_compressed_frames_are_read_from_the_image_transport_topic(
    graph_factory: Callable[..., Graph], tmp_path: Path
) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)), compressed=True, qos_reliability="reliable")
    compressed = graph.probe.create_publisher(CompressedImage, f"{graph.camera_topic}/compressed", RELIABLE)
    assert graph.spin_until(lambda: compressed.get_subscription_count() > 0)
    sent = []
    for k in range(30):
        raw = camera_frame(FIRST_TEST_SEC + k / 10)
        rgb = np.frombuffer(raw.data, np.uint8).reshape(HEIGHT, WIDTH, 3)
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]
        compressed.publish(CompressedImage(header=raw.header, format="jpeg", data=array.array("B", jpeg.tobytes())))
        sent.append(stamp_s(raw))
        if graph.spin_until(lambda: bool(graph.labels), timeout_s=1.0):
            break
    label = graph.labels[0]
    assert (label.height, label.width, label.header.frame_id) == (HEIGHT, WIDTH, FRAME_ID)
    assert any(abs(stamp_s(label) - s) < 1e-6 for s in sent)


def test_frames_arriving_during_inference_are_dropped_for_the_newest_and_counted(
    graph_factory: Callable[..., Graph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)), qos_reliability="reliable")
    graph.prime()
    segmenter = graph.segmenter._segmenter
    push = segmenter.push

    def slow_push(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)  # a model ten times slower than the 50 Hz camera below
        return push(*args, **kwargs)

    monkeypatch.setattr(segmenter, "push", slow_push)
    stamps = [FIRST_TEST_SEC + i / 50 for i in range(20)]
    for stamp in stamps:
        graph.camera.publish(camera_frame(stamp))
        graph.spin_until(lambda: False, timeout_s=0.02)  # deliver each frame to the node while it is busy
    assert graph.spin_until(lambda: any(abs(stamp_s(m) - stamps[-1]) < 1e-6 for m in graph.labels))
    got = [stamp_s(m) for m in graph.under_test(graph.labels)]
    assert got == sorted(got) and len(got) < len(stamps)

    def counted() -> bool:
        status = graph.latest_status()
        return bool(status) and int(status["published"]) + int(status["dropped"]) == int(status["received"])

    assert graph.spin_until(counted), graph.latest_status()
    assert int(graph.latest_status()["dropped"]) > 0


def test_an_inference_failure_stops_the_node_loudly(
    graph_factory: Callable[..., Graph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)), qos_reliability="reliable")
    assert graph.spin_until(lambda: graph.camera.get_subscription_count() > 0)

    def failing_push(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(graph.segmenter._segmenter, "push", failing_push)
    graph.camera.publish(camera_frame(FIRST_TEST_SEC))
    assert graph.spin_until(lambda: graph.segmenter.failed)


def test_a_late_subscriber_gets_the_class_map(graph_factory: Callable[..., Graph], tmp_path: Path) -> None:
    graph = graph_factory(model=str(save_tiny_model(tmp_path)))
    class_maps: list[String] = []
    graph.probe.create_subscription(String, f"{graph.out}/class_map", class_maps.append, LATCHED)
    assert graph.spin_until(lambda: bool(class_maps))
    class_map = json.loads(class_maps[0].data)
    assert class_map["label_set"] == "drive"
    assert [c["name"] for c in class_map["classes"]] == list(DRIVE.names)


def test_closing_publishes_the_frames_a_centered_window_still_holds(
    graph_factory: Callable[..., Graph], tmp_path: Path
) -> None:
    # Reliable and a queue of 10: nothing can be dropped, so all 6 frames are segmented.
    model = save_tiny_model(tmp_path, window="centered", flow_length=4)  # each mask comes 2 frames late
    graph = graph_factory(model=str(model), qos_reliability="reliable", queue_size=10)
    graph.prime()
    stamps = [FIRST_TEST_SEC + i / 10 for i in range(6)]
    for stamp in stamps:
        graph.camera.publish(camera_frame(stamp))
    assert graph.spin_until(lambda: len(graph.under_test(graph.labels)) == 4)
    time.sleep(0.5)
    graph.executor.spin_once(timeout_sec=0.1)
    assert [stamp_s(m) for m in graph.under_test(graph.labels)] == pytest.approx(stamps[:4], abs=1e-6)

    graph.segmenter.close()
    assert graph.spin_until(lambda: len(graph.under_test(graph.labels)) == 6)
    assert [stamp_s(m) for m in graph.under_test(graph.labels)] == pytest.approx(stamps, abs=1e-6)


def test_a_window_that_contradicts_the_model_stops_start_up(context: Context, tmp_path: Path) -> None:
    overrides = [Parameter("model", value=str(save_tiny_model(tmp_path))), Parameter("window", value="centered")]
    with pytest.raises(StartupError, match="window 'centered' contradicts the model"):
        SegmenterNode(context=context, parameter_overrides=overrides)


def test_a_parameter_of_the_wrong_type_stops_start_up_naming_it(context: Context) -> None:
    with pytest.raises(StartupError, match="parameter queue_size must be an integer"):
        SegmenterNode(context=context, parameter_overrides=[Parameter("queue_size", value="two")])


def test_a_misspelled_parameter_stops_start_up_naming_the_one_meant(context: Context) -> None:
    with pytest.raises(StartupError, match=r"unknown parameter 'crf_iteration' \(did you mean 'crf_iterations'\?\)"):
        SegmenterNode(context=context, parameter_overrides=[Parameter("crf_iteration", value=5)])


def test_use_sim_time_is_not_taken_for_an_unknown_parameter(context: Context) -> None:
    overrides = [Parameter("use_sim_time", value=True), Parameter("model", value="/nonexistent/model.pt")]
    with pytest.raises(StartupError, match="model file /nonexistent/model.pt does not exist"):
        SegmenterNode(context=context, parameter_overrides=overrides)


def test_frames_all_over_the_pixel_limit_are_skipped_and_diagnostics_say_every_frame_is_rejected(
    graph_factory: Callable[..., Graph],
) -> None:
    graph = graph_factory(max_image_pixels=WIDTH * HEIGHT - 1, qos_reliability="reliable", queue_size=10)
    assert graph.spin_until(lambda: graph.camera.get_subscription_count() > 0)
    for k in range(3):
        graph.camera.publish(camera_frame(FIRST_TEST_SEC + k / 10))
    assert graph.spin_until(lambda: graph.latest_status().get("skipped_bad") == "3"), graph.latest_status()
    assert graph.spin_until(lambda: graph.statuses[-1].level == DiagnosticStatus.ERROR), graph.statuses[-1].message
    message = graph.statuses[-1].message
    assert message.startswith("rejecting every frame: ") and "warming" not in message, message
    assert f"declares {WIDTH}x{HEIGHT}" in message and "max_image_pixels" in message, message
    assert not graph.labels


def run_node(*ros_args: str) -> subprocess.Popen[str]:
    """`ros2 run wsvs_ros segment_node --ros-args ...`, as a child process of this test."""
    return subprocess.Popen(
        [sys.executable, "-m", "wsvs_ros.node.segment_node", "--ros-args", *ros_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "0", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ros_args", "says"),
    [
        (("-p", "model:=/nonexistent/model.pt"), "model file /nonexistent/model.pt does not exist"),
        (("-p", "queue_size:=two"), "parameter queue_size must be an integer"),
        (("-p", "backend:=trt"), "backend must be one of torch, onnxruntime, tensorrt"),
        (("-p", "input_width:=512"), "unknown parameter 'input_width'"),
    ],
)
def test_a_bad_configuration_exits_non_zero_with_one_error_line(ros_args: tuple[str, ...], says: str) -> None:
    process = run_node(*ros_args)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert says in output and "Traceback" not in output, output
    assert [line for line in output.splitlines() if "[ERROR]" in line] == [
        line for line in output.splitlines() if says in line
    ]


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["/**", "wsvs_segmenter"])
def test_a_typo_in_a_params_file_stops_start_up_naming_the_parameter_meant(tmp_path: Path, scope: str) -> None:
    params = tmp_path / "segment.yaml"
    params.write_text(f"{scope}:\n  ros__parameters:\n    modle: /data/model.pt\n    use_sim_time: true\n")
    process = run_node("--params-file", str(params))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "unknown parameter 'modle' (did you mean 'model'?)" in errors[0], output
    assert "Traceback" not in output, output


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_publish_a_centered_window_tail_and_exit_0(
    context: Context, tmp_path: Path, sig: signal.Signals
) -> None:
    namespace = f"/wsvs_test_{uuid.uuid4().hex[:8]}"
    model = save_tiny_model(tmp_path, window="centered", flow_length=4)  # each mask comes 2 frames late
    process = run_node(
        "-r", f"__ns:={namespace}", "-p", f"model:={model}", "-p", f"camera_topic:={namespace}/image_raw",
        "-p", "qos_reliability:=reliable", "-p", "queue_size:=10",
    )  # fmt: skip
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if READY_MESSAGE in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    probe = rclpy.create_node("wsvs_test_probe", context=context, namespace=namespace)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    labels: list[Image] = []
    probe.create_subscription(Image, f"{namespace}/wsvs_segmenter/labels", labels.append, RELIABLE)
    camera = probe.create_publisher(Image, f"{namespace}/image_raw", RELIABLE)
    try:
        assert spin_until(executor, lambda: ready.is_set() or process.poll() is not None, 120), "".join(output)
        assert process.poll() is None, "".join(output)
        assert spin_until(executor, lambda: camera.get_subscription_count() > 0)
        for k in range(30):  # priming: until the first (2 frames late) label shows the outputs are matched
            camera.publish(camera_frame(50 + k / 10))
            if spin_until(executor, lambda: bool(labels), timeout_s=1.0):
                break
        stamps = [FIRST_TEST_SEC + i / 10 for i in range(6)]
        for stamp in stamps:
            camera.publish(camera_frame(stamp))

        def under_test() -> list[float]:
            return [stamp_s(m) for m in labels if m.header.stamp.sec >= FIRST_TEST_SEC]

        assert spin_until(executor, lambda: len(under_test()) == 4), "".join(output)
        process.send_signal(sig)
        assert spin_until(executor, lambda: len(under_test()) == 6, 30), "".join(output)
        assert under_test() == pytest.approx(stamps, abs=1e-6)
        assert process.wait(timeout=30) == 0, "".join(output)
    finally:
        if process.poll() is None:
            process.kill()
        executor.shutdown()
        probe.destroy_node()
    reader.join(timeout=5)
    assert "Traceback" not in "".join(output), "".join(output)
