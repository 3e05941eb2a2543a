"""Image decoding: every mode and orientation to the same RGB uint8 array, bad files refused."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile_images import ANSWERED, HOSTILE, encode, pillow, png
from product_classifier.errors import ImageError
from product_classifier.inference import images
from product_classifier.inference.images import MAX_DECODE_BYTES, REDUCE_ABOVE, is_blank, load_image, load_image_checked

SRC = str(Path(__file__).resolve().parents[2] / "src")


def red_left_half(size=(500, 500), mode="RGB") -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste((220, 20, 20), (0, 0, size[0] // 2, size[1]))
    return img.convert(mode) if mode != "RGB" else img


def test_jpeg_decodes_to_target_size_uint8():
    arr = load_image(encode(red_left_half()), 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert arr[32, 5, 0] > 180 and arr[32, 5, 1] < 80  # left is red
    assert arr[32, 60].min() > 230  # right is white


def test_path_and_bytes_give_the_same_array(tmp_path):
    data = encode(red_left_half())
    (tmp_path / "a.jpg").write_bytes(data)
    assert (load_image(tmp_path / "a.jpg", 48) == load_image(data, 48)).all()


@pytest.mark.parametrize("mode", ["L", "CMYK", "P"])
def test_other_modes_become_rgb(mode):
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    arr = load_image(encode(red_left_half(mode=mode), fmt), 32)
    assert arr.shape == (32, 32, 3)
    assert arr[16, 2].astype(int).sum() < arr[16, 30].astype(int).sum()  # dark left, white right


def test_transparent_png_is_composited_on_white():
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    img.paste((0, 0, 255, 255), (0, 0, 50, 100))
    arr = load_image(encode(img, "PNG"), 32)
    assert arr[16, 28].min() > 240 and arr[16, 3, 2] > 200 and arr[16, 3, 0] < 40


def test_16_bit_grayscale_is_scaled_to_8_bit():
    img = Image.fromarray(np.tile(np.linspace(0, 65535, 100).astype("<u2"), (100, 1)))
    assert img.mode == "I;16"
    arr = load_image(encode(img, "PNG"), 32)
    assert arr[:, 0].max() < 30 and arr[:, -1].min() > 200


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    arr = load_image(encode(red_left_half(), exif=exif.tobytes()), 32)
    assert arr[3, 16, 0] > 180 and arr[3, 16, 1] < 80  # red half is now on top
    assert arr[30, 16].min() > 230


def test_non_square_image_is_padded_white_not_stretched():
    img = Image.new("RGB", (400, 100), (20, 20, 200))
    arr = load_image(encode(img, "PNG"), 40)
    assert arr[2, 20].min() > 240 and arr[20, 20, 2] > 150  # white band on top, blue middle


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an image at all", "not a readable image"),
        (b"", "not a readable image"),
        (encode(red_left_half())[:2000], "corrupt or truncated"),
        (encode(red_left_half(), "GIF"), None),  # GIF is accepted
    ],
)
def test_bad_bytes_raise_image_error(data, message):
    if message is None:
        assert load_image(data, 16).shape == (16, 16, 3)
        return
    with pytest.raises(ImageError, match=message):
        load_image(data, 16)


def test_decompression_bomb_is_refused_before_decoding():
    # A PNG that claims 20000x20000 pixels (400 MP) but is tiny on disk.
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="outside the accepted range|not a readable image"):
        load_image(bomb, 16)


def test_unsupported_format_is_refused():
    with pytest.raises(ImageError, match="unsupported image format"):
        load_image(encode(red_left_half(), "PPM"), 16)


def test_blank_image_is_detected_and_refused_for_training(tmp_path):
    path = tmp_path / "blank.jpg"
    path.write_bytes(encode(Image.new("RGB", (500, 500), (255, 255, 255))))
    assert is_blank(load_image(path, 32))
    with pytest.raises(ImageError, match="blank"):
        load_image_checked(path, 32)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.jpg", 32)


# --- bounded work: hostile files, and the bound measured -----------------------------------------



def rotated_tiff(side: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return pillow("RGB", (side, side), "TIFF", compression="tiff_deflate", exif=exif)


def largest(mode: str, fmt: str = "") -> int:
    """The side of the largest square image of `mode` (in `fmt`) that load_image accepts at full scale."""
    per_pixel = max(images._FULL_SCALE_BYTES[mode], images._DECODER_BYTES.get(fmt, 0))
    return math.isqrt((MAX_DECODE_BYTES - images._REDUCED_BYTES) // per_pixel)


# The largest images each costly mode may have (at the full-scale bound, and at REDUCE_ABOVE): the bound's worst cases.
WORST = {
    "rgba-at-bound": lambda: png(largest("RGBA"), largest("RGBA"), 6),
    "rgb-at-bound-rotated": lambda: rotated_tiff(largest("RGB")),
    "palette-at-bound": lambda: png(largest("P"), largest("P"), 3),
    "16bit-at-bound": lambda: png(largest("I;16"), largest("I;16"), 0, 16),
    "grey-alpha-at-bound": lambda: png(largest("LA"), largest("LA"), 4),
    "float-at-bound": lambda: pillow("F", (largest("F"),) * 2, "TIFF", compression="tiff_deflate"),
    "webp-at-bound": lambda: pillow("RGBA", (largest("RGBA", "WEBP"),) * 2, "WEBP", lossless=True),
    "grey-40mp": lambda: png(6400, 6250, 0),
    "rgba-unreduced": lambda: png(REDUCE_ABOVE, REDUCE_ABOVE, 6),
    "palette-unreduced": lambda: pillow("P", (REDUCE_ABOVE, REDUCE_ABOVE), "GIF", transparency=0),
    "16bit-unreduced": lambda: png(REDUCE_ABOVE, REDUCE_ABOVE, 0, 16),
    "wide-unreduced": lambda: png(REDUCE_ABOVE, 64, 6),
    "jpeg-progressive-at-bound": lambda: pillow("RGB", (math.isqrt((MAX_DECODE_BYTES - images._REDUCED_BYTES) // 6),) * 2,
                                                "JPEG", progressive=True, subsampling=0),
}

PEAK_CHILD = r"""
import re, sys
from product_classifier.inference import images
from product_classifier.errors import ImageError
from product_classifier.inference.images import load_image

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

