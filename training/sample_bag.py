"""The sample drive shipped for `wsvs demo`: a real dashcam clip as a rosbag2 (mcap) of JPEG CompressedImages.

    python -m wsvs_training.sample_bag --video ../shared/data/video/udacity_lanelines_solidWhiteRight.mp4 \
        --out wsvs_ros/data/sample_drive --size 480x270 --quality 85

Made once and committed (wsvs_ros never imports training), with the video's MIT notice beside it
(`wsvs_ros/data/sample_drive/LICENSE`). Stamps follow the video's frame rate from a fixed start.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from wsvs_training.synth.drives import parse_size

TOPIC = "/camera/image_raw/compressed"
FRAME_ID = "camera_front"
START_NS = 1_700_000_000 * 10**9  # a plausible wall-clock start, so stamps look like a real drive log's


def video_frames(video: Path, size: tuple[int, int]) -> tuple[float, Iterator[np.ndarray]]:
    """(frames per second, BGR frames resized to `size` = (width, height) with INTER_AREA) of a video file.

    Raises:
        FileNotFoundError: OpenCV cannot open the video.
    """
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise FileNotFoundError(f"OpenCV cannot open video {video}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        finally:
            capture.release()

    return fps, frames()


def write_sample_bag(out: Path, video: Path, *, size: tuple[int, int], quality: int = 85) -> int:
    """Write the frames of `video` as `out/` (a rosbag2 folder with one mcap file). Returns the frame count.

    Raises:
        FileExistsError: `out` exists (the bag is written whole, never appended to).
        ValueError: the video decodes to no frame.
    """
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first (--force)")
    fps, frames = video_frames(video, size)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msg_type = typestore.types["sensor_msgs/msg/CompressedImage"]
    header_type, time_type = typestore.types["std_msgs/msg/Header"], typestore.types["builtin_interfaces/msg/Time"]
    count = 0
    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(TOPIC, msg_type.__msgtype__, typestore=typestore)
        for i, bgr in enumerate(frames):
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG")
            stamp_ns = START_NS + round(i * 1e9 / fps)
            header = header_type(stamp=time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=FRAME_ID)
            msg = msg_type(header=header, format="jpeg", data=np.frombuffer(jpeg.tobytes(), np.uint8))
            writer.write(connection, stamp_ns, typestore.serialize_cdr(msg, msg_type.__msgtype__))
            count += 1
    if count == 0:
        shutil.rmtree(out)
        raise ValueError(f"video {video} decodes to no frame")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsvs_training.sample_bag", description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True, help="a video file OpenCV reads (mp4, ...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=parse_size, default=(480, 270), help="WIDTHxHEIGHT of the stored frames")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality 1..100")
    parser.add_argument("--force", action="store_true", help="replace --out")
    args = parser.parse_args(argv)
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    count = write_sample_bag(args.out, args.video, size=args.size, quality=args.quality)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({count} frames {args.size[0]}x{args.size[1]}, {size / 1e6:.1f} MB, topic {TOPIC})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
