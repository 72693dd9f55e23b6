"""Evaluation: score labelled accounts with a detector (and baselines) and summarise how each did.

What it knows: joining scores with labels, the headline metrics (``training.metrics``),
per-account rows that plots and comparisons need (score, label, kind, first_flag_event,
per-event scores for time to detection), where baselines learn without seeing the accounts
they are judged on, the checks that decide whether a retrained model may replace the
current one, and writing ``metrics.json``.
What it does not know: how plots look (``training.report``) or how baselines work
(``training.baselines``), or how dilution is simulated (``training.dilution``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.events import AccountEvents, EventTable
from model.scorer import Detector
from training.labels import Label
from training.metrics import detection_metrics

#: The detector's name in metrics, tables and plots, beside the baselines' names.
MODEL_NAME = "distillwatch"

#: Time-to-detection checkpoints reported in metrics.json: share of harvesting accounts
#: flagged by an online scorer within the first k events.
DETECTION_KS: tuple[int, ...] = (10, 30, 100)

#: Organic accounts the dilution experiment simulates per mixed account of one share (so
#: that the 1 % FPR threshold is set on enough organic accounts).
DILUTION_ORGANIC_PER_MIXED = 10


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
    #: whether the account's fleet was judged harvesting (False when in no fleet)
    fleet_flagged: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.account_ids)

    def subset(self, account_ids: Iterable[str]) -> EvalRows:
        """The rows of ``account_ids`` only, in this object's order."""
        keep = set(account_ids)
        idx = [i for i, a in enumerate(self.account_ids) if a in keep]
        return EvalRows(
            account_ids=[self.account_ids[i] for i in idx],
            scores=[self.scores[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            kinds=[self.kinds[i] for i in idx],
            campaigns=[self.campaigns[i] for i in idx],
            first_flag=[self.first_flag[i] for i in idx],
            fleet_ids=[self.fleet_ids[i] for i in idx],
            traces=[self.traces[i] for i in idx],
            fleet_flagged=[self.fleet_flagged[i] for i in idx] if self.fleet_flagged else [],
        )

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


@dataclass
class LabelledInputs:
    """The labelled accounts a detector scored, with their embeddings (what baselines read)."""

    accounts: list[AccountEvents] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)  # (T, D) float32 each

    def subset(self, account_ids: Iterable[str]) -> LabelledInputs:
        keep = set(account_ids)
        idx = [i for i, a in enumerate(self.accounts) if a.account_id in keep]
        return LabelledInputs([self.accounts[i] for i in idx], [self.embeddings[i] for i in idx])


def score_labelled(
    detector: Detector, table: EventTable, labels: dict[str, Label], progress: bool = False
) -> EvalRows:
    """Score every labelled account (fleets included when the model has them)."""
    return score_with_inputs(detector, table, labels, progress=progress)[0]


def score_with_inputs(
    detector: Detector,
    table: EventTable,
    labels: dict[str, Label],
    *,
    keep_inputs: bool = False,
    progress: bool = False,
) -> tuple[EvalRows, LabelledInputs]:
    """Rows of the labelled accounts and, with ``keep_inputs``, their events and embeddings.

    Every account of ``table`` is scored once (unlabelled ones too: they are fleet context);
    only labelled accounts become rows.
    """
    scores, traces = [], []
    fleet_inputs = []
    kept = LabelledInputs()
    for acc, emb, tr in detector.iter_traces(table, progress=progress):
        scores.append(detector.account_score(tr))
        traces.append(tr.probs)
        if detector.fleet_model is not None:
            fleet_inputs.append((acc, emb, tr))
        if keep_inputs and acc.account_id in labels:
            kept.accounts.append(acc)
            kept.embeddings.append(np.asarray(emb, dtype=np.float32))
    flagged_fleet: set[str] = set()  # accounts whose fleet was judged harvesting
    if detector.fleet_model is not None and fleet_inputs:
        fleets, scores = detector.fleet_model.run(detector, fleet_inputs, scores)
        threshold = detector.fleet_model.flag_threshold
        flagged_fleet = {a for f in fleets if f.score >= threshold for a in f.accounts}
    rows = EvalRows()
    for s, probs in zip(scores, traces, strict=True):
        lab = labels.get(s.account_id)
        if lab is None:
            continue
        rows.account_ids.append(s.account_id)
        rows.scores.append(s.score)
        rows.labels.append(lab.label)
        rows.kinds.append(kind_of(lab))
        rows.campaigns.append(lab.campaign)
        rows.first_flag.append(s.first_flag_event)
        rows.fleet_ids.append(s.fleet_id)
        rows.traces.append(probs)
        rows.fleet_flagged.append(s.account_id in flagged_fleet)
    return rows, kept


def kind_of(label: Label) -> str:
    return label.kind or ("harvest" if label.label else "organic")


# --------------------------------------------------------------------------- metrics


def first_crossings(traces: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """1-based event at which each trace first reaches ``threshold``; ``inf`` if never."""
    out = np.full(len(traces), np.inf)
    for i, tr in enumerate(traces):
        above = np.flatnonzero(np.asarray(tr) >= threshold)
        if len(above):
            out[i] = above[0] + 1
    return out


def detection_curve(rows: EvalRows, threshold: float, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """Share of harvesting accounts an online scorer had flagged within the first k events.

    An account shorter than k counts as detected if it was flagged by its last event.
    """
    harvest = [t for t, y in zip(rows.traces, rows.labels, strict=True) if y == 1]
    if not harvest:
        return np.full(len(ks), np.nan)
    first = first_crossings(harvest, threshold)
    done = np.sort(first)
    return np.searchsorted(done, np.asarray(ks, dtype=np.float64), side="right") / len(done)


def fleet_metrics(rows: EvalRows) -> dict[str, Any] | None:
    """Adjusted Rand index of fleet ids against campaigns, and organic accounts in fleets."""
    if not any(rows.fleet_ids):
        return None
    from sklearn.metrics import adjusted_rand_score

    camp = [c if c else f"solo:{a}" for c, a in zip(rows.campaigns, rows.account_ids, strict=True)]
    fl = [f if f else f"solo:{a}" for f, a in zip(rows.fleet_ids, rows.account_ids, strict=True)]
    organic = [i for i, y in enumerate(rows.labels) if y == 0]
    flagged = rows.fleet_flagged or [False] * len(rows)
    by_kind = {}  # ARI among the accounts of each harvesting kind that campaigns run
    for kind in sorted({k for k, c in zip(rows.kinds, rows.campaigns, strict=True) if c}):
        idx = [i for i, k in enumerate(rows.kinds) if k == kind]
        by_kind[kind] = float(adjusted_rand_score([camp[i] for i in idx], [fl[i] for i in idx]))
    return {
        "adjusted_rand_index": float(adjusted_rand_score(camp, fl)),
        "adjusted_rand_index_by_kind": by_kind,
        "n_fleets": len({f for f in rows.fleet_ids if f}),
        "organic_in_fleets": (
            float(np.mean([rows.fleet_ids[i] is not None for i in organic])) if organic else None
        ),
        "organic_in_flagged_fleets": (
            float(np.mean([flagged[i] for i in organic])) if organic else None
        ),
    }


def evaluate_rows(rows: EvalRows, threshold: float) -> dict[str, Any]:
    """Headline, per-kind, timing and (when present) fleet figures of one method."""
    m = detection_metrics(rows.scores, rows.labels, rows.kinds, threshold, rows.first_flag)
    shares = detection_curve(rows, threshold, DETECTION_KS)
    m["detected_within"] = {
        str(k): None if np.isnan(v) else float(v) for k, v in zip(DETECTION_KS, shares, strict=True)
    }
    fleets = fleet_metrics(rows)
    if fleets is not None:
        m["fleets"] = fleets
    return m


# --------------------------------------------------------------------------- comparison

Better = Literal["higher", "lower"]

#: Figures a retrained model is judged on before it replaces the current one: which way is
#: better and how much worse still counts as noise (absolute, in the figure's own units).
PROMOTION_CHECKS: tuple[tuple[str, Better, float], ...] = (
    ("auroc", "higher", 0.005),
    ("pr_auc", "higher", 0.01),
    ("recall_at_1pct_fpr", "higher", 0.02),
    ("recall_at_0.1pct_fpr", "higher", 0.03),
    ("recall_at_threshold", "higher", 0.02),
    ("fpr_at_threshold", "lower", 0.005),
)
ORGANIC_FPR_TOLERANCE = 0.01
#: Median events to first flag may grow by this share (and at least one event) before it
#: counts as a regression.
TTD_TOLERANCE = 0.2


def _check(
    name: str, a: float | None, b: float | None, better: Better, tolerance: float
) -> dict[str, Any]:
    if a is None or b is None:
        return {"figure": name, "model": a, "compare": b, "delta": None, "better": None}
    delta = a - b
    gain = delta if better == "higher" else -delta
    winner = "tie" if abs(delta) < 1e-12 else ("model" if gain > 0 else "compare")
    return {
        "figure": name,
        "model": a,
        "compare": b,
        "delta": delta,
        "better": winner,
        "regression": bool(gain < -tolerance),
    }


def promotion_checks(model: dict[str, Any], compare: dict[str, Any]) -> list[dict[str, Any]]:
    """Side-by-side figures of a candidate (``model``) and the current model (``compare``).

    Each entry says which is better and flags a ``regression`` when the candidate is worse
    by more than the tolerance: headline figures, FPR of every organic kind, and the
    median time to detection.
    """
    checks = [_check(k, model.get(k), compare.get(k), b, t) for k, b, t in PROMOTION_CHECKS]
    kinds_a, kinds_b = model.get("per_kind", {}), compare.get("per_kind", {})
    for kind in sorted(set(kinds_a) | set(kinds_b)):
        a, b = kinds_a.get(kind, {}), kinds_b.get(kind, {})
        if a.get("label", b.get("label")) == 0:
            checks.append(
                _check(
                    f"fpr_at_threshold[{kind}]",
                    a.get("fpr_at_threshold"),
                    b.get("fpr_at_threshold"),
                    "lower",
                    ORGANIC_FPR_TOLERANCE,
                )
            )
    ttd_a = (model.get("first_flag_event") or {}).get("median")
    ttd_b = (compare.get("first_flag_event") or {}).get("median")
    tol = max(1.0, TTD_TOLERANCE * ttd_b) if ttd_b is not None else 0.0
    checks.append(_check("first_flag_event_median", ttd_a, ttd_b, "lower", tol))
    return checks


# --------------------------------------------------------------------------- a whole run


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation run does beyond scoring the model.

    ``fit_share`` is the share of the evaluated accounts (whole campaigns) that fits the
    baselines when no separate fitting data is given; every method is then reported on the
    remaining accounts only. ``dilution_accounts`` is the number of mixed accounts the
    dilution experiment simulates per harvesting share (200 events each); it simulates
    :data:`DILUTION_ORGANIC_PER_MIXED` times as many organic accounts.
    """

    baselines: bool = False
    fit_share: float = 0.5
    seed: int = 0
    dilution: bool = False
    dilution_accounts: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.fit_share < 1.0:
            raise ValueError(f"fit_share must be in (0, 1), got {self.fit_share}")
        if self.dilution_accounts < 1:
            raise ValueError(f"dilution_accounts must be >= 1, got {self.dilution_accounts}")


@dataclass
class Evaluation:
    """One evaluation run: every method's rows and threshold on the same accounts, metrics.

    ``rows`` and ``thresholds`` are keyed by method name, :data:`MODEL_NAME` first.
    """

    rows: dict[str, EvalRows]
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    compare_rows: EvalRows | None = None

    @property
    def model_rows(self) -> EvalRows:
        return self.rows[MODEL_NAME]


def _join(table: EventTable, labels: dict[str, Label], what: str = "events") -> dict[str, Label]:
    present = {a: labels[a] for a in table.account_ids if a in labels}
    if not present:
        raise ValueError(
            f"none of the {table.n_accounts} accounts in the {what} has a label "
            f"({len(labels)} labels read): are these the right files?"
        )
    return present


def _split_for_baselines(
    labels: dict[str, Label], config: EvalConfig
) -> tuple[set[str], set[str], dict[str, Any]]:
    """(fit ids, evaluated ids, description): whole campaigns on one side, stratified by kind."""
    from training.dataset import group_split

    labs = list(labels.values())
    fit_idx, eval_idx = group_split(labs, 1.0 - config.fit_share, config.seed)
    fit_ids = {labs[i].account_id for i in fit_idx}
    eval_ids = {labs[i].account_id for i in eval_idx}
    fit_kinds = {kind_of(labs[i]) for i in fit_idx}
    eval_kinds = {kind_of(labs[i]) for i in eval_idx}
    info = {
        "how": "campaign-disjoint split of the evaluated data (training.dataset.group_split)",
        "seed": config.seed,
        "fit_share": config.fit_share,
        "fit_accounts": len(fit_ids),
        "evaluated_accounts": len(eval_ids),
        "kinds_only_in_fit": sorted(fit_kinds - eval_kinds),
        "note": (
            "baselines were fitted on one part of the labelled accounts; every method, "
            "distillwatch included, is reported on the other part only"
        ),
    }
    _require_both_labels(labels, eval_ids, "the evaluated part of the split")
    _require_both_labels(labels, fit_ids, "the baseline-fitting part of the split")
    return fit_ids, eval_ids, info


def _require_both_labels(labels: dict[str, Label], ids: Iterable[str], where: str) -> None:
    ys = {labels[a].label for a in ids}
    if ys != {0, 1}:
        raise ValueError(
            f"{where} needs both organic and harvesting accounts, has only "
            f"{'harvesting' if ys == {1} else 'organic' if ys == {0} else 'none'}; "
            "give more labelled accounts or --baselines-train-events/--baselines-train-labels"
        )


def _separate_fit_inputs(
    detector: Detector,
    table: EventTable,
    labels: dict[str, Label],
    evaluated: dict[str, Label],
    progress: bool,
) -> tuple[LabelledInputs, dict[str, Label], dict[str, Any]]:
    fit_labels = _join(table, labels, "baseline-fitting events")
    shared = sorted(set(fit_labels) & set(evaluated))
    if shared:
        raise ValueError(
            f"{len(shared)} accounts (e.g. {shared[0]!r}) are in both the baseline-fitting "
            "and the evaluated data; baselines must be judged on accounts they never saw"
        )
    camps = {lab.campaign for lab in fit_labels.values() if lab.campaign}
    leaked = sorted(
        {lab.campaign for lab in evaluated.values() if lab.campaign and lab.campaign in camps}
    )
    _require_both_labels(fit_labels, fit_labels, "the baseline-fitting data")
    accounts = [acc for acc in table.accounts() if acc.account_id in fit_labels]
    vectors = detector.embed([p for acc in accounts for p in acc.prompts], progress=progress)
    bounds = np.cumsum([0] + [len(acc) for acc in accounts])
    inputs = LabelledInputs(
        accounts,
        [np.asarray(vectors[a:b], dtype=np.float32) for a, b in pairwise(bounds)],
    )
    info = {
        "how": "baselines fitted on separate labelled data",
        "fit_accounts": len(fit_labels),
        "evaluated_accounts": len(evaluated),
        "campaigns_in_both": leaked,
    }
    return inputs, fit_labels, info


def _fit_baselines(inputs: LabelledInputs, labels: dict[str, Label], seed: int) -> list[Any]:
    from training.baselines import default_baselines, fit_baselines

    return fit_baselines(default_baselines(seed=seed), inputs.accounts, inputs.embeddings, labels)


def run_evaluation(
    detector: Detector,
    table: EventTable,
    labels: dict[str, Label],
    config: EvalConfig | None = None,
    *,
    baseline_data: tuple[EventTable, dict[str, Label]] | None = None,
    compare: Detector | None = None,
    progress: bool = False,
) -> Evaluation:
    """Score ``table`` with ``detector`` (and baselines, a second model, dilution) and summarise.

    Baselines fit on ``baseline_data`` when given, else on a campaign-disjoint share of the
    labelled accounts; then every method is judged on the same accounts, none of which any
    baseline saw. ``metrics['evaluated_on']`` records which.
    """
    config = config or EvalConfig()
    if baseline_data is not None and not config.baselines:
        raise ValueError("baseline fitting data given but baselines are off")
    evaluated = _join(table, labels)
    split_info: dict[str, Any] | None = None
    fit_inputs = LabelledInputs()
    fit_labels: dict[str, Label] = {}
    split_inside = config.baselines and baseline_data is None
    if split_inside:
        fit_ids, eval_ids, split_info = _split_for_baselines(evaluated, config)
        fit_labels = {a: evaluated[a] for a in fit_ids}
        evaluated = {a: evaluated[a] for a in eval_ids}
    elif baseline_data is not None:
        fit_inputs, fit_labels, split_info = _separate_fit_inputs(
            detector, *baseline_data, evaluated, progress
        )
    labelled = {**evaluated, **fit_labels} if split_inside else evaluated
    all_rows, inputs = score_with_inputs(
        detector, table, labelled, keep_inputs=config.baselines, progress=progress
    )
    if split_inside:
        fit_inputs = inputs.subset(fit_labels)
        inputs = inputs.subset(evaluated)
    rows = {MODEL_NAME: all_rows.subset(evaluated)}
    thresholds = {MODEL_NAME: detector.threshold}
    fitted: list[Any] = []
    if config.baselines:
        fitted = _fit_baselines(fit_inputs, fit_labels, config.seed)
        rows.update(_baseline_rows(fitted, inputs, evaluated, progress))
        thresholds.update({b.name: float(b.threshold_) for b in fitted})
    metrics = evaluate_rows(rows[MODEL_NAME], detector.threshold)
    metrics["model"] = detector.meta.get("version")
    metrics["evaluated_on"] = _evaluated_on(rows[MODEL_NAME], split_info)
    if fitted:
        metrics["baselines"] = {
            b.name: evaluate_rows(rows[b.name], thresholds[b.name]) for b in fitted
        }
    compare_rows = None
    if compare is not None:
        compare_rows = score_labelled(compare, table, evaluated, progress=progress)
        metrics["compare"] = _compare_section(metrics, compare, compare_rows)
    if config.dilution:
        metrics["dilution"] = _run_dilution(detector, fitted, config, progress)
    return Evaluation(rows=rows, thresholds=thresholds, metrics=metrics, compare_rows=compare_rows)


def _baseline_rows(
    fitted: Sequence[Any], inputs: LabelledInputs, labels: dict[str, Label], progress: bool
) -> dict[str, EvalRows]:
    from training.baselines import run_baselines

    return run_baselines(fitted, inputs.accounts, inputs.embeddings, labels, progress=progress)


def _evaluated_on(rows: EvalRows, split: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "accounts": len(rows),
        "harvesting": int(sum(rows.labels)),
        "organic": len(rows) - int(sum(rows.labels)),
        "baseline_fit": split,
    }


def _compare_section(metrics: dict[str, Any], compare: Detector, rows: EvalRows) -> dict[str, Any]:
    other = evaluate_rows(rows, compare.threshold)
    section = comparison(metrics, other, compare.meta.get("version"))
    section["path"] = compare.meta.get("path")
    return section


def comparison(
    metrics: dict[str, Any], other: dict[str, Any], other_name: str | None
) -> dict[str, Any]:
    """metrics.json's ``compare`` section: the other model's figures, deltas and checks."""
    checks = promotion_checks(metrics, other)
    return {
        "model": other_name,
        "metrics": other,
        "delta": {c["figure"]: c["delta"] for c in checks if c["delta"] is not None},
        "checks": checks,
        "regressions": [c["figure"] for c in checks if c.get("regression")],
    }


def _run_dilution(
    detector: Detector, baselines: Sequence[Any], config: EvalConfig, progress: bool
) -> dict[str, Any]:
    from training.dilution import dilution_curve

    return dilution_curve(
        detector,
        list(baselines),
        n_accounts_per_share=config.dilution_accounts,
        n_organic=DILUTION_ORGANIC_PER_MIXED * config.dilution_accounts,
        seed=config.seed,
        progress=progress,
    )


def write_metrics(out: Path, metrics: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return float(value)
