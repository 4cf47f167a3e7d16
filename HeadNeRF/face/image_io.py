"""Reading any photo as an 8-bit RGB array.

* Formats: whatever Pillow opens (jpg, png, bmp, tiff, webp, ...).
* EXIF orientation is applied (``ImageOps.exif_transpose``), so a phone photo stored sideways
  comes out upright.
* Greyscale (L, I, I;16, F) is replicated to 3 channels; 16-bit and float images are scaled to
  8 bit (16-bit by ``>> 8``, i.e. value / 257 rounded down; float by their [0, 1] or min-max range).
* Alpha (RGBA, LA, P with transparency) is composited on white, the synthetic renders' background.
* Anything that cannot be decoded raises :class:`ImageReadError` with a one-line reason.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ImageReadError

__all__ = ["load_image_rgb", "to_rgb_uint8"]


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Any (H, W), (H, W, 1|2|3|4) uint8/uint16/float array -> (H, W, 3) uint8 RGB (alpha on white)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer):
        hi = float(max(a.max(), 1))
        f = a.astype(np.float32) / (255.0 if hi <= 255 else 65535.0 if hi <= 65535 else hi)
    else:
        f = a.astype(np.float32)
        if f.size and (np.nanmax(f) > 1.0 or np.nanmin(f) < 0.0):
            lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
            f = (f - lo) / max(hi - lo, 1e-12)
        f = np.nan_to_num(f)
    c = f.shape[2]
    if c in (2, 4):  # colour + alpha: composite on white
        alpha = f[..., -1:]
        f = f[..., :-1] * alpha + (1.0 - alpha)
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    return np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)


def load_image_rgb(path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (see the module docstring). Raises ImageReadError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as im:
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block must not make a readable image unreadable
                pass
            mode = im.mode
            if mode == "P" or mode == "PA":
                im = im.convert("RGBA")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGB")
            elif mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im).astype(np.uint16)
                return to_rgb_uint8(arr)
            elif mode == "I":
                arr = np.asarray(im)
                return to_rgb_uint8(arr.astype(np.uint16) if arr.max() <= 65535 and arr.min() >= 0 else arr.astype(np.float64))
            arr = np.asarray(im)
    except UnidentifiedImageError:
        raise ImageReadError(path, "unknown or unsupported image format") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, str(e) or type(e).__name__) from None
    if arr.size == 0:
        raise ImageReadError(path, "empty image")
    try:
        return to_rgb_uint8(arr)
    except ValueError as e:
        raise ImageReadError(path, str(e)) from None
