"""What the scorer accepts, and the size an image is scored at.

Inputs: a path, a PIL image, or an array (uint8 or uint16 HxW, HxWx1, HxWx3, HxWx4, or float in
[0,1]); grayscale is repeated to three channels and alpha dropped, as the dataset readers do.

Sizes (`SizePolicy`). By default an image is scored whole at its own size, as `--mode eval` scores
a test set, so the score is the protocol's. Two options change that:
  - `short_side`: images whose shorter side exceeds it are downscaled so that it equals it
    (bicubic, antialiased). SPAQ's protocol resizes its phone photos so that the shorter side is
    448, and a model trained on SPAQ has only seen such images: "auto" applies 448 to SPAQ models
    and nothing to the others, whose protocols score native sizes.
  - `size_step`: each side is then rounded to the nearest multiple of it (bicubic), so a folder of
    many sizes compiles a bounded number of shapes (each new shape compiles the model once); scores
    then differ slightly from the protocol's.
Resizing an 8-bit image goes through PIL on the 8-bit pixels, exactly as the SPAQ reader makes its
448 copies, so a SPAQ model scores a photo as `--mode eval` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from bpclip_jax.errors import UserError
from data_pipelines.images import ImageError, image_size, read_rgb, to_rgb8

SPAQ_SHORT_SIDE = 448   # the SPAQ protocol's shorter side (data_pipelines.nr_sets)
AUTO = "auto"

# The errors that make one image unscorable (unreadable, truncated, too large to decode): an
# image's failure, not a bug. Predict turns them into that image's row error; any other exception
# is a bug and keeps its traceback.
IMAGE_FAILURES = (UserError, ImageError, OSError, SyntaxError, MemoryError, Image.DecompressionBombError)


class InputError(UserError, ValueError):
    """An input that cannot be scored; the message names it."""


def load_pixels(x, name: str = "image") -> np.ndarray:
    """Any supported input -> [H,W,3], uint8 (files, PIL images, 8-bit arrays) or float32 in [0,1].

    Files are checked from their header first: one beyond PIL's decompression-bomb limit fails
    before its pixels are decoded.
    """
    if isinstance(x, str | Path):
        return _read_file(Path(x))
    if isinstance(x, Image.Image):
        return to_rgb8(x)
    if isinstance(x, np.ndarray | jax.Array):
        return _from_array(np.asarray(x), name)
    raise InputError(f"{name}: unsupported input type {type(x).__name__} (give a path, a PIL image "
                     f"or an HxWx3 array)")


def _read_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image_size(str(path))
        return read_rgb(str(path))
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: too large to decode ({err}); downscale it first") from err
    except ValueError as err:
        raise InputError(str(err)) from err


def _from_array(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got {a.shape}")
    a = np.repeat(a, 3, -1) if a.shape[-1] == 1 else a[..., :3]
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise InputError(f"{name}: float images must be finite and in [0, 1], got "
                             f"[{np.nanmin(a)}, {np.nanmax(a)}]")
        return a.astype(np.float32)
    raise InputError(f"{name}: unsupported dtype {a.dtype} (uint8, uint16 or float in [0, 1])")


def to_float(pixels: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 or float -> float32 in [0,1] (x / 255 for 8 bits, as the eval pipeline does)."""
    return pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)


def to_image(x, name: str = "image") -> np.ndarray:
    """Any supported input -> [H,W,3] float32 in [0,1]."""
    return to_float(load_pixels(x, name))


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic (antialiased) resize of [H,W,3] uint8 (through PIL's RGB path, the dataset readers')
    or float32 (per channel, clipped to [0,1]); the identity when the size is unchanged."""
    if pixels.shape[:2] == (height, width):
        return pixels
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BICUBIC))
    channels = [np.asarray(Image.fromarray(pixels[..., c], mode="F").resize((width, height), Image.BICUBIC))
                for c in range(3)]
    return np.clip(np.stack(channels, -1), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class SizePolicy:
    """The size an image is scored at (see the module docstring). short_side 0: never downscaled;
    size_step 0: sides kept (the protocol)."""

    short_side: int = 0
    size_step: int = 0

    @classmethod
    def for_dataset(cls, dataset: str, short_side: int | str = AUTO, size_step: int = 0) -> SizePolicy:
        """`short_side` "auto": the training set's protocol (SPAQ 448, the others native)."""
        if short_side in (AUTO, None, ""):
            short_side = SPAQ_SHORT_SIDE if dataset == "spaq" else 0
        try:
            short_side, size_step = int(short_side), int(size_step)
        except ValueError as err:
            raise UserError(f"short_side must be 'auto' or a number of pixels, got {short_side!r}") from err
        if short_side < 0 or size_step < 0:
            raise UserError(f"short_side and size_step must be >= 0, got {short_side} and {size_step}")
        return cls(short_side, size_step)

    def target(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of height x width is scored at."""
        if self.short_side and min(height, width) > self.short_side:
            scale = self.short_side / min(height, width)
            height, width = round(height * scale), round(width * scale)
        if self.size_step:
            step = self.size_step
            height = max(step, int(round(height / step)) * step)
            width = max(step, int(round(width / step)) * step)
        return height, width

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """[H,W,3] uint8 or float -> [h,w,3] float32 in [0,1] at the target size."""
        return to_float(resize(pixels, *self.target(*pixels.shape[:2])))

    def describe(self) -> str:
        parts = [f"shorter side > {self.short_side} downscaled to {self.short_side}" if self.short_side
                 else "native size", f"sides rounded to multiples of {self.size_step}" if self.size_step
                 else ""]
        return ", ".join(p for p in parts if p)
