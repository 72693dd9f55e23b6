"""Detection metrics: ranking quality, recall at fixed false-positive rates, per kind, timing.

What it knows: how to summarise account scores against labels the way an operator judges
a detector — AUROC, PR-AUC, recall at 1 % and 0.1 % FPR (thresholds set on the organic
scores themselves, with bootstrap 95 % intervals for recall at 1 % FPR), recall and FPR at
the model's own threshold, per-kind recall / FPR, and percentiles of ``first_flag_event``.
What it does not know: models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def threshold_at_fpr(neg_scores: np.ndarray, fpr: float) -> float:
    """Smallest threshold whose false-positive rate on ``neg_scores`` is at most ``fpr``.

    With ``flagged = score >= threshold``, at most ``floor(fpr * n)`` negatives may score at
    or above it.
    """
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    if len(neg) == 0:
        raise ValueError("need organic (label 0) scores to set a threshold")
    k = int(np.floor(fpr * len(neg)))  # negatives allowed at or above the threshold
    if k >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[k], np.inf))


def recall_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    pos = scores[labels == 1]
    if len(pos) == 0:
        return float("nan")
    thr = threshold_at_fpr(scores[labels == 0], fpr)
    return float((pos >= thr).mean())


#: Bootstrap replicates behind the 95 % intervals of recall at a fixed FPR.
N_BOOTSTRAP = 1000


def bootstrap_thresholds(
    neg_scores: np.ndarray, fpr: float, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """:func:`threshold_at_fpr` of ``n_boot`` resamples (with replacement) of the organic
    scores, ``(n_boot,)``: the threshold's own sampling noise, for :func:`recall_interval`."""
    neg = np.asarray(neg_scores, dtype=np.float64)
    if len(neg) == 0:
        raise ValueError("need organic (label 0) scores to set a threshold")
    rng = np.random.default_rng(seed)
    n = len(neg)
    # the (k+1)-th highest of each resample, like threshold_at_fpr; resamples in chunks
    # of about 4 M scores, so memory stays bounded for large evaluation sets
    rank = n - 1 - min(int(np.floor(fpr * n)), n - 1)  # ascending position
    step = max(1, 4_000_000 // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, step):
        rows = min(step, n_boot - start)
        draws = neg[rng.integers(0, n, size=(rows, n))]
        out[start : start + rows] = np.partition(draws, rank, axis=1)[:, rank]
    return np.nextafter(out, np.inf)


def recall_interval(
    pos_scores: np.ndarray, thresholds: np.ndarray, level: float = 0.95, seed: int = 1
) -> list[float]:
    """Percentile-bootstrap interval ``[low, high]`` of the recall of ``pos_scores``, each
    replicate resampling the accounts against one of ``thresholds``
    (:func:`bootstrap_thresholds`), so both the kind's few accounts and the organic tail
    that sets the threshold count. Deterministic (fixed seeds)."""
    pos = np.asarray(pos_scores, dtype=np.float64)
    if len(pos) == 0:
        raise ValueError("need harvesting scores for a recall interval")
    rng = np.random.default_rng(seed)
    draws = pos[rng.integers(0, len(pos), size=(len(thresholds), len(pos)))]
    recalls = (draws >= thresholds[:, None]).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(recalls, [tail, 100 - tail])
    return [float(low), float(high)]


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90))}


def detection_metrics(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    kinds: Sequence[str],
    threshold: float,
    first_flag: Sequence[int | None] | None = None,
) -> dict[str, Any]:
    """All headline figures for one scored, labelled set of accounts."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    k = np.asarray(kinds)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    out: dict[str, Any] = {"n_accounts": len(y), "n_harvesting": n_pos, "n_organic": n_neg}
    both = n_pos > 0 and n_neg > 0
    out["auroc"] = float(roc_auc_score(y, s)) if both else None
    out["pr_auc"] = float(average_precision_score(y, s)) if both else None
    out["recall_at_1pct_fpr"] = recall_at_fpr(s, y, 0.01) if both else None
    boot = bootstrap_thresholds(s[y == 0], 0.01) if both else None
    out["recall_at_1pct_fpr_ci95"] = recall_interval(s[y == 1], boot) if boot is not None else None
    out["recall_at_0.1pct_fpr"] = recall_at_fpr(s, y, 0.001) if both else None
    flagged = s >= threshold
    out["threshold"] = threshold
    out["recall_at_threshold"] = float(flagged[y == 1].mean()) if n_pos else None
    out["fpr_at_threshold"] = float(flagged[y == 0].mean()) if n_neg else None
    per_kind: dict[str, Any] = {}
    for kind in sorted(set(k.tolist())):
        m = k == kind
        lab = int(y[m][0])
        entry: dict[str, Any] = {"label": lab, "n": int(m.sum())}
        if lab == 1:
            entry["recall_at_threshold"] = float(flagged[m].mean())
            if boot is not None:
                thr = threshold_at_fpr(s[y == 0], 0.01)
                entry["recall_at_1pct_fpr"] = float((s[m] >= thr).mean())
                entry["recall_at_1pct_fpr_ci95"] = recall_interval(s[m], boot)
        else:
            entry["fpr_at_threshold"] = float(flagged[m].mean())
        per_kind[kind] = entry
    out["per_kind"] = per_kind
    if first_flag is not None:
        ff = [f for f, yy, fl in zip(first_flag, y, flagged, strict=True) if yy == 1 and fl and f]
        out["first_flag_event"] = _percentiles(ff)
    return out
