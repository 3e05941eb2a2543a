"""Drift of the recent predictions against the model's own predicted mix on the validation split.

The reference (`drift_reference` in `models/fusion/fusion.json`, written by the fuse stage) is the
*predicted* class mix on the validation split, so a model's bias is not called drift. The recent
predictions are those of the last `window_seconds` (at most `max_size` of them). Below `min_samples`
predictions there is not enough data: every statistic is NaN (an alert comparing it is false).

Class mix: a G-test (log-likelihood ratio, `scipy.stats.power_divergence`) of the window's counts
against the reference mix; its p-value has a known false-alarm rate (alerting on p < alpha fires on
in-distribution traffic with probability about alpha: measured in tests/monitoring/test_drift.py). Classes whose
expected count is under 5 are pooled into one cell, where the chi-square approximation would not hold.
The Jensen-Shannon divergence (base 2) stays as an effect size (`model_drift_score`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.stats import power_divergence

MIN_EXPECTED = 5.0
REFERENCE_FLOOR = 1e-4  # a class the model never predicted on validation is rare, not impossible


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


def g_test_p_values(counts, reference) -> np.ndarray:
    """p-value of a G-test of each row of observed class `counts` (one window per row) against the `reference`
    mix, rare cells pooled: NaN for an empty window. Windows of one size share their pooling, so they are
    tested in one `power_divergence` call (tests/monitoring/test_drift.py draws 20 000 windows at a time)."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    ref = np.maximum(np.asarray(reference, dtype=np.float64), REFERENCE_FLOOR)
    ref = ref / ref.sum()
    totals = counts.sum(axis=1)
    p_values = np.full(len(counts), math.nan)
    for n in np.unique(totals[totals > 0]):
        rows = totals == n
        windows = counts[rows]
        expected = ref * n
        rare = expected < MIN_EXPECTED
        observed, expected = windows[:, ~rare], expected[~rare]
        if rare.any():
            observed = np.c_[observed, windows[:, rare].sum(axis=1)]
            expected = np.append(expected, ref[rare].sum() * n)
        if observed.shape[1] < 2:
            p_values[rows] = 1.0
        else:
            p_values[rows] = power_divergence(observed, expected, axis=1, lambda_="log-likelihood").pvalue
    return p_values


def g_test_p_value(counts, reference) -> float:
    """p-value of a G-test of observed class `counts` against the `reference` mix (rare cells pooled)."""
    return float(g_test_p_values(counts, reference)[0])


@dataclass(frozen=True)
class DriftStats:
    predictions: int  # in the window
    p_value: float  # G-test against the reference mix; NaN below the minimum sample
    score: float  # Jensen-Shannon divergence from the reference mix; NaN below the minimum sample
    low_confidence_share: float  # NaN below the minimum sample


class DriftWindow:
    """Predicted class indices and confidences of the last `window_seconds` (at most `max_size`)."""

    def __init__(self, reference, window_seconds: float, max_size: int, min_samples: int,
                 low_confidence: float, clock=time.monotonic):
        self.reference = np.asarray(reference, dtype=np.float64)
        self.window_seconds = window_seconds
        self.min_samples = min_samples
        self.low_confidence = low_confidence
        self._clock = clock
        self._recent: deque[tuple[float, int, float]] = deque(maxlen=max_size)
        self._lock = threading.Lock()

    def add(self, indices, confidences) -> None:
        """Record predictions (on the model thread, after every forward pass: no statistics here; they are
        computed when read, at a Prometheus scrape. Computing them here cost 4% of a 1-client profile)."""
        now = self._clock()
        with self._lock:
            self._recent.extend((now, int(i), float(c)) for i, c in zip(indices, confidences, strict=True))

    def stats(self) -> DriftStats:
        with self._lock:
            return self._stats(self._clock())

    def _stats(self, now: float) -> DriftStats:
        while self._recent and self._recent[0][0] < now - self.window_seconds:
            self._recent.popleft()
        n = len(self._recent)
        if n < self.min_samples:
            return DriftStats(n, math.nan, math.nan, math.nan)
        counts = np.bincount([i for _, i, _ in self._recent], minlength=len(self.reference))
        low = sum(c < self.low_confidence for _, _, c in self._recent) / n
        return DriftStats(n, g_test_p_value(counts, self.reference), js_divergence(counts, self.reference), low)
