"""Image preprocessing at scale: the project's decode path against a naive Pillow loop.

Decodes the same real 500x500 padded JPEGs (made by the project's sample generator) three ways:
- naive: `Image.open(p).convert("RGB").resize(...)` one by one, into a list of float32 arrays;
- ours, 1 process: `images.load_image` (JPEG DCT scaling via `draft`, EXIF, padding) in a loop;
- ours: `preprocess.decode_images`, the preprocess stage's parallel streaming decode (read in place from
  data/raw's archive, as the stage does) into a uint8 .npy memory map.

    python benchmarks/bench_preprocess.py [--images 400] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from common import header, median_runs, print_table, speedup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from product_classifier import paths  # noqa: E402
from product_classifier.inference.images import load_image  # noqa: E402
from product_classifier.pipeline.preprocess import decode_images  # noqa: E402
from product_classifier.pipeline.sample import generate  # noqa: E402

SIZES = (64, 224)


def naive(files: list[str], size: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(f).convert("RGB").resize((size, size)), dtype=np.float32) / 255.0 for f in files]


def ours_single(files: list[str], size: int) -> np.ndarray:
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        out[i] = load_image(f, size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="about how many training images to decode")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure (the median is shown)")
    args = parser.parse_args()
    header(f"image preprocessing: {args.images} JPEGs of 500x500, median of {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        generate(raw, max(200, args.images), seed=7)
        with zipfile.ZipFile(raw / paths.IMAGE_ARCHIVE) as zf:  # the sample's photos, as files for the loops
            names = sorted(n for n in zf.namelist() if n.startswith("image_train/"))[: args.images]
            zf.extractall(raw / "files", names)
        files = [str(raw / "files" / name) for name in names]
        store, names = paths.images_url(raw, "train"), [name.split("/", 1)[1] for name in names]
        n = len(files)
        rows = []
        for size in SIZES:
            out = raw / f"images-{size}.npy"
            t_naive = median_runs(lambda size=size: naive(files, size), args.runs)
            t_single = median_runs(lambda size=size: ours_single(files, size), args.runs)
            t_ours = median_runs(lambda size=size, out=out: decode_images(store, names, out, size), args.runs, warmup=1)
            assert np.array_equal(np.load(out), ours_single(files, size)), "parallel decode differs from load_image"
            float_mb, uint8_mb = n * size * size * 3 * 4 / 1024**2, n * size * size * 3 / 1024**2
            rows += [
                [size, "naive Pillow loop, float32 list in RAM", n / t_naive, "1.0x", f"{float_mb:.0f} MiB RAM"],
                [size, "ours, load_image loop (draft)", n / t_single, speedup(t_naive, t_single), f"{uint8_mb:.0f} MiB"],
                [size, "ours, decode_images (parallel, memmap)", n / t_ours, speedup(t_naive, t_ours),
                 f"{uint8_mb:.0f} MiB on disk"],
            ]
    print(f"{n} images\n")
    print_table(rows, ["px", "method", "images/s", "speedup", "output"])


if __name__ == "__main__":
    main()
