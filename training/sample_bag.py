"""The sample drive shipped for `wsvs demo`: one synthetic clip as a rosbag2 (mcap) of JPEG CompressedImages.

    python -m wsvs_training.sample_bag --out wsvs_ros/data/sample_drive --seed 8 --frames 40 --size 512x256

Made once and committed (wsvs_ros never imports training); the label maps are not in the bag.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from wsvs_training.synth.drives import parse_size, render_clip
from wsvs_training.synth.scene import FPS

TOPIC = "/camera/image_raw/compressed"
FRAME_ID = "camera_front"
START_NS = 1_700_000_000 * 10**9  # a plausible wall-clock start, so stamps look like a real drive log's


def write_sample_bag(out: Path, *, seed: int, frames: int, size: tuple[int, int], quality: int = 90) -> Path:
    """Render a clip and write it as `out/` (a rosbag2 folder with one mcap file). Returns `out`.

    Raises:
        FileExistsError: `out` exists (the bag is written whole, never appended to).
    """
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msg_type = typestore.types["sensor_msgs/msg/CompressedImage"]
    header_type, time_type = typestore.types["std_msgs/msg/Header"], typestore.types["builtin_interfaces/msg/Time"]
    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(TOPIC, msg_type.__msgtype__, typestore=typestore)
        for i, (rgb, _) in enumerate(render_clip(seed, frames=frames, size=size)):
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG")
            stamp_ns = START_NS + round(i * 1e9 / FPS)
            header = header_type(stamp=time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=FRAME_ID)
            msg = msg_type(header=header, format="jpeg", data=np.frombuffer(jpeg.tobytes(), np.uint8))
            writer.write(connection, stamp_ns, typestore.serialize_cdr(msg, msg_type.__msgtype__))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsvs_training.sample_bag", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=parse_size, default=(512, 256), help="WIDTHxHEIGHT")
    parser.add_argument("--force", action="store_true", help="replace --out")
    args = parser.parse_args(argv)
    w, h = args.size
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    path = write_sample_bag(args.out, seed=args.seed, frames=args.frames, size=(w, h))
    print(f"wrote {path} ({args.frames} frames, {w}x{h}, {FPS} Hz, topic {TOPIC})")
    return 0
