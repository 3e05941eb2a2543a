"""The read side of data/processed (written by preprocess.py): what training, fuse and evaluation read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from product_classifier import paths
from product_classifier.errors import DataError

PRODUCTS, IMAGES, TOKENS, LABELS, VOCAB = (
    paths.PRODUCTS_FILE, paths.IMAGES_FILE, paths.TOKENS_FILE, paths.LABELS_FILE, paths.VOCAB_FILE)


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

    def rows(self, split: str, with_image: bool = False, with_text: bool = False) -> np.ndarray:
        """Row numbers of `split`; only those with a usable image / text if asked."""
        keep = self.products["split"].to_numpy() == split
        if with_image:
            keep &= self.products["has_image"].to_numpy(dtype=bool)
        if with_text:
            keep &= self.products["has_text"].to_numpy(dtype=bool)
        return np.flatnonzero(keep)

    @property
    def vocab_path(self) -> Path:
        return self.folder / VOCAB
