"""launch/segment.launch.py under launch_testing: the launched node segments frames published on its camera topic,
with their stamps, and exits with status 0 when the launch shuts down. Skipped where ROS 2 is not installed.

Run by `colcon test` (pytest with launch_testing's plugin) or `launch_test test/test_launch.py` on an installed
workspace: the launch file, its default params_file and the `segment_node` executable come from the install space.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from wsvs_ros.messages.conversions import rgb_to_image
from wsvs_ros.model.checkpoint import build_model, save_checkpoint

# `launch_test test/test_launch.py` loads this file without test/ on the import path (pytest puts it there).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import tiny_spec

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch_ros")
pytest.importorskip("launch_testing")
pytest.importorskip("ament_index_python")
pytest.importorskip("sensor_msgs.msg")

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description import LaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

# One namespace per run, so that parallel runs on one ROS domain do not see each other's topics.
NAMESPACE = f"wsvs_launch_test_{uuid.uuid4().hex[:8]}"
CAMERA_TOPIC = f"/{NAMESPACE}/camera/image_raw"
LABELS_TOPIC = f"/{NAMESPACE}/wsvs_segmenter/labels"
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
FRAMES_WANTED = 5


@pytest.mark.launch_test
def generate_test_description() -> tuple[LaunchDescription, dict[str, object]]:
    model_dir = Path(tempfile.mkdtemp(prefix="wsvs_launch_test_"))
    torch.manual_seed(0)
    spec = tiny_spec()
    model = model_dir / "tiny.pt"
    save_checkpoint(model, build_model(spec), spec)
    launch_file = Path(get_package_share_directory("wsvs_ros")) / "launch" / "segment.launch.py"
    segment = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(launch_file)),
        launch_arguments={
            "model": str(model),
            "camera_topic": CAMERA_TOPIC,
            "namespace": NAMESPACE,
            "device": "cpu",
        }.items(),
    )
    return LaunchDescription([segment, launch_testing.actions.ReadyToTest()]), {"model_dir": model_dir}


def camera_frame(stamp: float) -> Image:
    sec = int(stamp)
    header = Header(stamp=Time(sec=sec, nanosec=round((stamp - sec) * 1e9)), frame_id="camera")
    return rgb_to_image(np.full((48, 64, 3), 128, np.uint8), header, encoding="rgb8", msg_type=Image)


class TestSegmentLaunch(unittest.TestCase):
    """Active tests: run while the launched node is up."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.context = Context()
        rclpy.init(context=cls.context)
        cls.probe = rclpy.create_node("wsvs_launch_test_probe", context=cls.context)
        cls.executor = SingleThreadedExecutor(context=cls.context)
        cls.executor.add_node(cls.probe)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.executor.shutdown()
        cls.probe.destroy_node()
        cls.context.try_shutdown()

    def test_the_launched_node_segments_camera_frames_with_their_stamps(self) -> None:
        labels: list[Image] = []
        self.probe.create_subscription(Image, LABELS_TOPIC, labels.append, RELIABLE)
        camera = self.probe.create_publisher(Image, CAMERA_TOPIC, RELIABLE)
        # The node subscribes once its model is loaded and warmed up (PyTorch's import alone takes seconds).
        deadline = time.monotonic() + 120
        while camera.get_subscription_count() == 0:
            self.assertLess(time.monotonic(), deadline, f"nothing subscribed to {CAMERA_TOPIC}")
            self.executor.spin_once(timeout_sec=0.1)
        published: list[float] = []
        deadline = time.monotonic() + 60
        # The node subscribes best effort with newest-wins dropping (the shipped params_file), so frames are
        # published at 5 Hz until enough labels are back, rather than counted one for one.
        while len(labels) < FRAMES_WANTED and time.monotonic() < deadline:
            published.append(100 + len(published) / 10)
            camera.publish(camera_frame(published[-1]))
            period_end = time.monotonic() + 0.2
            while time.monotonic() < period_end:
                self.executor.spin_once(timeout_sec=0.05)

        self.assertGreaterEqual(len(labels), FRAMES_WANTED, f"{len(labels)} labels for {len(published)} frames")
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in labels]
        self.assertEqual(stamps, sorted(stamps))
        for stamp in stamps:
            self.assertTrue(any(abs(stamp - p) < 1e-6 for p in published), f"label stamp {stamp} was never sent")
        for msg in labels:
            self.assertEqual((msg.encoding, msg.height, msg.width, msg.header.frame_id), ("mono8", 48, 64, "camera"))


@launch_testing.post_shutdown_test()
class TestSegmentLaunchShutdown(unittest.TestCase):
    """Post-shutdown tests: run after the launch has stopped every process."""

    @classmethod
    def tearDownClass(cls, model_dir: Path) -> None:
        shutil.rmtree(model_dir, ignore_errors=True)

    def test_every_process_exited_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
