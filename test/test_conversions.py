"""The message conversions on rosbags' ROS 2 Humble message classes, the ones offline replay reads from bags.

Messages are built from known RGB frames with independent numpy conversions, then decoded and compared.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from wsvs_ros.labels import DRIVE
from wsvs_ros.messages import conversions
from wsvs_ros.messages.conversions import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    compressed_to_rgb,
    frame_id_of,
    image_to_rgb,
    labels_to_image,
    mask_to_image,
    overlay,
    rgb_to_image,
    stamp_of,
    stamp_to_seconds,
)

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
CompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]

SEC, NANOSEC, FRAME_ID = 1_700_000_000, 123_456_789, "camera_front"
PAD_BYTE = 0xA5  # fills row padding: a decoder that reads it produces visibly wrong pixels

# Bytes per pixel of each encoding, from sensor_msgs/image_encodings.
BYTES_PER_PIXEL = {
    **{"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1},
    **{"rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8, "mono16": 2},
    **{"yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2},
    **{f"bayer_{p}8": 1 for p in ("rggb", "bggr", "gbrg", "grbg")},
    **{f"bayer_{p}16": 2 for p in ("rggb", "bggr", "gbrg", "grbg")},
}


def _header() -> Header:
    return Header(stamp=Time(sec=SEC, nanosec=NANOSEC), frame_id=FRAME_ID)


def _image(encoding: str, rows: np.ndarray, width: int, *, pad: int = 0, is_bigendian: int = 0) -> Image:
    """An Image whose rows are `rows` ((H, row bytes) uint8), each followed by `pad` junk bytes."""
    height = rows.shape[0]
    padded = np.concatenate([rows, np.full((height, pad), PAD_BYTE, np.uint8)], axis=1)
    return Image(
        header=_header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=is_bigendian,
        step=padded.shape[1],
        data=padded.reshape(-1),
    )


def _frame(height: int = 6, width: int = 8, *, grey: bool = False, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 random RGB, or a random grey in all three channels."""
    rng = np.random.default_rng(seed)
    if grey:
        return np.repeat(rng.integers(0, 256, (height, width, 1), np.uint8), 3, axis=2)
    return rng.integers(0, 256, (height, width, 3), np.uint8)


def _samples(rgb: np.ndarray, order: str) -> np.ndarray:
    """The (H, W, C) samples an encoding of channel order `order` stores for `rgb`; alpha is a constant 77."""
    alpha = np.full((*rgb.shape[:2], 1), 77, np.uint8)
    return {
        "rgb": rgb,
        "bgr": rgb[..., ::-1],
        "rgba": np.concatenate([rgb, alpha], axis=2),
        "bgra": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "mono": rgb[..., :1],
    }[order]


def _to_16bit_rows(samples: np.ndarray, byteorder: str, seed: int = 1) -> np.ndarray:
    """(H, W, C) uint8 -> (H, W * C * 2) bytes of 16-bit samples with those high bytes and random low bytes."""
    low = np.random.default_rng(seed).integers(0, 256, samples.shape, np.uint16)
    values = samples.astype(np.uint16) * 256 + low
    return values.astype(f"{byteorder}u2").view(np.uint8).reshape(samples.shape[0], -1)


ORDERS = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "mono": 1}


@pytest.mark.parametrize("order", ORDERS)
def test_8bit_encodings_decode_to_the_original_rgb(order: str) -> None:
    rgb = _frame(grey=order == "mono")
    msg = _image(f"{order}8", _samples(rgb, order).reshape(rgb.shape[0], -1), rgb.shape[1])
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("order", ORDERS)
def test_16bit_encodings_keep_the_high_byte_in_either_byte_order(order: str, byteorder: str) -> None:
    rgb = _frame(grey=order == "mono")
    rows = _to_16bit_rows(_samples(rgb, order), byteorder)
    msg = _image(f"{order}16", rows, rgb.shape[1], is_bigendian=int(byteorder == ">"))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_big_endian_flag_decides_which_byte_is_high() -> None:
    rows = np.array([[0x12, 0x34]], np.uint8)  # one mono16 pixel
    assert image_to_rgb(_image("mono16", rows, 1, is_bigendian=1))[0, 0, 0] == 0x12
    assert image_to_rgb(_image("mono16", rows, 1, is_bigendian=0))[0, 0, 0] == 0x34


