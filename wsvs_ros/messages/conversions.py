"""ROS image messages <-> numpy arrays, with no ROS import.

Works on any object with the fields of `sensor_msgs/Image`, `sensor_msgs/CompressedImage` and `std_msgs/Header`:
rclpy's generated classes on the robot and the `rosbags` library's dataclasses offline. Downstream code sees only
(H, W, 3) uint8 RGB arrays, (sec, nanosec) stamps and frame ids.

Decoding runs once per camera frame at 30 fps, so it works on views of the message's buffer: an rgb8 frame without row
padding comes back without a copy, every other encoding costs one OpenCV conversion. Anything wrong with an incoming
message raises `ImageDecodeError`, so a node can skip the frame, log the message and live on.
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from wsvs_ros.labels import LabelSet
from wsvs_ros.messages.image_header import declared_size

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "SUPPORTED_ENCODINGS",
    "CompressedImageMsg",
    "HeaderMsg",
    "ImageDecodeError",
    "ImageMsg",
    "StampedMsg",
    "TimeMsg",
    "compressed_to_rgb",
    "frame_id_of",
    "image_to_rgb",
    "labels_to_image",
    "mask_to_image",
    "overlay",
    "rgb_to_image",
    "stamp_of",
    "stamp_to_seconds",
]


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into RGB pixels; the message says what is wrong with it."""


# Frames larger than this are refused before they are decoded (`max_pixels`). 4096x4096 is twice the largest
# automotive camera (8.3 MP, 3840x2160) and holds 12 MP 4000x3000 sensors; such a frame peaks at about 0.5 GB on
# its way through the node (an 8000x8000 one peaks at 1.8 GB). A 20 MP+ camera needs the limit raised.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


# The message fields this module reads. Read-only properties, so that rclpy's classes and rosbags' dataclasses both
# match structurally.
class TimeMsg(Protocol):
    @property
    def sec(self) -> int: ...
    @property
    def nanosec(self) -> int: ...


class HeaderMsg(Protocol):
    @property
    def stamp(self) -> TimeMsg: ...
    @property
    def frame_id(self) -> str: ...


class StampedMsg(Protocol):
    @property
    def header(self) -> HeaderMsg: ...


class ImageMsg(StampedMsg, Protocol):
    """`sensor_msgs/Image`. `data` is a numpy uint8 array (rosbags), array.array('B') (rclpy), bytes or a list."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def is_bigendian(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def data(self) -> object: ...


class CompressedImageMsg(StampedMsg, Protocol):
    """`sensor_msgs/CompressedImage`; `data` as for `ImageMsg`."""

    @property
    def format(self) -> str: ...
    @property
    def data(self) -> object: ...


MsgT = TypeVar("MsgT")


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How an encoding lays out one pixel in a row of `data`."""

    channels: int  # samples per pixel; 2 for packed YUV 4:2:2 (a luma and an alternating chroma sample)
    depth: int  # bytes per sample
    to_rgb: int | None  # cv2.cvtColor code from the 8-bit samples to RGB; None when they already are RGB
    pixel_pairs: bool = False  # two neighbouring pixels share chroma, so the width must be even


# OpenCV names a Bayer pattern after the second and third pixels of its second row, ROS after the top-left 2x2 block:
# ROS "rggb" (red at (0, 0)) is OpenCV's "BG". cv_bridge maps them the same way. These old names exist in every
# OpenCV from 2.x to 5.x; the unambiguous COLOR_BayerRGGB2RGB aliases do not.
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}

# ROS's "yuv422" is UYVY byte order (U0 Y0 V0 Y1) and "yuv422_yuy2" is YUYV (Y0 U0 Y1 V0); Humble knows only those
# two names, later distributions add "uyvy" and "yuyv" for the same layouts.
_UYVY = _Layout(2, 1, cv2.COLOR_YUV2RGB_UYVY, pixel_pairs=True)
_YUYV = _Layout(2, 1, cv2.COLOR_YUV2RGB_YUY2, pixel_pairs=True)

