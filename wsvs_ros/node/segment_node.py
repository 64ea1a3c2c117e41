"""The `wsvs_segmenter` ROS 2 node: camera frames in; class ids, per-class masks, an overlay and diagnostics out.

    ros2 run wsvs_ros segment_node --ros-args -p model:=/path/model.pt -p camera_topic:=/camera/image_raw
    ros2 launch wsvs_ros segment.launch.py camera_topic:=/camera/image_raw model:=/path/model.pt

Parameters: `wsvs_ros.node.config.PARAMETERS` (documented in config/segment.yaml), read once at start-up.
Topics, relative to the node: `~/labels` (mono8 class ids), `~/overlay` (bgr8), `~/mask/<class>` (mono8 0/255),
`~/class_map` (std_msgs/String JSON, transient local: late subscribers get it), and `/diagnostics` once a second.
Every output carries the input frame's header (stamp and frame_id), so use_sim_time and bag replays need nothing
special; time going backwards (a looped bag) restarts the flow window in the Segmenter.

Threading model:
- The main thread spins a single-threaded executor: the subscription callback and the diagnostics timer. The
  callback only puts the message into a `FrameSlot` (newest wins; a replaced unprocessed frame counts as dropped),
  so it never waits for inference and the middleware's queue never backs up behind a slow model.
- One worker thread takes messages from the slot, decodes them, runs the `Segmenter` and publishes the results.
  rclpy publishers may be used from any thread. Only the worker touches the Segmenter until `close()` has joined it.
- `RunStats` is written by the worker and read by the timer under `_stats_lock`; the slot counts received and
  dropped frames under its own lock.
- Shutdown: `main` installs SIGINT/SIGTERM handlers that only set a flag (rclpy's own handlers would shut the
  context down before the node could publish its last results). The spin loop sees the flag within 0.2 s; `close()`
  stops the worker and publishes the tail a centered window still holds; then the node is destroyed and rclpy shut
  down. A configuration or model problem at start-up is one ERROR line naming the parameter, and exit status 1.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from typing import Any


def _interrupted_while_importing(signum: int, frame: object) -> None:
    print("wsvs_segmenter: interrupted while starting; exiting", file=sys.stderr)
    raise SystemExit(0)


# PyTorch, OpenCV and rclpy take seconds to import; Ctrl-C meanwhile ends start-up quietly, as it does while the
# model loads, instead of with a traceback from inside the import. Python's own handler is back after the imports.
# ruff: noqa: E402 (the imports below come after installing the handler)
_IMPORT_SIGINT = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is (
    signal.default_int_handler
)
if _IMPORT_SIGINT:
    signal.signal(signal.SIGINT, _interrupted_while_importing)

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.exceptions import InvalidTopicNameException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from wsvs_ros.messages.conversions import ImageDecodeError, decode_frame, stamp_of, stamp_to_seconds
from wsvs_ros.messages.outputs import (
    CLASS_MAP_TOPIC,
    LABELS_TOPIC,
    NODE_NAME,
    OVERLAY_TOPIC,
    class_map_json,
    mask_topic,
    output_messages,
)
from wsvs_ros.node.config import (
    PARAMETERS,
    READY_MESSAGE,
    NodeConfig,
    ParamInfo,
    ParamValue,
    StartupError,
    check_known,
    load_model,
)
from wsvs_ros.node.diagnostics import DiagnosticsReporter, Level
from wsvs_ros.node.frame_slot import FrameSlot
from wsvs_ros.pipeline import SegmentResult
from wsvs_ros.stats import RunStats, with_decode

if _IMPORT_SIGINT:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_LEVELS = {Level.OK: DiagnosticStatus.OK, Level.WARN: DiagnosticStatus.WARN, Level.ERROR: DiagnosticStatus.ERROR}
_SPIN_PERIOD_S = 0.2  # how long a stop request can wait for the spin loop to notice it
_LATENCY_WINDOW = 100  # results the diagnostics' fps and latency figures are taken over
_TAIL_ACK_TIMEOUT_S = 1.0  # at shutdown, well inside launch's 5 s between SIGINT and SIGTERM


class SegmenterNode(Node):
    """Segments every frame it can keep up with; see the module docstring for topics and threading.

    Args:
        **node_options: passed to `rclpy.node.Node` (context, namespace, parameter_overrides, ...).

    Raises:
        StartupError: a parameter or the model file is wrong; the message names the parameter and the fix.
    """

    def __init__(self, **node_options: Any) -> None:
        # Every given parameter is declared, so that `_read_config` sees a misspelled one and refuses it.
        node_options.setdefault("automatically_declare_parameters_from_overrides", True)
        super().__init__(NODE_NAME, **node_options)
        try:
            self._start()
        except BaseException:
            self.destroy_node()
            raise

    def _start(self) -> None:
        self.config = self._read_config()
        model = load_model(self.config)
        self._segmenter = model.segmenter
        self._label_set = model.label_set
        self._mask_class_ids = model.mask_class_ids
        self.get_logger().info(f"warming up {model.path} ({self.config.backend} on {self.config.device})")
        self._segmenter.warm_up()  # before subscribing, so the first frame is not slow

        self._slot: FrameSlot[Image | CompressedImage] = FrameSlot(self.config.queue_size)
        self._stats = RunStats(window=_LATENCY_WINDOW)
        self._stats_lock = threading.Lock()
        self._warming = True  # no result yet
        self._last_skip_reason: str | None = None  # why the latest bad frame was skipped
        self._diagnostics = DiagnosticsReporter()
        self._failure: Exception | None = None
        self._closed = False

        outputs = [LABELS_TOPIC]
        if self.config.publish_overlay:
            outputs.append(OVERLAY_TOPIC)
        outputs += [mask_topic(self._label_set.by_id(i).name) for i in self._mask_class_ids]
        output_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )  # fmt: skip
        self._image_publishers = {topic: self.create_publisher(Image, f"~/{topic}", output_qos) for topic in outputs}
        latched = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )  # fmt: skip
        self._class_map_publisher = self.create_publisher(String, f"~/{CLASS_MAP_TOPIC}", latched)
        self._class_map_publisher.publish(String(data=class_map_json(self._label_set)))
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        msg_type = CompressedImage if self.config.compressed else Image
        try:
            self.create_subscription(msg_type, self.config.input_topic, self._on_frame, _camera_qos(self.config))
        except InvalidTopicNameException as e:
            raise StartupError(f"camera_topic: {self.config.input_topic!r} is not a valid ROS topic name ({e})") from e
        # Steady time: health is reported every real second, also while a replayed bag (sim time) is paused.
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        # Last, so a failure above leaves no thread behind; no frame arrives before the executor spins anyway.
        self._worker = threading.Thread(target=self._work, name=f"{NODE_NAME}_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{READY_MESSAGE} {self.config.input_topic} ({msg_type.__name__}) -> "
            f"{', '.join(f'~/{topic}' for topic in outputs)}"
        )

    def _read_config(self) -> NodeConfig:
        """Declare every parameter (typed, described, read-only: it is read once) and validate them together.

        A parameter given (`-p`, a params file under the node's name or `/**`) that the node does not take stops it.
        """
        try:
            check_known(self.get_parameters_by_prefix(""))
        except ValueError as e:
            raise StartupError(str(e)) from None
        values: dict[str, Any] = {}
        for param in PARAMETERS:
            descriptor = ParameterDescriptor(
                type=_ros_type(param.default), description=param.description, read_only=True
            )
            if self.has_parameter(param.name):
                # Declared untyped from its override; declared again typed, the override's value is checked.
                self.undeclare_parameter(param.name)
            try:
                values[param.name] = self.declare_parameter(param.name, _ros_value(param.default), descriptor).value
            except ParameterException as e:
                raise StartupError(f"parameter {param.name} must be {_type_name(param)}: {e}") from e
        try:
            return NodeConfig.from_params(values)
        except ValueError as e:
            raise StartupError(str(e)) from e

    @property
    def failed(self) -> bool:
        """The worker stopped on an unexpected error (logged); the node publishes nothing more."""
        return self._failure is not None

    def close(self) -> None:
        """Stop the worker, then publish the results the segmenter still holds (a centered window's last L/2 frames).

        Call before `destroy_node()`; a second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._slot.close()
        self._worker.join()
        if self._failure is not None:
            return
        results = self._segmenter.flush()
        if results and self.context.ok():
            self._publish(results)
            # The process may exit right after this; give reliable subscribers (a recorder) the tail first.
            deadline = time.monotonic() + _TAIL_ACK_TIMEOUT_S
            for publisher in self._image_publishers.values():
                publisher.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))
        elif results:
            self.get_logger().warning(f"ROS shut down before the last {len(results)} result(s) could be published")

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        """The subscription callback: hand the frame over and return at once (the slot counts any drop)."""
        self._slot.put(msg)

    def _work(self) -> None:
        while (msg := self._slot.take()) is not None:
            try:
                self._segment(msg)
            except Exception as e:  # a bug or a failing device: stop loudly rather than go silent
                if not self.context.ok():
                    return  # ROS was shut down under us (publish fails then): a normal end, not a failure
                self._failure = e
                self.get_logger().error(f"segmentation failed; stopping the node:\n{traceback.format_exc()}")
                return

    def _segment(self, msg: Image | CompressedImage) -> None:
        decode_start = time.perf_counter()
        try:
            rgb = decode_frame(msg, max_pixels=self.config.max_image_pixels)
        except ImageDecodeError as e:
            with self._stats_lock:
                self._stats.skipped_bad += 1
                self._last_skip_reason = str(e)
            self.get_logger().warning(f"skipped a frame from {self.config.input_topic}: {e}", throttle_duration_sec=5.0)
            return
        decode_ms = (time.perf_counter() - decode_start) * 1e3
        stamp = stamp_to_seconds(stamp_of(msg))
        self._publish(self._segmenter.push(rgb, stamp, payload=(msg.header, rgb)), decode_ms)

    def _publish(self, results: list[SegmentResult], decode_ms: float = 0.0) -> None:
        for i, result in enumerate(results):
            header, rgb = result.payload
            messages = output_messages(
                result, rgb, header, label_set=self._label_set, mask_classes=self._mask_class_ids,
                image_type=Image, with_overlay=self.config.publish_overlay,
            )  # fmt: skip
            for topic, message in messages.items():
                self._image_publishers[topic].publish(message)
            with self._stats_lock:
                self._stats.add_result(with_decode(result.timings_ms, decode_ms if i == 0 else 0.0))
                self._warming = result.warming

    def _publish_diagnostics(self) -> None:
        with self._stats_lock:
            self._stats.received, self._stats.dropped = self._slot.received, self._slot.dropped
            report = self._diagnostics.report(
                self._stats, flows_computed=self._segmenter.flows_computed, resets=self._segmenter.resets,
                warming=self._warming, last_skip_reason=self._last_skip_reason,
            )  # fmt: skip
        status = DiagnosticStatus(
            level=_LEVELS[report.level],
            name=f"{self.get_fully_qualified_name()}: segmentation",
            message=report.message,
            hardware_id=self.config.device,
            values=[KeyValue(key=key, value=value) for key, value in report.values],
        )
        stamp = self.get_clock().now().to_msg()  # ROS time: sim time during a replay, like the data
        self._diagnostics_publisher.publish(DiagnosticArray(header=Header(stamp=stamp), status=[status]))


