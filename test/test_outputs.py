"""What a segmented frame publishes: labels, overlay and per-class masks, each with the input header."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from wsvs_ros.labels import DRIVE
from wsvs_ros.messages.conversions import ImageDecodeError, decode_frame
from wsvs_ros.messages.outputs import class_map_json, mask_topic, output_messages, resolve_classes
from wsvs_ros.pipeline import SegmentResult

TS = get_typestore(Stores.ROS2_HUMBLE)
Image, Header, Time = (
    TS.types["sensor_msgs/msg/Image"],
    TS.types["std_msgs/msg/Header"],
    TS.types["builtin_interfaces/msg/Time"],
)


def result(labels: np.ndarray) -> SegmentResult:
    return SegmentResult(labels, np.ones(labels.shape, np.float32), 1.5, False, {"total": 1.0})


def test_outputs_carry_the_input_header_and_one_mask_per_requested_class() -> None:
    labels = np.array([[0, 1, 2], [2, 2, 7]], np.uint8)
    rgb = np.full((2, 3, 3), 200, np.uint8)
    header = Header(stamp=Time(sec=12, nanosec=34), frame_id="camera_front")
    ids = resolve_classes(DRIVE, ["road", "vegetation"])
    msgs = output_messages(result(labels), rgb, header, label_set=DRIVE, mask_classes=ids, image_type=Image)
    assert set(msgs) == {"labels", "overlay", "mask/road", "mask/vegetation"}
    for msg in msgs.values():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 34, "camera_front")
    assert msgs["labels"].encoding == "mono8"
    np.testing.assert_array_equal(msgs["labels"].data.reshape(2, 3), labels)
    np.testing.assert_array_equal(msgs["mask/vegetation"].data.reshape(2, 3), (labels == 2) * 255)
    assert msgs["overlay"].encoding == "bgr8"


def test_unknown_publish_class_is_refused_listing_the_model_classes() -> None:
    with pytest.raises(ValueError, match="publish_classes: label set 'drive' has no class 'lava'.*sidewalk"):
        resolve_classes(DRIVE, ["road", "lava"])


def test_mask_topics_have_no_spaces() -> None:
    assert mask_topic("traffic light") == "mask/traffic_light"


def test_class_map_lists_every_class_with_its_colour() -> None:
    data = json.loads(class_map_json(DRIVE))
    assert data["label_set"] == "drive" and len(data["classes"]) == len(DRIVE)
    assert data["classes"][0] == {"id": 0, "name": "road", "color_rgb": [128, 64, 128]}


def test_a_message_without_image_fields_is_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="not an image message"):
        decode_frame(object())