_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, None),
    "rgba8": _Layout(4, 1, cv2.COLOR_RGBA2RGB),
    "bgr8": _Layout(3, 1, cv2.COLOR_BGR2RGB),
    "bgra8": _Layout(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    "rgb16": _Layout(3, 2, None),
    "rgba16": _Layout(4, 2, cv2.COLOR_RGBA2RGB),
    "bgr16": _Layout(3, 2, cv2.COLOR_BGR2RGB),
    "bgra16": _Layout(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": _Layout(1, 2, cv2.COLOR_GRAY2RGB),
    "uyvy": _UYVY,
    "yuv422": _UYVY,
    "yuyv": _YUYV,
    "yuv422_yuy2": _YUYV,
    **{f"bayer_{pattern}8": _Layout(1, 1, code) for pattern, code in _BAYER_TO_RGB.items()},
    **{f"bayer_{pattern}16": _Layout(1, 2, code) for pattern, code in _BAYER_TO_RGB.items()},
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(sorted(_LAYOUTS))


def image_to_rgb(msg: ImageMsg, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a `sensor_msgs/Image` to RGB.

    Rows are read `step` bytes apart, so row padding is skipped. 16-bit encodings keep the high byte of each sample
    (value >> 8), reading `is_bigendian` for the byte order. Bayer mosaics are demosaiced bilinearly; YUV 4:2:2 uses
    OpenCV's BT.601 video-range conversion, as cv_bridge does.

    Args:
        msg: an Image with encoding one of `SUPPORTED_ENCODINGS` (case-insensitive).
        max_pixels: the largest width x height accepted.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous. For rgb8 without row padding it is a view of `msg.data`: it shares the
        message's memory and is read-only when `data` is bytes; copy it before writing into it.

    Raises:
        ImageDecodeError: unknown encoding, zero width or height, more than `max_pixels` pixels, odd width for
            YUV 4:2:2, `step` shorter than a row, empty or short `data`, or OpenCV failing to convert.
    """
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding.lower())
    if layout is None:
        raise ImageDecodeError(f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{encoding} image has size {width}x{height}; width and height must both be positive")
    _check_pixels(f"{encoding} image", width, height, max_pixels)
    if layout.pixel_pairs and width % 2:
        raise ImageDecodeError(f"{encoding} image has odd width {width}; YUV 4:2:2 packs pixels in pairs")
    row_bytes = width * layout.channels * layout.depth
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image has step {step} < width {width} x {layout.channels * layout.depth} bytes per pixel "
            f"= {row_bytes}; step must cover a whole row"
        )
    data = _as_bytes(msg.data)
    needed = step * height
    if data.size == 0:
        raise ImageDecodeError(f"{encoding} image data is empty; step {step} x height {height} needs {needed} bytes")
    if data.size < needed:
        raise ImageDecodeError(
            f"{encoding} image data has {data.size} bytes, fewer than step {step} x height {height} = {needed}; "
            "the message is truncated or its step/height are wrong"
        )

    rows = data[:needed].reshape(height, step)[:, :row_bytes]
    if layout.depth == 2:
        # The high byte of each sample is the 16 -> 8 bit scaling, with no arithmetic; which byte it is depends
        # on the byte order.
        rows = np.ascontiguousarray(rows[:, 0::2] if msg.is_bigendian else rows[:, 1::2])
    # A view: padded rows keep their stride, which OpenCV reads as the row step.
    samples = rows.reshape(height, width, layout.channels) if layout.channels > 1 else rows
    if layout.to_rgb is None:
        return np.ascontiguousarray(samples)
    try:
        return cv2.cvtColor(samples, layout.to_rgb)
    except cv2.error as e:
        raise ImageDecodeError(f"OpenCV could not convert a {width}x{height} {encoding} image to RGB: {e}") from e


def compressed_to_rgb(msg: CompressedImageMsg, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage` (JPEG, PNG or anything else `cv2.imdecode` reads) to RGB.

    `format` is either a bare codec name ("jpeg", "png") or image_transport's "<encoding>; <codec> compressed
    <payload encoding>" (e.g. "rgb8; jpeg compressed bgr8"). A bgr or mono payload is a normal image file; an rgb
    payload ("...compressed rgb8") was encoded with red and blue swapped, which is undone as image_transport does.
    Grey images come back with the grey replicated, alpha is dropped and 16-bit PNGs are reduced to 8 bits.

    A JPEG or PNG that declares more than `max_pixels` pixels is refused from its header, before anything is
    allocated for it; other formats (whatever else OpenCV reads) are checked once decoded.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        ImageDecodeError: empty data, more than `max_pixels` pixels, bytes OpenCV cannot decode, or a compressedDepth
            image (a depth map, not a camera frame).
    """
    fmt = msg.format
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(
            f"CompressedImage format {fmt!r} is a compressedDepth depth map, not a camera frame; "
            "subscribe to the colour image topic"
        )
    data = _as_bytes(msg.data)
    if data.size == 0:
        raise ImageDecodeError(f"CompressedImage data is empty (format {fmt!r})")
    size = declared_size(data.tobytes())
    if size is not None:
        _check_pixels(f"CompressedImage ({fmt!r}) header", *size, max_pixels)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageDecodeError(f"OpenCV failed on {data.size} bytes of CompressedImage data ({fmt!r}): {e}") from e
    if decoded is None:
        raise ImageDecodeError(
            f"could not decode {data.size} bytes of CompressedImage data (format {fmt!r}) as an image; "
            "the payload is corrupt or in a format OpenCV cannot read"
        )
    if size is None:
        _check_pixels(f"CompressedImage ({fmt!r})", decoded.shape[1], decoded.shape[0], max_pixels)
    payload_encoding = fmt.partition("compressed")[2].strip().lower()
    if payload_encoding.startswith("rgb"):
        return decoded  # imdecode's "BGR" is the publisher's RGB
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def stamp_of(msg: StampedMsg) -> tuple[int, int]:
    """(sec, nanosec) of a message's header stamp, as Python ints."""
    stamp = msg.header.stamp
    return int(stamp.sec), int(stamp.nanosec)


def stamp_to_seconds(stamp: tuple[int, int]) -> float:
    """(sec, nanosec) -> seconds. A float64 keeps ~0.2 µs resolution for present-day epoch times."""
    sec, nanosec = stamp
    return sec + nanosec * 1e-9


def frame_id_of(msg: StampedMsg) -> str:
    """The message header's frame_id."""
    return str(msg.header.frame_id)


def labels_to_image(labels: np.ndarray, header: HeaderMsg, *, msg_type: Callable[..., MsgT]) -> MsgT:
    """(H, W) uint8 class ids -> a mono8 Image of `msg_type` carrying a copy of `header`.

    `msg_type` is the Image class to build: `sensor_msgs.msg.Image` under rclpy, or rosbags'
    `typestore.types["sensor_msgs/msg/Image"]`; `header` must come from the same library. The message owns a copy of
    the ids, so the caller may reuse `labels`.

    Raises:
        ValueError: `labels` is not a non-empty (H, W) uint8 array.
    """
    _check_array(labels, "labels", ndim=2, dtype=np.uint8)
    return _build_image(msg_type, header, np.array(labels, order="C"), "mono8")


def mask_to_image(mask: np.ndarray, header: HeaderMsg, *, msg_type: Callable[..., MsgT]) -> MsgT:
    """(H, W) bool mask -> a mono8 Image (0 outside, 255 inside) of `msg_type` carrying a copy of `header`.

    `msg_type` and `header` as for `labels_to_image`.

    Raises:
        ValueError: `mask` is not a non-empty (H, W) bool array.
    """
    _check_array(mask, "mask", ndim=2, dtype=np.bool_)
    return _build_image(msg_type, header, np.where(mask, np.uint8(255), np.uint8(0)), "mono8")


def rgb_to_image(rgb: np.ndarray, header: HeaderMsg, *, encoding: str = "bgr8", msg_type: Callable[..., MsgT]) -> MsgT:
    """(H, W, 3) uint8 RGB -> an Image of `msg_type` in `encoding` ("bgr8", what image viewers expect, or "rgb8").

    `msg_type` and `header` as for `labels_to_image`; the message owns a copy of the pixels.

    Raises:
        ValueError: `rgb` is not a non-empty (H, W, 3) uint8 array, or `encoding` is neither "bgr8" nor "rgb8".
    """
    _check_array(rgb, "rgb", ndim=3, dtype=np.uint8, channels=3)
    if encoding == "bgr8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgb8":
        pixels = np.array(rgb, order="C")
    else:
        raise ValueError(f"rgb_to_image encodes 'bgr8' or 'rgb8', not {encoding!r}")
    return _build_image(msg_type, header, pixels, encoding)


def overlay(rgb: np.ndarray, labels: np.ndarray, label_set: LabelSet, alpha: float = 0.5) -> np.ndarray:
    """Blend the label colours over a frame: (1 - alpha) * rgb + alpha * colour, rounded.

    Args:
        rgb: (H, W, 3) uint8 RGB frame.
        labels: (H, W) uint8 class ids of `label_set`; ids outside it (255 = void) blend with black.
        label_set: gives each class its colour.
        alpha: weight of the label colours, in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: wrong shapes or dtypes, `labels` not the size of `rgb`, or `alpha` outside [0, 1].
    """
    _check_array(rgb, "rgb", ndim=3, dtype=np.uint8, channels=3)
    _check_array(labels, "labels", ndim=2, dtype=np.uint8)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(
            f"labels are {labels.shape[1]}x{labels.shape[0]} but the frame is {rgb.shape[1]}x{rgb.shape[0]}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha={alpha} must be in [0, 1]")
    return cv2.addWeighted(rgb, 1.0 - alpha, label_set.colorize(labels), alpha, 0.0)


def _check_pixels(what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} declares {width}x{height} = {width * height} pixels, over the max_image_pixels limit of "
            f"{max_pixels}; raise max_image_pixels if a camera really sends frames this large"
        )


def _as_bytes(data: object) -> np.ndarray:
    """A message's `data` as an (N,) uint8 array, without a copy for numpy arrays and buffers.

    rosbags gives a numpy array, rclpy an array.array('B'); bytes and lists come from hand-built messages.
    """
    if isinstance(data, np.ndarray):
        values = data
    elif isinstance(data, (bytes, bytearray, memoryview, array.array)):
        values = np.frombuffer(data, np.uint8)
    else:
        values = np.asarray(data)
    if values.dtype != np.uint8:
        # Only hand-built messages get here; refuse rather than let a cast wrap 256 to 0.
        if values.size and (values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255):
            raise ImageDecodeError(f"image data must be bytes 0..255, got {values.dtype} values")
        values = values.astype(np.uint8)
    return values.reshape(-1)


def _check_array(
    values: np.ndarray, name: str, *, ndim: int, dtype: type[np.generic], channels: int | None = None
) -> None:
    """Refuse an array that is not a non-empty `ndim`-dimensional `dtype` array (with `channels` in the last axis)."""
    shape = "(H, W)" if ndim == 2 else f"(H, W, {channels})"
    if (
        not isinstance(values, np.ndarray)
        or values.ndim != ndim
        or values.dtype != dtype
        or values.size == 0
        or (channels is not None and values.shape[-1] != channels)
    ):
        got = f"{values.dtype} array of shape {values.shape}" if isinstance(values, np.ndarray) else type(values)
        raise ValueError(f"{name} must be a non-empty {shape} {np.dtype(dtype).name} array, got {got}")


def _build_image(msg_type: Callable[..., MsgT], header: HeaderMsg, pixels: np.ndarray, encoding: str) -> MsgT:
    """An Image of `msg_type` from (H, W) or (H, W, C) C-contiguous uint8 `pixels` that nobody else holds.

    rosbags' dataclasses store `data` as a numpy uint8 array, so `pixels` becomes the data as is. rclpy's classes
    store an array.array('B'); handing them one skips the per-byte assertion their setter runs on any other sequence
    (which rejects numpy arrays, not being a collections.abc.Sequence). Sizes are Python ints because rclpy's
    setters assert `isinstance(value, int)`, which numpy integers fail.
    """
    height, width = pixels.shape[:2]
    flat = pixels.reshape(-1)
    if dataclasses.is_dataclass(msg_type):
        data: np.ndarray | array.array[int] = flat
    else:
        data = array.array("B")
        data.frombytes(flat.data)
    return msg_type(
        header=_copy_header(header),
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(flat.size // height),
        data=data,
    )


def _copy_header(header: HeaderMsg) -> HeaderMsg:
    """A new header of the same class with the same stamp and frame_id, so the output never aliases the input."""
    stamp = header.stamp
    # Both libraries' classes take their fields as keywords; the protocols only describe reading them.
    return type(header)(  # type: ignore[call-arg]
        stamp=type(stamp)(sec=int(stamp.sec), nanosec=int(stamp.nanosec)),  # type: ignore[call-arg]
        frame_id=str(header.frame_id),
    )


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
