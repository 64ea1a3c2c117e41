"""Reading camera frames from recorded bags with the `rosbags` library (no ROS needed).

Offline replay (`wsvs replay`) and INT8 calibration (`wsvs build-engine --int8 --calib BAG`) both read bags
through this module, so a bag's frames are decoded the same way wherever they are used: rosbag2 (sqlite3 or mcap, a
directory or a bare `.db3`/`.mcap` file) and ROS 1 `.bag` files; bags without message definitions are read as ROS 2
Humble's types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

try:
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.interfaces import Connection
    from rosbags.typesys import Stores, get_typestore
    from rosbags.typesys.store import Typestore
except ImportError as e:  # only bag reading needs rosbags; the node and the core run without it
    raise ImportError(f"reading bags needs the rosbags library ({e}); install it: pip install 'rosbags>=0.11'") from e

from wsvs_ros.messages.conversions import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    decode_frame,
    frame_id_of,
    stamp_of,
    stamp_to_seconds,
)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def select_topic(topics: Mapping[str, str | None], topic: str | None) -> str:
    """The camera topic to replay: `topic` when given and present, else the bag's only image topic.

    Args:
        topics: {topic name: message type} of the bag (None where a topic mixes types).
        topic: what the user asked for, or None.

    Raises:
        ValueError: `topic` is not in the bag (the message lists the bag's topics), or `topic` is None and the bag
            has no image topic or several (the message lists them and asks for --topic).
    """
    if topic is not None:
        if topic not in topics:
            listed = "\n".join(f"  {name} ({msgtype})" for name, msgtype in sorted(topics.items())) or "  (none)"
            raise ValueError(f"topic {topic} is not in the bag; pass --topic with one of its topics:\n{listed}")
        return topic
    candidates = sorted(name for name, msgtype in topics.items() if msgtype in IMAGE_TYPES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        listed = ", ".join(f"{name} ({msgtype})" for name, msgtype in sorted(topics.items())) or "none"
        raise ValueError(f"the bag has no sensor_msgs/Image or CompressedImage topic to segment; its topics: {listed}")
    listed = "\n".join(f"  {name} ({topics[name]})" for name in candidates)
    raise ValueError(f"the bag has {len(candidates)} image topics; choose one with --topic:\n{listed}")


class BagFrameReader:
    """Raw bag message -> (RGB frame, Humble header, stamp in seconds), whatever the bag's ROS distribution.

    `typestore` is the one of `open_bag` (the headers are built from its types); frames of more than `max_pixels`
    pixels are refused before they are decoded.
    """

    def __init__(self, reader: AnyReader, typestore: Typestore, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.reader = reader
        self.max_pixels = max_pixels
        self.header_type = typestore.types["std_msgs/msg/Header"]
        self.time_type = typestore.types["builtin_interfaces/msg/Time"]

    def read(self, connection: Connection, raw: bytes) -> tuple[np.ndarray, Any, float]:
        """Raises ImageDecodeError for a message that does not deserialize or holds no decodable image."""
        try:
            msg: Any = self.reader.deserialize(raw, connection.msgtype)  # an Image or CompressedImage class
        except AnyReaderError as e:
            raise ImageDecodeError(f"the message does not deserialize as {connection.msgtype} ({e})") from e
        rgb = decode_frame(msg, max_pixels=self.max_pixels)
        sec, nanosec = stamp_of(msg)
        # The outputs are Humble messages, so the header is rebuilt (a ROS 1 header also has `seq`).
        header = self.header_type(stamp=self.time_type(sec=sec, nanosec=nanosec), frame_id=frame_id_of(msg))
        return rgb, header, stamp_to_seconds((sec, nanosec))


def humble_typestore() -> Typestore:
    """The message types replay writes and reads bags without definitions as (ROS 2 Humble's)."""
    return get_typestore(Stores.ROS2_HUMBLE)


@contextmanager
def open_bag(bag: Path, typestore: Typestore) -> Iterator[AnyReader]:
    """An open AnyReader on `bag`; rosbags' errors become a ValueError naming the bag and the formats it reads.

    `typestore` (`humble_typestore()` for replay and INT8 calibration) reads bags without definitions.
    """
    try:
        reader = AnyReader([bag], default_typestore=typestore)  # bags without definitions are read as Humble's
        reader.open()
    except AnyReaderError as e:
        raise ValueError(
            f"cannot read bag {bag}: {e}; expected a rosbag2 directory (sqlite3 or mcap), a .mcap or .db3 file, "
            "or a ROS 1 .bag file"
        ) from e
    try:
        yield reader
    finally:
        reader.close()
