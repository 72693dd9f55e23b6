"""Evaluation: score labelled accounts with a detector and summarise how it did.

What it knows: joining scores with labels, the headline metrics (``training.metrics``),
per-account rows that plots and comparisons need (score, label, kind, first_flag_event,
per-event probabilities for time-to-detection), and writing ``metrics.json``.
What it does not know: how plots look (``training.report``) or how baselines work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.events import EventTable
from model.scorer import Detector
from training.labels import Label
from training.metrics import detection_metrics


@dataclass
class EvalRows:
    """Per-account evaluation rows (labelled accounts only)."""

    account_ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    campaigns: list[str | None] = field(default_factory=list)
    first_flag: list[int | None] = field(default_factory=list)
    fleet_ids: list[str | None] = field(default_factory=list)
    traces: list[np.ndarray] = field(default_factory=list)  # per-event probabilities

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "account_id": a,
                "score": s,
                "label": y,
                "kind": k,
                "campaign": c,
                "first_flag_event": f,
                "fleet_id": fl,
                "n_events": len(t),
            }
            for a, s, y, k, c, f, fl, t in zip(
                self.account_ids,
                self.scores,
                self.labels,
                self.kinds,
                self.campaigns,
                self.first_flag,
                self.fleet_ids,
                self.traces,
                strict=True,
            )
        ]


def score_labelled(
    detector: Detector, table: EventTable, labels: dict[str, Label], progress: bool = False
) -> EvalRows:
    """Score every labelled account (fleets included when the model has them)."""
    rows = EvalRows()
    scores = {s.account_id: s for s in detector.score_table(table, progress=progress)}
    traces: dict[str, np.ndarray] = {}
    for acc, _emb, tr in detector.iter_traces(table, progress=False):
        if acc.account_id in labels:
            traces[acc.account_id] = tr.probs
    for acc_id, probs in traces.items():
        lab = labels[acc_id]
        s = scores[acc_id]
        rows.account_ids.append(acc_id)
        rows.scores.append(s.score)
        rows.labels.append(lab.label)
        rows.kinds.append(lab.kind or ("harvest" if lab.label else "organic"))
        rows.campaigns.append(lab.campaign)
        rows.first_flag.append(s.first_flag_event)
        rows.fleet_ids.append(s.fleet_id)
        rows.traces.append(probs)
    return rows


def fleet_metrics(rows: EvalRows) -> dict[str, Any] | None:
    """Adjusted Rand index of fleet ids against campaigns, and organic accounts in fleets."""
    if not any(rows.fleet_ids):
        return None
    from sklearn.metrics import adjusted_rand_score

    camp = [c if c else f"solo:{a}" for c, a in zip(rows.campaigns, rows.account_ids, strict=True)]
    fl = [f if f else f"solo:{a}" for f, a in zip(rows.fleet_ids, rows.account_ids, strict=True)]
    organic = [i for i, y in enumerate(rows.labels) if y == 0]
    return {
        "adjusted_rand_index": float(adjusted_rand_score(camp, fl)),
        "n_fleets": len({f for f in rows.fleet_ids if f}),
        "organic_in_fleets": (
            float(np.mean([rows.fleet_ids[i] is not None for i in organic])) if organic else None
        ),
    }


def evaluate_rows(rows: EvalRows, threshold: float) -> dict[str, Any]:
    m = detection_metrics(rows.scores, rows.labels, rows.kinds, threshold, rows.first_flag)
    fleets = fleet_metrics(rows)
    if fleets is not None:
        m["fleets"] = fleets
    return m


def write_metrics(out: Path, metrics: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return path