@pytest.mark.parametrize("pad", [1, 5, 64])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_padded_rows_are_honoured(encoding: str, pad: int) -> None:
    height, width = 6, 8
    rows = np.random.default_rng(2).integers(0, 256, (height, width * BYTES_PER_PIXEL[encoding]), np.uint8)
    unpadded = image_to_rgb(_image(encoding, rows, width))
    padded = image_to_rgb(_image(encoding, rows, width, pad=pad))
    np.testing.assert_array_equal(padded, unpadded)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_gives_contiguous_hw3_uint8(encoding: str) -> None:
    height, width = 4, 6
    rows = np.random.default_rng(3).integers(0, 256, (height, width * BYTES_PER_PIXEL[encoding]), np.uint8)
    rgb = image_to_rgb(_image(encoding, rows, width, pad=3))
    assert rgb.shape == (height, width, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous  # what torch.from_numpy and the preprocessing need


def test_encoding_names_are_case_insensitive() -> None:
    rgb = _frame()
    msg = _image("BGR8", rgb[..., ::-1].reshape(rgb.shape[0], -1), rgb.shape[1])
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def _bt601_video_range(colour: Sequence[int]) -> tuple[float, float, float]:
    """RGB -> (Y, U, V) as ITU-R BT.601 writes it in video range (Y in 16..235), what YUV 4:2:2 cameras send."""
    r, g, b = colour
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, u, v


YUV_COLOURS = [(200, 40, 60), (30, 180, 90), (20, 60, 220), (128, 128, 128)]


@pytest.mark.parametrize(
    ("encoding", "byte_order"),
    [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")],
)
def test_yuv422_decodes_colour_bands_in_its_byte_order(encoding: str, byte_order: str) -> None:
    # Each pixel pair has one colour, so the shared chroma is exact and only rounding remains.
    height = 3
    pairs = []
    for colour in YUV_COLOURS:
        y, u, v = (round(c) for c in _bt601_video_range(colour))
        pairs.append([u, y, v, y] if byte_order == "uyvy" else [y, u, y, v])
    rows = np.tile(np.array(pairs, np.uint8).reshape(1, -1), (height, 1))
    expected = np.tile(np.repeat(np.array(YUV_COLOURS, np.uint8), 2, axis=0)[None], (height, 1, 1))

    rgb = image_to_rgb(_image(encoding, rows, 2 * len(YUV_COLOURS)))
    assert np.abs(rgb.astype(int) - expected).max() <= 3


BAYER_COLOUR = (200, 100, 50)  # R, G and B all differ, so a pattern read at the wrong phase shows


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W) Bayer mosaic of `rgb`; `pattern` names the top-left 2x2 block in reading order, as ROS does."""
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for i, c in enumerate(pattern):
        dy, dx = divmod(i, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    return mosaic


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_demosaic_to_the_known_colour(pattern: str) -> None:
    rgb = np.full((8, 10, 3), BAYER_COLOUR, np.uint8)
    decoded = image_to_rgb(_image(f"bayer_{pattern}8", _mosaic(rgb, pattern), 10))
    # Interpolation of a constant colour is exact away from the border, where OpenCV extrapolates.
    np.testing.assert_array_equal(decoded[2:-2, 2:-2], rgb[2:-2, 2:-2])


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer16_patterns_demosaic_to_the_known_colour(pattern: str, byteorder: str) -> None:
    rgb = np.full((8, 10, 3), BAYER_COLOUR, np.uint8)
    rows = _to_16bit_rows(_mosaic(rgb, pattern)[..., None], byteorder)
    decoded = image_to_rgb(_image(f"bayer_{pattern}16", rows, 10, is_bigendian=int(byteorder == ">")))
    np.testing.assert_array_equal(decoded[2:-2, 2:-2], rgb[2:-2, 2:-2])


def test_unpadded_rgb8_is_decoded_without_a_copy() -> None:
    rgb = _frame()
    msg = _image("rgb8", rgb.reshape(rgb.shape[0], -1), rgb.shape[1])
    assert np.shares_memory(image_to_rgb(msg), msg.data)


@pytest.mark.parametrize(
    "as_data",
    [bytes, bytearray, lambda a: array.array("B", a.tobytes()), lambda a: a.tolist(), lambda a: memoryview(a)],
    ids=["bytes", "bytearray", "array.array", "list", "memoryview"],
)
def test_data_may_be_any_byte_container_rclpy_or_users_give(as_data: Callable[[np.ndarray], object]) -> None:
    rgb = _frame()
    msg = _image("bgr8", rgb[..., ::-1].reshape(rgb.shape[0], -1), rgb.shape[1])
    msg.data = as_data(np.ascontiguousarray(msg.data))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def _compressed(fmt: str, payload: np.ndarray | bytes) -> CompressedImage:
    data = payload if isinstance(payload, np.ndarray) else np.frombuffer(payload, np.uint8)
    return CompressedImage(header=_header(), format=fmt, data=data.reshape(-1))


def _encoded(ext: str, pixels: np.ndarray, params: Sequence[int] = ()) -> np.ndarray:
    ok, buf = cv2.imencode(ext, pixels, list(params))
    assert ok
    return buf


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_png_decodes_exactly(fmt: str) -> None:
    rgb = _frame(16, 20)
    np.testing.assert_array_equal(compressed_to_rgb(_compressed(fmt, _encoded(".png", rgb[..., ::-1]))), rgb)


def test_rgb_payload_is_swapped_back_as_image_transport_does() -> None:
    # A publisher that hands RGB samples to an encoder expecting BGR says so with "compressed rgb8".
    rgb = _frame(16, 20)
    msg = _compressed("rgb8; png compressed rgb8", _encoded(".png", rgb))
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


def test_grey_png_comes_back_replicated() -> None:
    grey = _frame(16, 20, grey=True)
    msg = _compressed("mono8; png compressed mono8", _encoded(".png", grey[..., 0]))
    np.testing.assert_array_equal(compressed_to_rgb(msg), grey)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"])
def test_jpeg_decodes_within_compression_error(fmt: str) -> None:
    # 16x16 blocks of flat colour line up with JPEG's blocks and 4:2:0 chroma; the decoder's chroma upsampling
    # blurs the 2 pixels at each block edge, so the interiors are compared.
    colours = np.array([[(200, 40, 60), (30, 180, 90)], [(20, 60, 220), (240, 240, 240)]], np.uint8)
    rgb = np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1)
    msg = _compressed(fmt, _encoded(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]))
    decoded = compressed_to_rgb(msg)
    assert decoded.shape == rgb.shape
    interiors = np.r_[2:14, 18:30]
    error = decoded.astype(int) - rgb
    assert np.abs(error[np.ix_(interiors, interiors)]).max() <= 3


def test_compressed_data_from_rclpy_is_an_array_of_bytes() -> None:
    rgb = _frame(16, 20)
    msg = _compressed("png", _encoded(".png", rgb[..., ::-1]))
    msg.data = array.array("B", msg.data.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


def test_stamp_and_frame_id_come_from_the_header() -> None:
    for msg in (_image("mono8", np.zeros((1, 1), np.uint8), 1), _compressed("png", b"")):
        assert stamp_of(msg) == (SEC, NANOSEC)
        assert frame_id_of(msg) == FRAME_ID
    assert stamp_to_seconds((12, 500_000_000)) == 12.5
    assert stamp_to_seconds((SEC, NANOSEC)) == pytest.approx(SEC + NANOSEC / 1e9, abs=1e-6)


def _yuv_odd_width() -> Image:
    return _image("yuv422", np.zeros((2, 6), np.uint8), 3)


def _with(msg: Image, **fields: object) -> Image:
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def _grey_image() -> Image:
    return _image("mono8", np.zeros((4, 6), np.uint8), 6)


MALFORMED_IMAGES: dict[str, tuple[Callable[[], Image], str]] = {
    "unknown encoding": (lambda: _with(_grey_image(), encoding="nv12"), "unsupported image encoding 'nv12'"),
    "zero width": (lambda: _with(_grey_image(), width=0), "must both be positive"),
    "zero height": (lambda: _with(_grey_image(), height=0), "must both be positive"),
    "step shorter than a row": (lambda: _with(_grey_image(), step=5), "step 5 < width 6"),
    "data shorter than step x height": (lambda: _with(_grey_image(), height=5), "24 bytes, fewer than step 6"),
    "empty data": (lambda: _with(_grey_image(), data=np.zeros(0, np.uint8)), "data is empty"),
    "odd width for yuv422": (_yuv_odd_width, "odd width 3"),
    "values outside 0..255": (lambda: _with(_grey_image(), data=[300] * 24), "0..255"),
}


@pytest.mark.parametrize("case", MALFORMED_IMAGES)
def test_malformed_images_raise_image_decode_error(case: str) -> None:
    make, message = MALFORMED_IMAGES[case]
    with pytest.raises(ImageDecodeError, match=message):
        image_to_rgb(make())


@pytest.mark.parametrize(
    ("fmt", "payload", "message"),
    [
        ("jpeg", b"not a jpeg at all", "could not decode 17 bytes"),
        ("jpeg", _encoded(".jpg", np.zeros((8, 8, 3), np.uint8))[:20], "could not decode 20 bytes"),
        ("png", b"", "data is empty"),
        ("16UC1; compressedDepth png", b"\x00" * 12, "compressedDepth"),
    ],
    ids=["garbage", "truncated jpeg", "empty", "compressedDepth"],
)
def test_malformed_compressed_images_raise_image_decode_error(fmt: str, payload: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        compressed_to_rgb(_compressed(fmt, payload))


def test_opencv_errors_do_not_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise cv2.error("simulated OpenCV failure")

    monkeypatch.setattr(conversions.cv2, "cvtColor", failing)
    monkeypatch.setattr(conversions.cv2, "imdecode", failing)
    with pytest.raises(ImageDecodeError, match="simulated OpenCV failure"):
        image_to_rgb(_image("bgr8", np.zeros((2, 6), np.uint8), 2))
    with pytest.raises(ImageDecodeError, match="simulated OpenCV failure"):
        compressed_to_rgb(_compressed("png", b"\x89PNG"))


def _assert_header_copied(msg: Image) -> None:
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (SEC, NANOSEC, FRAME_ID)


def test_labels_image_is_mono8_class_ids_with_the_input_header() -> None:
    labels = np.random.default_rng(4).integers(0, len(DRIVE), (5, 7), np.uint8)
    header = _header()
    msg = labels_to_image(labels, header, msg_type=Image)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step) == (5, 7, "mono8", 0, 7)
    _assert_header_copied(msg)
    assert msg.header is not header
    np.testing.assert_array_equal(msg.data, labels.reshape(-1))
    np.testing.assert_array_equal(image_to_rgb(msg)[..., 0], labels)


def test_mask_image_is_mono8_0_or_255() -> None:
    mask = np.random.default_rng(5).random((5, 7)) > 0.5
    msg = mask_to_image(mask, _header(), msg_type=Image)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (5, 7, "mono8", 7)
    _assert_header_copied(msg)
    np.testing.assert_array_equal(msg.data.reshape(5, 7), np.where(mask, 255, 0))


def test_rgb_published_as_bgr8_stores_blue_first_and_decodes_back() -> None:
    rgb = _frame(5, 7)
    msg = rgb_to_image(rgb, _header(), msg_type=Image)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (5, 7, "bgr8", 21)
    _assert_header_copied(msg)
    np.testing.assert_array_equal(msg.data[:3], rgb[0, 0, ::-1])
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_rgb_published_as_rgb8_decodes_back() -> None:
    rgb = _frame(5, 7)
    msg = rgb_to_image(rgb, _header(), encoding="rgb8", msg_type=Image)
    assert (msg.encoding, msg.step) == ("rgb8", 21)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_output_messages_own_their_pixels() -> None:
    labels = np.zeros((3, 4), np.uint8)
    rgb = np.zeros((3, 4, 3), np.uint8)
    from_labels = labels_to_image(labels, _header(), msg_type=Image)
    from_rgb = rgb_to_image(rgb, _header(), encoding="rgb8", msg_type=Image)
    labels[:] = 7  # the node may reuse its buffers for the next frame
    rgb[:] = 7
    assert not from_labels.data.any()
    assert not from_rgb.data.any()


def test_output_messages_serialise_for_a_bag() -> None:
    labels = np.random.default_rng(6).integers(0, 8, (5, 7), np.uint8)
    for msg in (
        labels_to_image(labels, _header(), msg_type=Image),
        mask_to_image(labels > 3, _header(), msg_type=Image),
        rgb_to_image(DRIVE.colorize(labels), _header(), msg_type=Image),
    ):
        raw = TYPESTORE.serialize_cdr(msg, Image.__msgtype__)
        back = TYPESTORE.deserialize_cdr(raw, Image.__msgtype__)
        assert (back.height, back.width, back.encoding, back.step) == (msg.height, msg.width, msg.encoding, msg.step)
        assert stamp_of(back) == (SEC, NANOSEC)
        np.testing.assert_array_equal(back.data, msg.data)


class RclpyStyleImage:
    """Stands in for rclpy's generated sensor_msgs.msg.Image, which is not a dataclass.

    Its constructor makes the checks rosidl_generator_py's setters make: integer fields must be Python ints, and
    `data` must be an array.array('B') or a sequence of ints (which the setter checks byte by byte and copies).
    """

    def __init__(self, **kwargs: object) -> None:
        assert set(kwargs) == {"header", "height", "width", "encoding", "is_bigendian", "step", "data"}
        for name in ("height", "width", "is_bigendian", "step"):
            assert isinstance(kwargs[name], int), f"rclpy rejects {name} of type {type(kwargs[name])}"
        assert isinstance(kwargs["encoding"], str)
        assert isinstance(kwargs["data"], array.array) and kwargs["data"].typecode == "B"
        self.__dict__.update(kwargs)


def test_rclpy_style_messages_get_python_ints_and_a_byte_array() -> None:
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = labels_to_image(labels, _header(), msg_type=RclpyStyleImage)
    assert list(msg.data) == list(range(12))
    assert msg.step == 4
    _assert_header_copied(msg)
    for built in (
        mask_to_image(labels > 5, _header(), msg_type=RclpyStyleImage),
        rgb_to_image(DRIVE.colorize(labels % 8), _header(), msg_type=RclpyStyleImage),
    ):
        assert len(built.data) == built.step * built.height
    # What the node publishes decodes back through the same path it uses for rclpy input.
    np.testing.assert_array_equal(image_to_rgb(msg)[..., 0], labels)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: labels_to_image(np.zeros((2, 2), np.int64), _header(), msg_type=Image), "labels must be"),
        (lambda: labels_to_image(np.zeros((2, 2, 1), np.uint8), _header(), msg_type=Image), "labels must be"),
        (lambda: mask_to_image(np.zeros((2, 2), np.uint8), _header(), msg_type=Image), "mask must be"),
        (lambda: rgb_to_image(np.zeros((2, 2, 4), np.uint8), _header(), msg_type=Image), "rgb must be"),
        (lambda: rgb_to_image(np.zeros((0, 2, 3), np.uint8), _header(), msg_type=Image), "non-empty"),
        (lambda: rgb_to_image(np.zeros((2, 2, 3), np.uint8), _header(), encoding="mono8", msg_type=Image), "mono8"),
    ],
    ids=["float labels", "3-d labels", "uint8 mask", "4 channels", "empty", "mono8 overlay"],
)
def test_builders_refuse_arrays_they_cannot_publish(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_overlay_blends_label_colours_over_the_frame() -> None:
    rgb = _frame(5, 7)
    labels = np.random.default_rng(7).integers(0, len(DRIVE), (5, 7), np.uint8)
    colours = DRIVE.colorize(labels)
    np.testing.assert_array_equal(overlay(rgb, labels, DRIVE, alpha=0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, labels, DRIVE, alpha=1.0), colours)
    half = overlay(rgb, labels, DRIVE)
    assert half.shape == rgb.shape and half.dtype == np.uint8
    assert np.abs(half.astype(int) - (rgb.astype(int) + colours) / 2).max() <= 0.5


@pytest.mark.parametrize(
    ("rgb", "labels", "alpha", "message"),
    [
        (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6), np.uint8), 0.5, "labels are 6x4 but the frame is 5x4"),
        (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8), 1.5, "alpha=1.5"),
        (np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.uint8), 0.5, "rgb must be"),
    ],
    ids=["size mismatch", "alpha above 1", "float frame"],
)
def test_overlay_refuses_mismatched_inputs(rgb: np.ndarray, labels: np.ndarray, alpha: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        overlay(rgb, labels, DRIVE, alpha=alpha)


# A decompression bomb: the header claims 20000x20000 pixels (1.2 GB decoded), the file is a few hundred bytes.
# libjpeg fills the missing scan lines with grey, so before the size check this decoded to a full 20000x20000 image.
_BOMB_SCRIPT = """
import json, resource, struct, sys, zlib
import cv2, numpy as np
from rosbags.typesys import Stores, get_typestore
from wsvs_ros.messages.conversions import ImageDecodeError, compressed_to_rgb

msg_type = get_typestore(Stores.ROS2_HUMBLE).types["sensor_msgs/msg/CompressedImage"]
jpeg = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
sof = jpeg.find(b"\\xff\\xc0")
struct.pack_into(">HH", jpeg, sof + 5, 20000, 20000)
png = bytearray(cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
struct.pack_into(">II", png, 16, 20000, 20000)
struct.pack_into(">I", png, 29, zlib.crc32(bytes(png[12:29])))  # a valid IHDR: libpng checks its CRC
out = {"sizes": [len(jpeg), len(png)]}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name, fmt, payload in (("jpeg", "jpeg", jpeg), ("png", "png", png)):
    msg = msg_type(header=None, format=fmt, data=np.frombuffer(bytes(payload), np.uint8))
    try:
        out[name] = "decoded %s" % (compressed_to_rgb(msg).shape,)
    except ImageDecodeError as e:
        out[name] = str(e)
out["maxrss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def test_a_tiny_jpeg_or_png_claiming_20000x20000_is_refused_without_allocating_it() -> None:
    import json
    import subprocess
    import sys

    # A fresh interpreter, so its peak memory is this decode's and not an earlier test's.
    run = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert max(out["sizes"]) < 1000, "the bombs are a few hundred bytes"
    for name in ("jpeg", "png"):
        assert "declares 20000x20000" in out[name] and "max_image_pixels" in out[name], out[name]
    assert out["maxrss_growth_mb"] < 30, f"refusing the bombs grew the process by {out['maxrss_growth_mb']:.0f} MB"


def test_a_compressed_frame_over_the_pixel_limit_is_refused_and_one_at_it_decoded() -> None:
    rgb = _frame(48, 64)
    for ext in (".jpg", ".png"):
        msg = _compressed(ext[1:], _encoded(ext, rgb[..., ::-1]))
        assert compressed_to_rgb(msg, max_pixels=64 * 48).shape == (48, 64, 3)
        with pytest.raises(ImageDecodeError, match="declares 64x48 = 3072 pixels, over the max_image_pixels"):
            compressed_to_rgb(msg, max_pixels=64 * 48 - 1)


def test_a_format_without_a_readable_header_is_held_to_the_limit_once_decoded() -> None:
    msg = _compressed("bmp", _encoded(".bmp", _frame(48, 64)))
    with pytest.raises(ImageDecodeError, match="64x48 = 3072 pixels"):
        compressed_to_rgb(msg, max_pixels=1000)


def test_a_raw_image_declaring_more_pixels_than_the_limit_is_refused_before_its_data_is_read() -> None:
    # 20000x20000 declared with 24 bytes of data: refused for its size, not as a truncated message.
    msg = _with(_grey_image(), width=20000, height=20000, step=20000)
    with pytest.raises(ImageDecodeError, match="declares 20000x20000 = 400000000 pixels, over the max_image_pixels"):
        image_to_rgb(msg)
    assert image_to_rgb(_grey_image(), max_pixels=24).shape == (4, 6, 3)
    with pytest.raises(ImageDecodeError, match="max_image_pixels limit of 23"):
        image_to_rgb(_grey_image(), max_pixels=23)