def main(args: list[str] | None = None) -> int:
    """`ros2 run wsvs_ros segment_node [--ros-args -p name:=value ...]`; returns the exit status."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        try:
            # Python's own handlers stay in place while the model loads (it may build a TensorRT engine for
            # minutes): Ctrl-C raises KeyboardInterrupt and SIGTERM ends the process, as a user expects.
            node = SegmenterNode()
        except StartupError as e:
            get_logger(NODE_NAME).error(str(e))
            return 1
        except KeyboardInterrupt:
            return 0
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return _run(node, stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        rclpy.try_shutdown()


def _run(node: SegmenterNode, stop: threading.Event) -> int:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and not node.failed:
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except ExternalShutdownException:
        pass  # someone else shut ROS down; close() then has nowhere to publish and says so
    finally:
        node.close()
        node.destroy_node()
    return 1 if node.failed else 0


def _camera_qos(config: NodeConfig) -> QoSProfile:
    """The sensor-data profile (best effort, volatile, keep last) with `queue_size` and the chosen reliability."""
    reliability = ReliabilityPolicy.RELIABLE if config.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=config.queue_size, reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )  # fmt: skip


def _ros_type(default: ParamValue) -> int:
    if isinstance(default, bool):  # before int: a bool is an int in Python
        return ParameterType.PARAMETER_BOOL
    if isinstance(default, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(default, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(default, str):
        return ParameterType.PARAMETER_STRING
    return ParameterType.PARAMETER_STRING_ARRAY


def _ros_value(default: ParamValue) -> Any:
    return list(default) if isinstance(default, tuple) else default


def _type_name(param: ParamInfo) -> str:
    names = {
        ParameterType.PARAMETER_BOOL: "a bool (true or false)",
        ParameterType.PARAMETER_INTEGER: "an integer",
        ParameterType.PARAMETER_DOUBLE: "a double, written with a decimal point (e.g. 1.0)",
        ParameterType.PARAMETER_STRING: "a string",
        ParameterType.PARAMETER_STRING_ARRAY: "a list of strings",
    }
    return names[_ros_type(param.default)]


if __name__ == "__main__":
    sys.exit(main())
