"""What one segmented frame publishes, as ROS messages; shared by the live node and offline replay.

Topics are relative to the node (`~/labels` live, `/wsvs_segmenter/labels` in a replayed bag).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from wsvs_ros.labels import LabelSet
from wsvs_ros.pipeline import SegmentResult
from wsvs_ros.ros_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    labels_to_image,
    mask_to_image,
    overlay,
    rgb_to_image,
)

DEFAULT_MASK_CLASSES = ("road", "sidewalk", "vegetation")  # classes that get a mask topic unless told otherwise
DEFAULT_MAX_GAP_S = 0.5  # frame gap (seconds) that restarts the flow window: flow across a longer gap is meaningless
NODE_NAME = "wsvs_segmenter"  # the live node's name; replayed topics sit where the node publishes them
LABELS_TOPIC = "labels"
OVERLAY_TOPIC = "overlay"
CLASS_MAP_TOPIC = "class_map"


def decode_frame(msg: Any, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """`sensor_msgs/Image` or `sensor_msgs/CompressedImage` (told apart by its `format` field) -> (H, W, 3) RGB.

    Raises:
        ImageDecodeError: anything wrong with the message, a frame of more than `max_pixels` pixels included.
    """
    try:
        if hasattr(msg, "format"):
            return compressed_to_rgb(msg, max_pixels=max_pixels)
        return image_to_rgb(msg, max_pixels=max_pixels)
    except ImageDecodeError:
        raise
    except Exception as e:  # a message missing fields altogether is as bad as bad pixels
        raise ImageDecodeError(f"not an image message ({type(e).__name__}: {e})") from e


def mask_topic(class_name: str) -> str:
    """`mask/<class>`, with spaces made underscores ("traffic light" -> "mask/traffic_light")."""
    return "mask/" + class_name.replace(" ", "_")


def resolve_classes(label_set: LabelSet, names: Sequence[str]) -> tuple[int, ...]:
    """Class ids of `names` (aliases allowed). Raises ValueError naming the unknown class and the set's classes."""
    ids = []
    for name in names:
        try:
            ids.append(label_set.by_name(name).id)
        except KeyError as e:
            raise ValueError(f"publish_classes: {e.args[0]}") from None
    return tuple(ids)


def output_messages(
    result: SegmentResult,
    rgb: np.ndarray,
    header: Any,
    *,
    label_set: LabelSet,
    mask_classes: Sequence[int],
    image_type: Callable[..., Any],
    with_overlay: bool = True,
) -> dict[str, Any]:
    """{relative topic: sensor_msgs/Image} for one result, each with a copy of the input `header`.

    Args:
        rgb: the camera image the result is for (H, W, 3), used for the overlay.
        mask_classes: class ids that get a mono8 0/255 `mask/<class>` topic.
        image_type: the Image class to build (rclpy's `sensor_msgs.msg.Image`, or rosbags' class offline).
    """
    labels = result.labels
    out = {LABELS_TOPIC: labels_to_image(labels, header, msg_type=image_type)}
    if with_overlay:
        out[OVERLAY_TOPIC] = rgb_to_image(overlay(rgb, labels, label_set), header, msg_type=image_type)
    for class_id in mask_classes:
        out[mask_topic(label_set.by_id(class_id).name)] = mask_to_image(labels == class_id, header, msg_type=image_type)
    return out


def class_map_json(label_set: LabelSet) -> str:
    """The label set as JSON, published once (transient local) so a late subscriber can decode `labels`."""
    return json.dumps(
        {
            "label_set": label_set.name,
            "void_id": 255,
            "classes": [{"id": c.id, "name": c.name, "color_rgb": list(c.color)} for c in label_set.classes],
        }
    )
