"""Metrics: thresholds at a false-positive rate and the headline figures."""

import numpy as np
import pytest

from training.metrics import detection_metrics, recall_at_fpr, threshold_at_fpr


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
