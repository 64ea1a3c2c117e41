"""The image size a JPEG or PNG file declares in its header, read without decoding it. ROS-free, pure Python.

A decoder allocates the full frame the header declares before it reads a single pixel, and libjpeg fills a
truncated image with grey rather than fail: a 664-byte JPEG that claims 20000x20000 pixels becomes a 1.2 GB array.
`declared_size` lets the caller refuse such a frame before `cv2.imdecode` sees it. OpenCV has no header-only API:
`cv2.IMREAD_REDUCED_*` still allocates (PNG decodes at full size, then shrinks), and its own ceiling,
OPENCV_IO_MAX_IMAGE_PIXELS, is read once when OpenCV loads (default 2^30 pixels, 3 GB), so it cannot follow a
parameter.
"""

from __future__ import annotations

__all__ = ["declared_size"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# Frame headers: SOF0-3, 5-7, 9-11, 13-15 (C4 is DHT, C8 JPG, CC DAC), and DHP, the frame size of a hierarchical
# JPEG. All of them hold: length (2), precision (1), height (2), width (2).
_JPEG_FRAME_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xDE})
_JPEG_NO_LENGTH = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RST0-7: markers without a segment
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk or a JPEG's frame header; None for any other data.

    None also for a PNG or JPEG whose header is missing or cut short: no decoder can decode it either (libpng needs
    IHDR first, libjpeg a frame header before the first scan). JPEG markers are found the way libjpeg finds them,
    skipping bytes that are not a marker, so padding in front of a frame header does not hide it.
    """
    if data.startswith(_PNG_SIGNATURE):
        # Signature (8), then the IHDR chunk: length (4), b"IHDR", width (4), height (4), big-endian.
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(_JPEG_SOI):
        return None
    i, n = 2, len(data)
    while True:
        i = data.find(b"\xff", i)
        if i < 0:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i + 1 > n:
            return None
        marker = data[i]
        i += 1
        if marker == 0x00 or marker in _JPEG_NO_LENGTH:  # 0x00: a stuffed 0xFF byte, not a marker
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):
            return None  # a scan or the end before any frame header
        if marker in _JPEG_FRAME_MARKERS:
            if i + 7 > n:
                return None
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 3 : i + 5], "big")
        if i + 2 > n:
            return None
        i += int.from_bytes(data[i : i + 2], "big")  # the segment length counts its own two bytes
