"""Image decoding: every mode and orientation to the same RGB uint8 array, bad files refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from product_classifier.errors import ImageError
from product_classifier.images import is_blank, load_image, load_image_checked


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


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
