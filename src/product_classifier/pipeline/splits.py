"""Stratified, seeded train/validation/test split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from product_classifier import paths
from product_classifier.errors import DataError


def stratified_split(labels: np.ndarray, val_size: float, test_size: float, seed: int) -> np.ndarray:
    """Return an array of 'train' / 'val' / 'test', one per row, stratified on `labels`."""
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    if (counts < 3).any():
        raise DataError(f"label {values[counts < 3][0]} has fewer than 3 rows: cannot split it three ways")
    rows = np.arange(len(labels))
    rest, test = train_test_split(rows, test_size=test_size, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_size / (1 - test_size), stratify=labels[rest], random_state=seed
    )
    out = np.empty(len(labels), dtype=object)
    out[train], out[val], out[test] = paths.SPLITS
    return out
