"""The preprocess stage's logic: raw files -> tokens, uint8 image array, splits, vocabulary."""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from product_classifier import paths
from product_classifier.atomic import atomic_path
from product_classifier.dataset import read_products
from product_classifier.errors import ImageError
from product_classifier.inference.images import load_image_checked
from product_classifier.inference.imagestore import ImageStore
from product_classifier.inference.text import Vocabulary, clean_text
from product_classifier.pipeline.params import PreprocessParams
from product_classifier.pipeline.processed import IMAGES, LABELS, PRODUCTS, TOKENS, VOCAB
from product_classifier.pipeline.splits import stratified_split

NO_IMAGE = 255  # what a row without a usable image holds in images.npy: white, like a blank photo


_store: ImageStore | None = None  # a worker's own store, opened once (_open_store)


def _open_store(images: str) -> None:
    """Worker initializer: open the image store once per process. Opening an archive reads its whole directory
    (1.7 s at the real size's 197,456 entries); once per chunk it made the stage grow with the square of the data."""
    global _store
    _store = ImageStore(images)


def _decode_chunk(args: tuple[str, str, int, list[tuple[int, str]]]) -> list[tuple[int, str]]:
    """Decode images into rows of the shared on-disk array; return (row, error) for bad ones."""
    array_path, images, size, jobs = args
    out = np.lib.format.open_memmap(array_path, mode="r+")
    found = _store.read_many([name for _, name in jobs])
    bad = []
    for row, name in jobs:
        data = found[name]
        try:
            if data is None:
                raise ImageError(f"{name}: missing from {images}, or damaged")
            out[row] = load_image_checked(data, size, name)
        except ImageError as exc:
            out[row] = NO_IMAGE
            bad.append((row, str(exc)))
    # No flush(): it would msync the whole shared mapping once per chunk, stalling every worker on
    # disk writes. Writes through the shared mapping are in the page cache, which all readers see.
    del out
    return bad


def decode_images(images: str, names: list[str], array_path: Path, size: int, workers: int = 0) -> list[tuple[int, str]]:
    """Stream the files `names` of the store `images` (a folder or URL: imagestore.py) into a
    (n, size, size, 3) uint8 .npy file, in parallel, never all in RAM.

    Returns (row, reason) for each image that is missing, unreadable or blank; its row is white."""
    n = len(names)
    arr = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    del arr
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(512, math.ceil(n / (workers * 4))))
    jobs = list(enumerate(names))
    tasks = [(str(array_path), images, size, jobs[i : i + chunk]) for i in range(0, n, chunk)]
    bad: list[tuple[int, str]] = []
    with ProcessPoolExecutor(workers, initializer=_open_store, initargs=(images,)) as pool, tqdm(total=n, unit="img", desc="images", disable=None, file=sys.stderr) as bar:
        for task, result in zip(tasks, pool.map(_decode_chunk, tasks), strict=True):
            bad.extend(result)
            bar.update(len(task[3]))
    return sorted(bad)


def run(raw: Path, out: Path, p: PreprocessParams) -> dict:
    """Every row is kept: one whose image is missing, unreadable or blank has `has_image` false (the
    image model skips it, the predictor scores it from its text), one whose text has no usable word
    has `has_text` false (its tokens are the unknown-text input)."""
    df = read_products(raw)
    images = paths.images_url(raw, "train")
    ImageStore(images).check()  # here, in one line, not in every worker
    texts = [clean_text(d, s) for d, s in zip(df["designation"], df["description"], strict=True)]
    with atomic_path(out, is_dir=True) as tmp:
        bad = decode_images(images, list(df["image"]), tmp / IMAGES, p.image_size, p.workers)
        df["has_image"] = True
        df.iloc[[row for row, _ in bad], df.columns.get_loc("has_image")] = False
        if not df["has_image"].any():
            raise ImageError(f"no usable image among {len(df)} rows ({bad[0][1]}); check the image folder")
        for row, reason in bad[:5]:
            print(f"no usable image for row {df.index[row]}: {reason}", file=sys.stderr)
        df["has_text"] = [bool(t) for t in texts]
        split = stratified_split(df["label"].to_numpy(), p.val_size, p.test_size, p.seed)
        df["split"] = split
        train = split == "train"
        vocab = Vocabulary.fit([t for t, is_train in zip(texts, train, strict=True) if is_train], p.max_words, p.max_len)
        vocab.save(tmp / VOCAB)
        np.save(tmp / TOKENS, vocab.encode(texts))
        np.save(tmp / LABELS, df["label"].to_numpy())
        df.drop(columns=["image"]).to_csv(tmp / PRODUCTS)
    counts = {s: int((split == s).sum()) for s in paths.SPLITS}
    return {"rows": len(df), "vocabulary": vocab.size, **counts,
            "without_image": int((~df["has_image"]).sum()), "without_text": int((~df["has_text"]).sum())}
