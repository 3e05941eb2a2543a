"""Drift statistics (serving/drift.py): a known false-alarm rate, a minimum sample, a time window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.drift import DriftWindow, g_test_p_value, g_test_p_values

ALPHA = 0.001  # monitoring/prometheus/alerts.yml: PredictionDrift fires on model_drift_p_value < 0.001
MIN_SAMPLES = 100  # serving/config.py: DRIFT_MIN_SAMPLES default


def skewed_reference(n_classes: int = 27) -> np.ndarray:
    """A predicted mix as uneven as a real one: a few frequent classes, several rare ones."""
    weights = np.geomspace(1, 0.01, n_classes)
    return weights / weights.sum()


@pytest.mark.parametrize("n", [MIN_SAMPLES, 500, 5000])
def test_false_alarm_rate_on_in_distribution_traffic_is_about_alpha(n):
    """Windows drawn from the reference itself: the share with p < alpha is alpha, within sampling error.

    Also checked at a looser alpha (0.05), where 20 000 simulations pin the rate more tightly."""
    reference = skewed_reference()
    rng = np.random.default_rng(n)
    p_values = g_test_p_values(rng.multinomial(n, reference, size=20_000), reference)
    assert p_values.shape == (20_000,) and not np.isnan(p_values).any()
    for alpha, upper in ((ALPHA, 0.003), (0.05, 0.065)):
        rate = float((p_values < alpha).mean())
        print(f"n={n} alpha={alpha}: false-alarm rate {rate:.4f}")
        assert rate <= upper, f"false-alarm rate {rate} at alpha {alpha} with n={n}"
    assert float((p_values < 0.05).mean()) >= 0.035, "the test is not so conservative that it never fires"


def test_windows_of_different_sizes_are_each_pooled_by_their_own_size():
    """The batch form (the simulations above) answers for each window what it answers for that window alone."""
    reference = skewed_reference()
    rng = np.random.default_rng(1)
    windows = np.r_[rng.multinomial(30, reference, size=3), rng.multinomial(5000, reference, size=3), np.zeros((1, 27))]
    windows[1, 0] += 40  # one window of 70 that a class floods
    batch = g_test_p_values(windows, reference)
    alone = np.array([g_test_p_value(window, reference) for window in windows])
    np.testing.assert_allclose(batch[:-1], alone[:-1], rtol=1e-12)
    assert batch[1] < 1e-6 < batch[0] and math.isnan(batch[-1]) and math.isnan(alone[-1])


def test_one_class_flooding_in_is_detected_at_the_minimum_sample():
    reference = skewed_reference()
    counts = np.zeros(len(reference), dtype=int)
    counts[10] = MIN_SAMPLES  # a class the reference gives about 2.5%
    assert g_test_p_value(counts, reference) < 1e-12


def test_a_class_never_predicted_on_validation_does_not_break_the_test():
    reference = np.r_[skewed_reference(26), 0.0]
    counts = np.random.default_rng(0).multinomial(200, reference)
    counts[-1] += 1
    assert 0 <= g_test_p_value(counts, reference) <= 1


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_below_the_minimum_sample_there_is_no_score_only_a_count():
    reference = skewed_reference()
    window = DriftWindow(reference, window_seconds=3600, max_size=5000, min_samples=MIN_SAMPLES, low_confidence=0.5)
    window.add([0] * (MIN_SAMPLES - 1), [0.9] * (MIN_SAMPLES - 1))  # one class only, but too few
    stats = window.stats()
    assert stats.predictions == MIN_SAMPLES - 1
    assert math.isnan(stats.p_value) and math.isnan(stats.score) and math.isnan(stats.low_confidence_share)
    window.add([10], [0.2])
    stats = window.stats()
    assert stats.predictions == MIN_SAMPLES
    assert stats.p_value < ALPHA and stats.score > 0.2
    assert stats.low_confidence_share == pytest.approx(1 / MIN_SAMPLES)


def test_old_predictions_leave_the_window_so_the_signal_decays():
    reference = skewed_reference()
    clock = Clock()
    window = DriftWindow(reference, window_seconds=600, max_size=5000, min_samples=MIN_SAMPLES, low_confidence=0.5, clock=clock)
    window.add([10] * 300, [0.9] * 300)
    assert window.stats().p_value < ALPHA
    clock.now = 601
    assert window.stats().predictions == 0 and math.isnan(window.stats().p_value)
    rng = np.random.default_rng(1)
    window.add(list(rng.choice(len(reference), size=400, p=reference)), [0.9] * 400)
    stats = window.stats()
    assert stats.p_value > ALPHA
