"""Metrics: thresholds at a false-positive rate and the headline figures."""

import numpy as np
import pytest

from training.metrics import (
    bootstrap_thresholds,
    detection_metrics,
    recall_at_fpr,
    recall_interval,
    threshold_at_fpr,
)


def test_threshold_respects_the_fpr_budget() -> None:
    neg = np.linspace(0, 1, 1000)
    for fpr in (0.01, 0.001, 0.1):
        thr = threshold_at_fpr(neg, fpr)
        assert (neg >= thr).mean() <= fpr
        assert (neg >= np.nextafter(thr, -1) - 1e-3).mean() > fpr - 2 / len(neg)


def test_zero_budget_means_above_every_negative() -> None:
    neg = np.array([0.1, 0.2, 0.3])
    assert threshold_at_fpr(neg, 0.01) > 0.3


def test_recall_and_per_kind() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.95, 0.25])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert recall_at_fpr(scores, labels, 0.01) == pytest.approx(2 / 3)
    m = detection_metrics(
        scores, labels, ["o", "o", "o", "h", "h", "slow"], 0.5, [None, None, None, 3, 40, None]
    )
    assert m["auroc"] == pytest.approx(8 / 9)
    assert m["per_kind"]["slow"]["recall_at_threshold"] == 0
    assert m["per_kind"]["o"]["fpr_at_threshold"] == 0
    assert m["first_flag_event"]["median"] == pytest.approx(21.5)


def test_no_negatives_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="organic"):
        threshold_at_fpr(np.array([]), 0.01)


def test_recall_interval_holds_the_estimate_and_narrows_with_more_accounts() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n_pos, n_neg in ((20, 300), (400, 3000)):
        neg, pos = rng.normal(size=n_neg), rng.normal(2.5, 1.0, size=n_pos)
        scores = np.r_[neg, pos]
        labels = np.r_[np.zeros(n_neg), np.ones(n_pos)]
        m = detection_metrics(scores, labels, ["o"] * n_neg + ["h"] * n_pos, 0.5)
        low, high = m["per_kind"]["h"]["recall_at_1pct_fpr_ci95"]
        assert low <= m["per_kind"]["h"]["recall_at_1pct_fpr"] <= high
        assert m["recall_at_1pct_fpr_ci95"] == [low, high]  # one harvesting kind: the same
        widths.append(high - low)
        again = detection_metrics(scores, labels, ["o"] * n_neg + ["h"] * n_pos, 0.5)
        assert again["per_kind"]["h"]["recall_at_1pct_fpr_ci95"] == [low, high]  # seeded
    assert widths[0] > 0.2 and widths[1] < widths[0] / 2


def test_bootstrap_thresholds_match_the_threshold_rule() -> None:
    neg = np.linspace(0, 1, 500)
    boot = bootstrap_thresholds(neg, 0.01, n_boot=200)
    assert boot.shape == (200,)
    assert abs(float(np.median(boot)) - threshold_at_fpr(neg, 0.01)) < 0.02
    # a kind far above every organic score is caught in every resample
    assert recall_interval(np.full(10, 5.0), boot) == [1.0, 1.0]
    with pytest.raises(ValueError, match="organic"):
        bootstrap_thresholds(np.array([]), 0.01)
    with pytest.raises(ValueError, match="harvesting"):
        recall_interval(np.array([]), boot)