data = open(sys.argv[1], "rb").read()
load_image(open(sys.argv[2], "rb").read(), 32)  # warm: libraries loaded, first allocations made
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
try:
    answer = "ok %s" % (load_image(data, 32).shape,)
except ImageError as exc:
    answer = "refused %s" % exc
print(status("VmHWM") - before, answer)
"""


def decode_peak(data: bytes, tmp_path) -> tuple[int, str]:
    """The peak memory growth (bytes) of a fresh process decoding `data`, and what it answered."""
    (tmp_path / "image").write_bytes(data)
    (tmp_path / "warm.jpg").write_bytes(encode(red_left_half()))
    result = subprocess.run([sys.executable, "-c", PEAK_CHILD, tmp_path / "image", tmp_path / "warm.jpg"],
                            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": SRC})
    growth, answer = result.stdout.split(" ", 1)
    return int(growth), answer.strip()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux /proc")
@pytest.mark.parametrize("name", HOSTILE)
def test_tiny_file_that_decodes_huge_stays_within_the_bound(name, tmp_path):
    data = HOSTILE[name]()
    assert len(data) < 600_000, "a hostile file is small on disk"
    growth, answer = decode_peak(data, tmp_path)
    assert growth <= MAX_DECODE_BYTES, f"{name}: peak +{growth / 2**20:.0f} MiB ({answer})"
    assert answer.startswith("ok" if name in ANSWERED else "refused"), answer


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux /proc")
@pytest.mark.parametrize("name", WORST)
def test_largest_accepted_images_stay_within_the_bound(name, tmp_path):
    growth, answer = decode_peak(WORST[name](), tmp_path)
    assert answer.startswith("ok"), answer
    assert growth <= MAX_DECODE_BYTES, f"{name}: peak +{growth / 2**20:.0f} MiB"


def load_image_before_bounds(data: bytes, size: int) -> np.ndarray:
    """load_image as it was before the bounds (the preprocess stage's outputs came from it): the oracle that
    ordinary images still decode bit for bit the same."""
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray((arr * (255.0 / (arr.max() or 1.0))).clip(0, 255).astype(np.uint8), "L")
        if img.mode == "P":
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA"):
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
        img = img.convert("RGB") if img.mode != "RGB" else img
        w, h = img.size
        if w != h:
            canvas = Image.new("RGB", (max(w, h),) * 2, (255, 255, 255))
            canvas.paste(img, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
            img = canvas
        return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None), dtype=np.uint8)


def photo(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """Noise over a few blocks: nothing compresses it away, every pixel matters."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA")
    if mode in ("I;16", "F"):
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(grey if mode == "I;16" else grey.astype(np.float32))
    return img.convert(mode)


ORDINARY = [  # (size, mode, format, save options): catalogue photos and what else a user uploads, up to 2000 px
    ((500, 500), "RGB", "JPEG", {"quality": 85}),
    ((500, 500), "RGB", "JPEG", {"progressive": True}),
    ((500, 500), "L", "JPEG", {}),
    ((500, 500), "CMYK", "JPEG", {}),
    ((1600, 1200), "RGB", "JPEG", {"exif": "rotated"}),
    ((2000, 2000), "RGB", "JPEG", {}),
    ((640, 480), "RGB", "PNG", {}),
    ((300, 2000), "RGBA", "PNG", {}),
    ((2000, 1999), "LA", "PNG", {}),
    ((800, 600), "P", "PNG", {"transparency": 0}),
    ((777, 333), "1", "PNG", {}),
    ((1024, 700), "I;16", "PNG", {}),
    ((512, 512), "F", "TIFF", {}),
    ((1500, 900), "RGB", "TIFF", {"compression": "tiff_lzw", "exif": "rotated"}),
    ((600, 400), "CMYK", "TIFF", {}),
    ((640, 640), "P", "GIF", {"save_all": True, "append_images": "second"}),
    ((1000, 250), "RGB", "BMP", {}),
    ((1200, 800), "RGBA", "WEBP", {"quality": 80}),
    ((2000, 1000), "RGB", "WEBP", {"lossless": True}),
]


@pytest.mark.parametrize(("size", "mode", "fmt", "save"), ORDINARY, ids=lambda v: str(v).replace(" ", ""))
def test_ordinary_images_decode_bit_identical_to_before(size, mode, fmt, save):
    img = photo(size, mode, seed=size[0] * 7 + size[1])
    if save.get("exif") == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 8
        save = {**save, "exif": exif.tobytes() if fmt == "JPEG" else exif}
    if save.get("append_images") == "second":
        save = {**save, "append_images": [photo(size, mode, seed=1)]}
    data = encode(img, fmt, **save)
    for target in (32, 64, 224):
        assert (load_image(data, target) == load_image_before_bounds(data, target)).all(), (target, len(data))
