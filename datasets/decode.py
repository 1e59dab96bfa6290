"""Decoding image files with OpenCV into uint8 arrays.

``cv2.imdecode`` works on bytes, so file names in any script work. ``IMREAD_COLOR`` and
``IMREAD_GRAYSCALE`` apply the EXIF orientation tag, convert 16-bit images to 8-bit (the high
byte) and drop an alpha channel (no blending). Colour images come out in OpenCV's BGR order.
"""

from __future__ import annotations

import numpy as np

from trtq.datasets.bad_file import BadFile

# File signatures of the formats the image folder accepts (to tell "not an image" from "corrupt").
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
)


def image_format(data: bytes) -> str | None:
    """The format named by the file's signature, or ``None`` if it is not one we read."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """Decode an encoded image to uint8: H×W×3 BGR for ``channels=3``, H×W gray for ``channels=1``.

    Raises :class:`BadFile` with the reason for empty, unrecognised, truncated or corrupt data.
    """
    if not data:
        raise BadFile("empty file")
    fmt = image_format(data)
    if fmt is None:
        raise BadFile("not an image (unrecognised file signature)")
    if fmt == "JPEG":
        # Entropy-coded data cannot contain 0xFFD9, so a complete file has an end-of-image
        # marker after its last start-of-scan (older OpenCV decodes truncated JPEGs silently).
        sos = data.rfind(b"\xff\xda")
        if sos < 0 or data.rfind(b"\xff\xd9") < sos:
            raise BadFile("truncated JPEG (no end-of-image marker after the last scan)")
    import cv2  # here, not at module level: commands that read no images never load OpenCV

    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise BadFile(
                f"{fmt} too large for OpenCV's pixel limit (raise it with the OPENCV_IO_MAX_IMAGE_PIXELS "
                "environment variable)"
            ) from exc
        raise BadFile(f"corrupt {fmt} ({str(exc).strip().splitlines()[-1]})") from exc
    if image is None or image.size == 0:
        raise BadFile(f"OpenCV cannot decode this {fmt} (corrupt, truncated or an unsupported variant)")
    return image
