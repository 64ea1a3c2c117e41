"""The size JPEG and PNG headers declare, read without decoding: what the decompression-bomb check relies on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsvs_ros.messages.image_header import declared_size


def _encoded(ext: str, height: int, width: int, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, np.zeros((height, width, 3), np.uint8), list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("ext", "params"),
    [(".png", ()), (".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))],
    ids=["png", "baseline jpeg", "progressive jpeg"],
)
def test_the_declared_size_is_what_opencv_decodes(ext: str, params: tuple[int, ...]) -> None:
    data = _encoded(ext, 37, 53, params)
    assert declared_size(data) == (53, 37)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (37, 53)


def test_jpeg_segments_and_junk_before_the_frame_header_do_not_hide_it() -> None:
    jpeg = _encoded(".jpg", 20, 30)
    thumbnail = _encoded(".jpg", 999, 999)  # an EXIF-style thumbnail inside APP1 must not be taken for the frame
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    padded = jpeg[:2] + app1 + b"\x00\x13junk" + b"\xff\xff" + jpeg[2:]  # libjpeg skips junk and fill bytes too
    assert declared_size(padded) == (30, 20)
    assert cv2.imdecode(np.frombuffer(padded, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (20, 30)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"BM\x00\x00"],
    ids=["empty", "text", "png cut in its header", "jpeg with no marker", "jpeg scan before any frame", "bmp"],
)
def test_data_without_a_readable_size_gives_none(data: bytes) -> None:
    assert declared_size(data) is None


def test_a_jpeg_cut_inside_its_frame_header_gives_none() -> None:
    jpeg = _encoded(".jpg", 20, 30)
    assert declared_size(jpeg[: jpeg.find(b"\xff\xc0") + 6]) is None
