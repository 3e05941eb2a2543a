"""The preprocess stage's logic: raw files -> tokens, uint8 image array, splits, vocabulary."""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import paths
from .atomic import atomic_path
from .dataset import read_products
from .errors import DataError, ImageError
from .images import load_image_checked
from .params import PreprocessParams
from .splits import stratified_split
from .text import Vocabulary, clean_text

PRODUCTS, IMAGES, TOKENS, LABELS, VOCAB = (
    paths.PRODUCTS_FILE, paths.IMAGES_FILE, paths.TOKENS_FILE, paths.LABELS_FILE, paths.VOCAB_FILE)


def _decode_chunk(args: tuple[str, int, list[tuple[int, str]], int]) -> list[tuple[int, str]]:
    """Decode images into rows of the shared on-disk array; return (row, error) for bad ones."""
    array_path, size, jobs, n = args
    out = np.lib.format.open_memmap(array_path, mode="r+")
    bad = []
    for row, path in jobs:
        try:
            out[row] = load_image_checked(path, size)
        except ImageError as exc:
            bad.append((row, str(exc)))
    # No flush(): it would msync the whole shared mapping once per chunk, stalling every worker on
    # disk writes. Writes through the shared mapping are in the page cache, which all readers see.
    del out
    return bad


def decode_images(image_paths: list[str], array_path: Path, size: int, workers: int = 0) -> list[tuple[int, str]]:
    """Stream images into a (n, size, size, 3) uint8 .npy file, in parallel, never all in RAM."""
    n = len(image_paths)
    arr = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    del arr
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(512, math.ceil(n / (workers * 4))))
    jobs = list(enumerate(image_paths))
    tasks = [(str(array_path), size, jobs[i : i + chunk], n) for i in range(0, n, chunk)]
    bad: list[tuple[int, str]] = []
    with ProcessPoolExecutor(workers) as pool, tqdm(total=n, unit="img", desc="images", disable=None, file=sys.stderr) as bar:
        for task, result in zip(tasks, pool.map(_decode_chunk, tasks), strict=True):
            bad.extend(result)
            bar.update(len(task[2]))
    return sorted(bad)


def run(raw: Path, out: Path, p: PreprocessParams) -> dict:
    df = read_products(raw)
    texts = [clean_text(d, s) for d, s in zip(df["designation"], df["description"], strict=True)]
    with atomic_path(out, is_dir=True) as tmp:
        bad = decode_images(list(df["image_path"]), tmp / IMAGES, p.image_size, p.workers)
        if bad and not p.skip_bad_images:
            row, message = bad[0]
            raise ImageError(f"{message} ({len(bad)} bad image(s); set preprocess.skip_bad_images: true to drop them)")
        keep = np.ones(len(df), dtype=bool)
        keep[[row for row, _ in bad]] = False
        split = np.full(len(df), "dropped", dtype=object)
        split[keep] = stratified_split(df["label"].to_numpy()[keep], p.val_size, p.test_size, p.seed)
        df["split"] = split
        train = split == "train"
        vocab = Vocabulary.fit([t for t, is_train in zip(texts, train, strict=True) if is_train], p.max_words, p.max_len)
        vocab.save(tmp / VOCAB)
        np.save(tmp / TOKENS, vocab.encode(texts))
        np.save(tmp / LABELS, df["label"].to_numpy())
        df.drop(columns=["image_path"]).to_csv(tmp / PRODUCTS)
        if not train.any():
            raise DataError("no training rows left after dropping bad images")
    counts = {s: int((split == s).sum()) for s in ("train", "val", "test", "dropped")}
    return {"rows": len(df), "vocabulary": vocab.size, **counts}


class Processed:
    """Read side of data/processed: arrays are memory-mapped, rows selected by split."""

    def __init__(self, folder: Path):
        import pandas as pd

        self.folder = Path(folder)
        for name in (PRODUCTS, IMAGES, TOKENS, LABELS, VOCAB):
            if not (self.folder / name).exists():
                raise DataError(f"{self.folder / name} not found: run `dvc repro preprocess` first")
        self.products = pd.read_csv(self.folder / PRODUCTS, index_col=0, keep_default_na=False,
                                    dtype={"designation": "string", "description": "string"})
        self.images = np.load(self.folder / IMAGES, mmap_mode="r")
        self.tokens = np.load(self.folder / TOKENS)
        self.labels = np.load(self.folder / LABELS).astype(np.int64)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.products["split"].to_numpy() == split)

    @property
    def vocab_path(self) -> Path:
        return self.folder / VOCAB
