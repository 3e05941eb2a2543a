"""Image decoding and resizing, shared by preprocess, evaluate and serving.

Every image becomes a `size x size x 3` uint8 RGB array: orientation from EXIF, any
mode (grayscale, palette, RGBA, CMYK, 16-bit) to RGB over white, non-square images
padded with white (product photos are shot on white), JPEGs decoded straight at a
reduced scale with libjpeg's DCT scaling (`draft`).

Hostile files (a few kB that decode to gigabytes) are refused from their header, before any
pixel is allocated: a side over MAX_SIDE, more than MAX_PIXELS in the file, or a decoded frame
that would cost more than MAX_DECODE_BYTES. An image whose longer side is over REDUCE_ABOVE is
reduced (`Image.reduce`, box averaging) before any conversion or padding, so the padded square
never exceeds REDUCE_ABOVE^2; images at or under it take the same path as always (bit-identical
outputs: the `preprocess` stage's arrays do not change).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from product_classifier.errors import ImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# A 500x500 catalogue photo is 0.25 MP; refuse anything over 40 MP (decompression bombs).
MAX_PIXELS = 40_000_000
MAX_SIDE = 10_000
"""Either side of an image, in pixels, at most (a 20000x500 strip would pad to a 20000^2 square)."""
REDUCE_ABOVE = 2048
"""Images whose longer side (after JPEG draft) is over this are reduced to at most this before conversion
and padding; at or under it, the path is unchanged."""
MAX_DECODE_BYTES = 128 * 2**20
"""One `load_image` call allocates at most this much (128 MiB) for pixels, whatever the input.

Full scale, a frame pixel costs `_FULL_SCALE_BYTES[mode]`: Pillow's storage (1 byte for 1/L/P, 2 for
16-bit, 4 for the rest) plus one more buffer at a time (the decoder's or the EXIF rotation's copy, the
conversion to a mode `Image.reduce` takes, its premultiplied-alpha copy), or the decoder's own cost when
higher (`_DECODER_BYTES`: libwebp's canvases); and the reduced copy (`_REDUCED_BYTES`) exists beside it.
The header's size, mode and format must fit this bound before `load()`. After reduction (or for images
of at most REDUCE_ABOVE a side) the conversion to RGB and the padded square cost at most about 24 bytes
per pixel of a REDUCE_ABOVE^2 square (96 MiB). tests/inference/test_images.py measures the worst cases' peak memory
against this bound."""
# Bytes per pixel of the full-scale phase (see MAX_DECODE_BYTES); any other mode: the most, 12.
_FULL_SCALE_BYTES = {"1": 2, "L": 2, "P": 9, "I;16": 6, "I;16L": 6, "I;16B": 6, "RGB": 8, "RGBA": 8, "LA": 8,
                     "CMYK": 8, "YCbCr": 8, "I": 8, "F": 8}
# Decoders that hold more than one frame while they decode: libwebp's RGBA canvas, its previous frame, the copies.
_DECODER_BYTES = {"WEBP": 16}
# The reduced image (at most REDUCE_ABOVE^2, 4 bytes a pixel) and its premultiplied copy, beside the full frame.
_REDUCED_BYTES = 8 * REDUCE_ABOVE**2
# Modes `Image.reduce` cannot average (palette indices, bilevel, 16-bit): converted first.
_REDUCIBLE = {"P": "RGBA", "PA": "RGBA", "1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I"}
BLANK_RANGE = 8  # max-min pixel spread below which an image carries no information


def load_image(source: str | os.PathLike | bytes, size: int, name: str | None = None) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to a (size, size, 3) uint8 array; errors name it `name`
    (default: the path, or "image")."""
    name = name or ("image" if isinstance(source, bytes) else str(source))
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as opened:
                _check_header(opened, name, size)
                ImageOps.exif_transpose(opened, in_place=True)  # the first frame is decoded here
                img = _reduce(opened)
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


def _check_header(img: Image.Image, name: str, size: int) -> None:
    """Refuse, from the header alone (nothing decoded yet), what would decode over the bounds; draft JPEGs."""
    if img.format not in ALLOWED_FORMATS:
        raise ImageError(f"{name}: unsupported image format {img.format}")
    w, h = img.size
    if w < 1 or h < 1 or w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
        raise ImageError(f"{name}: {w}x{h} pixels is outside the accepted range "
                         f"(at most {MAX_SIDE} a side and {MAX_PIXELS} in all)")
    if img.format == "JPEG":
        # libjpeg buffers a progressive image's DCT coefficients (2 bytes each) at full scale, whatever the draft
        progressive = img.info.get("progressive") or img.info.get("progression")
        if progressive and w * h * 2 * img.layers + _REDUCED_BYTES > MAX_DECODE_BYTES:
            raise ImageError(f"{name}: a {w}x{h} progressive JPEG decodes to more than {MAX_DECODE_BYTES // 2**20} MiB")
        img.draft("RGB", (size, size))  # decoded at 1/2, 1/4 or 1/8 scale straight away
    w, h = img.size
    per_pixel = max(_FULL_SCALE_BYTES.get(img.mode, 12), _DECODER_BYTES.get(img.format, 0))
    if w * h * per_pixel + _REDUCED_BYTES > MAX_DECODE_BYTES:
        raise ImageError(f"{name}: a {w}x{h} {img.mode} image decodes to more than {MAX_DECODE_BYTES // 2**20} MiB")


def _reduce(img: Image.Image) -> Image.Image:
    """`img` itself when its longer side is at most REDUCE_ABOVE; else reduced to that (the full-scale frame is
    released at once, not at the end of `load_image`)."""
    factor = -(-max(img.size) // REDUCE_ABOVE)
    if factor == 1:
        return img
    work = img.convert(_REDUCIBLE[img.mode]) if img.mode in _REDUCIBLE else img
    if work is not img:
        img.close()
    reduced = work.reduce(factor)
    img.close()
    return reduced


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        np.multiply(arr, 255.0 / hi, out=arr)  # in place: one float64 copy of the frame, not three
        img = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8), "L")
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


def load_image_checked(source: str | os.PathLike | bytes, size: int, name: str | None = None) -> np.ndarray:
    """`load_image` for training data, where a blank image is an error too."""
    arr = load_image(source, size, name)
    if is_blank(arr):
        raise ImageError(f"{name or source}: image is blank (a single colour)")
    return arr
