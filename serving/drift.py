"""Drift of the predicted-class mix against the training mix: pure math plus a bounded window."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence in bits (base 2), in [0, 1]; inputs are normalised, zeros allowed."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"distributions must be 1-D of equal length, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("distributions must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(min(1.0, max(0.0, (kl(p) + kl(q)) / 2)))


def class_mix(indices, n_classes: int) -> np.ndarray:
    """Share of each class index among `indices`."""
    counts = np.bincount(np.asarray(list(indices), dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


class DriftWindow:
    """The last `size` predicted class indices; `score()` is their JS divergence from the reference mix."""

    def __init__(self, reference, size: int):
        self.reference = np.asarray(reference, dtype=np.float64)
        self._recent: deque[int] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, indices) -> float:
        with self._lock:
            self._recent.extend(int(i) for i in indices)
            return js_divergence(class_mix(self._recent, len(self.reference)), self.reference)
