"""Decoding images to 8-bit RGB, with errors that name the file."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # a requirement; optional only so that a bare GPU host can run the benchmarks without it
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None
else:
    cv2.setNumThreads(1)  # parallelism comes from the pipeline's threads and workers
    # Errors only: a file OpenCV cannot decode goes to PIL, which names the problem.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

class ImageError(ValueError):
    """An image file that cannot be read; the message names the file."""


def to_rgb8(image: Image.Image) -> np.ndarray:
    """`[H,W,3]` uint8 from any PIL image: grayscale and palette are expanded, alpha is dropped
    (not composited), 16-bit images are scaled to 8 bits (x / 257), float images clipped to 0..255.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        gray = np.asarray(image).astype(np.float32)
        if image.mode != "I" or gray.max(initial=0) > 255:  # "I" holds 8-bit data in some files
            gray = gray / 257.0
        gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        gray = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "transparency" in image.info else image.mode).convert("RGB")
    return np.asarray(image)


def read_rgb(path: str, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Decodes `path` to `[H,W,3]` uint8; unreadable or truncated files raise ImageError naming it.

    box: (left, top, right, bottom) crops before the conversion to numpy (less to copy).
    """
    fast = _decode_rgb8(path)
    if fast is not None:
        if box is not None:
            left, top, right, bottom = box
            fast = fast[top:bottom, left:right]
        return fast
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(image if box is None else image.crop(box))
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode {path}: {err}") from err


def _decode_rgb8(path: str) -> np.ndarray | None:
    """The fast path: OpenCV decodes 8-bit 3-channel PNGs with the GIL released, about 1.4x PIL's
    rate on two threads. Anything else returns None and goes through PIL: other formats (OpenCV
    decodes a truncated JPEG without an error), other modes, unreadable files. The result is a
    BGR->RGB view: batching makes the one copy."""
    if cv2 is None:
        return None
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data[:8].tobytes() != PNG_SIGNATURE:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        return None
    return image[..., ::-1]


@functools.lru_cache(maxsize=512)
def read_reference(path: str) -> np.ndarray:
    """read_rgb for FR references, decoded once per process and kept (KADID has 81 of them)."""
    image = np.ascontiguousarray(read_rgb(path))
    image.flags.writeable = False
    return image


def image_size(path: str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ImageError(f"cannot read the header of {path}: {err}") from err
    return height, width
