"""Image decoding and resizing, shared by preprocess, evaluate and serving.

Every image becomes a `size x size x 3` uint8 RGB array: orientation from EXIF, any
mode (grayscale, palette, RGBA, CMYK, 16-bit) to RGB over white, non-square images
padded with white (product photos are shot on white), JPEGs decoded straight at a
reduced scale with libjpeg's DCT scaling (`draft`).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# A 500x500 catalogue photo is 0.25 MP; refuse anything over 40 MP (decompression bombs).
MAX_PIXELS = 40_000_000
BLANK_RANGE = 8  # max-min pixel spread below which an image carries no information


def load_image(source: str | os.PathLike | bytes, size: int) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to a (size, size, 3) uint8 array."""
    name = "image" if isinstance(source, bytes) else str(source)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                if img.format not in ALLOWED_FORMATS:
                    raise ImageError(f"{name}: unsupported image format {img.format}")
                w, h = img.size
                if w < 1 or h < 1 or w * h > MAX_PIXELS:
                    raise ImageError(f"{name}: {w}x{h} pixels is outside the accepted range")
                if img.format == "JPEG":
                    img.draft("RGB", (size, size))
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
                img = _pad_square(img)
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
                return np.asarray(img, dtype=np.uint8)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: not a readable image ({type(exc).__name__})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB") if img.mode != "RGB" else img


def _pad_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def is_blank(arr: np.ndarray) -> bool:
    return int(arr.max()) - int(arr.min()) < BLANK_RANGE


def load_image_checked(path: str | Path, size: int) -> np.ndarray:
    """`load_image` for training data, where a blank image is an error too."""
    arr = load_image(path, size)
    if is_blank(arr):
        raise ImageError(f"{path}: image is blank (a single colour)")
    return arr
