"""Hostile images, tiny on disk and huge decoded: built by tests/inference/test_images.py (the decoder's memory
bound) and tests/api/test_hostile_inputs.py (the API's answers) alike."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png(w: int, h: int, color_type: int = 2, bit_depth: int = 8) -> bytes:
    """A white-or-black PNG of any size, written row by row (the test never holds the pixels): zlib makes
    a huge blank image a few kB on disk, as an attacker's would be."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = b"\0" + bytes(w * channels * bit_depth // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    palette = chunk(b"PLTE", b"\0\0\0") if color_type == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + palette + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def bmp_rle8(w: int, h: int) -> bytes:
    """An 8-bit run-length-encoded BMP (Pillow writes BMPs uncompressed only): runs of 255 pixels a row."""
    row = b"".join(bytes([min(255, w - x), 0]) for x in range(0, w, 255)) + b"\0\0"
    data = row * h + b"\0\1"
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    offset = 14 + len(info) + 1024
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + b"\0" * 1024 + data


def pillow(mode: str, size: tuple[int, int], fmt: str, **save) -> bytes:
    return encode(Image.new(mode, size, "white" if mode != "P" else 0), fmt, **save)


# Tiny on disk, huge decoded: each is refused (422) from its header, or reduced (the wide strip, the JPEG).
HOSTILE = {
    "png-20000x500": lambda: png(20000, 500),  # the issue's: 29 kB, padded to a 20000^2 square before
    "png-9000x300": lambda: png(9000, 300),  # under MAX_SIDE: reduced, its padded square small
    "png-rgba-6000": lambda: png(6000, 6000, 6),
    "png-16bit-6000": lambda: png(6000, 6000, 0, 16),
    "bmp-rle8-6000": lambda: bmp_rle8(6000, 6000),
    "gif-6000": lambda: pillow("P", (6000, 6000), "GIF"),
    "tiff-6000": lambda: pillow("RGB", (6000, 6000), "TIFF", compression="tiff_deflate"),
    "webp-6000": lambda: pillow("RGB", (6000, 6000), "WEBP", lossless=True),
    "jpeg-6000": lambda: pillow("RGB", (6000, 6000), "JPEG"),  # drafted at 1/8 scale: answered
    # libjpeg keeps a progressive JPEG's coefficients for the whole image at full scale, whatever the draft
    "jpeg-progressive-6000": lambda: pillow("RGB", (6000, 6000), "JPEG", progressive=True, subsampling=0),
}
ANSWERED = {"png-9000x300", "jpeg-6000"}
