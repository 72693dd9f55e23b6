"""The notebook API: load a model, read events, score, evaluate — in a few calls.

Example::

    import distillwatch as dw
    model = dw.load_model()                         # the shipped model
    events = dw.read_events("data_samples/events.jsonl")
    scores = dw.score_frame(model, events)          # a pandas DataFrame, one row per account
    labels = dw.read_labels("data_samples/labels.jsonl")
    result = dw.evaluate(model, events, labels, baselines=True, out="eval")
    result                                          # headline table, one row per method
    result.figures["roc"]                           # plots display inline
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.events import EventTable, OnError
from model.model_dir import load_model as _load_model
from model.scorer import Detector
from training.evaluate import MODEL_NAME, EvalRows, Evaluation
from training.labels import Label
from training.labels import read_labels as _read_labels

if TYPE_CHECKING:
    from training.report import Png

PathLike = str | Path


def load_model(
    path: PathLike | None = None,
    *,
    cache_path: PathLike | None = None,
    embed_backend: str | None = None,
) -> Detector:
    """A trained detector from a model directory (default: the shipped model).

    ``embed_backend``: run the model's encoder through ``"onnx"``, ``"torch"`` or
    ``"onnx-int8"`` (faster, slightly less exact) instead of the backend it was saved with.
    """
    return _load_model(path, cache_path=cache_path, embed_backend=embed_backend)


def read_events(paths: PathLike | Sequence[PathLike], *, on_error: OnError = "raise") -> EventTable:
    """Events from .jsonl / .jsonl.gz / .parquet files, grouped by account and time-ordered."""
    from model.events import read_events as _read

    return _read(paths if isinstance(paths, str | Path) else list(paths), on_error=on_error)


def read_labels(path: PathLike, *, on_error: OnError = "raise") -> dict[str, Label]:
    labels, stats = _read_labels(path, on_error=on_error)
    if stats.n_skipped:
        import sys

        print(f"skipped {stats.n_skipped} bad labels: {stats.summary()}", file=sys.stderr)
    return labels


def events_frame(table: EventTable) -> Any:
    """Events as a pandas DataFrame (UTC ``ts``)."""
    return table.to_pandas()


def _as_table(events: Any) -> EventTable:
    if isinstance(events, EventTable):
        return events
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(events, pd.DataFrame):
        df = events.copy()
        if pd.api.types.is_datetime64_any_dtype(df["ts"]):
            df["ts"] = df["ts"].map(lambda t: t.isoformat())
        records = df.astype(object).where(df.notna(), None).to_dict("records")
        return EventTable.from_records(records, source="<DataFrame>")
    return EventTable.from_records(events)


def score_frame(model: Detector, events: Any, progress: bool = False) -> Any:
    """Score events (an EventTable, a DataFrame or records) into a DataFrame, one row per account."""
    import pandas as pd

    scores = model.score_table(_as_table(events), progress=progress)
    return pd.DataFrame([s.to_dict() for s in scores])


def fleets(model: Detector, events: Any, progress: bool = False) -> list[Any]:
    """Coordinated-account clusters found in ``events``."""
    if model.fleet_model is None:
        raise ValueError("this model has no fleet judge; retrain it with --fleets")
    return model.fleet_model.find(model, _as_table(events), progress=progress)


def train(
    events: Any,
    labels: dict[str, Label],
    *,
    out: PathLike | None = None,
    config: Any = None,
    embedder_model: str | None = None,
    cache_path: PathLike | None = None,
    progress: bool = True,
) -> tuple[Detector, dict[str, Any]]:
    """Train a detector (MiniLM embeddings, cached) and save it to ``out``."""
    from model.model_dir import build_embedder
    from training.train import train as _train

    embed_config: dict[str, Any] = {"kind": "sentence-transformers"}
    if embedder_model:
        embed_config["model"] = embedder_model
    embedder = build_embedder(embed_config, cache_path=cache_path)
    if hasattr(embedder, "config"):
        embed_config = {"kind": "sentence-transformers", **embedder.config.to_dict()}
    return _train(_as_table(events), labels, embedder, embed_config, config, out, progress)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` gives back: metrics, per-account rows, figures, files written.

    In a notebook the result shows its headline table; ``result.accounts`` is a DataFrame
    (one row per evaluated account, every method's score side by side);
    ``result.figures["roc"]`` displays the ROC plot (keys: ``roc``, ``pr``,
    ``scores_by_kind``, ``time_to_detection``, ``dilution`` when run).
    """

    evaluation: Evaluation
    paths: list[Path] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        """What metrics.json holds."""
        return self.evaluation.metrics

    @property
    def rows(self) -> EvalRows:
        """distillwatch's per-account rows (with per-event probabilities)."""
        return self.evaluation.model_rows

    @property
    def methods(self) -> list[str]:
        return list(self.evaluation.rows)

    @property
    def accounts(self) -> Any:
        """One row per evaluated account: label, kind, and each method's score and flag."""
        import pandas as pd

        ev = self.evaluation
        df = pd.DataFrame(ev.model_rows.to_records())
        df.insert(2, "flagged", df["score"] >= ev.thresholds[MODEL_NAME])
        others = {name: rows for name, rows in ev.rows.items() if name != MODEL_NAME}
        if ev.compare_rows is not None:
            others["compare"] = ev.compare_rows
        for name, rows in others.items():
            thr = ev.thresholds[name] if name in ev.thresholds else self._compare_threshold()
            side = pd.DataFrame(
                {
                    "account_id": rows.account_ids,
                    f"{name}_score": rows.scores,
                    f"{name}_flagged": [s >= thr for s in rows.scores],
                    f"{name}_first_flag_event": rows.first_flag,
                }
            )
            df = df.merge(side, on="account_id", how="left")
        return df

    def _compare_threshold(self) -> float:
        return float(self.metrics["compare"]["metrics"]["threshold"])

    def headline(self) -> Any:
        """Headline figures, one row per method (distillwatch first)."""
        import pandas as pd

        from training.report import HEADLINE, metric_at

        per_method = {MODEL_NAME: self.metrics, **self.metrics.get("baselines", {})}
        return pd.DataFrame(
            {label: [metric_at(m, key) for m in per_method.values()] for key, label, _ in HEADLINE},
            index=pd.Index(list(per_method), name="method"),
            dtype=float,
        )

    @cached_property
    def figures(self) -> dict[str, Png]:
        """The report's plots as PNG bytes that display inline, by name."""
        from training.report import figures

        return figures(self.evaluation)

    def report_html(self) -> str:
        """The full HTML report (as written to report.html)."""
        from training.report import render_html

        return render_html(self.evaluation, self.figures)

    def __repr__(self) -> str:
        ev = self.metrics.get("evaluated_on") or {}
        return f"EvaluationResult({ev.get('accounts')} accounts, methods {self.methods})\n" + str(
            self.headline().to_string(float_format=lambda v: f"{v:.3f}")
        )

    def _repr_html_(self) -> str:
        note = (self.metrics.get("evaluated_on") or {}).get("baseline_fit") or {}
        extra = f"<p><i>{html.escape(note['note'])}.</i></p>" if note.get("note") else ""
        return str(self.headline().to_html(float_format=lambda v: f"{v:.3f}")) + extra


def evaluate(
    model: Detector,
    events: Any,
    labels: dict[str, Label],
    *,
    out: PathLike | None = None,
    baselines: bool = False,
    baselines_train: tuple[Any, dict[str, Label]] | None = None,
    compare: Detector | None = None,
    dilution: bool = False,
    dilution_accounts: int = 100,
    seed: int = 0,
    report: bool = True,
    progress: bool = False,
) -> EvaluationResult:
    """Judge ``model`` on labelled events; with ``out``, write metrics.json and the report.

    ``baselines`` adds the published detectors (``training.baselines``). They are fitted on
    ``baselines_train`` (events, labels) when given; otherwise on a seeded, campaign-disjoint
    half of the labelled accounts, and then EVERY method, this model included, is reported
    on the other half only (``metrics["evaluated_on"]`` says which). ``compare`` scores a
    second model on the same accounts (``metrics["compare"]``: side-by-side checks for
    promoting ``model`` over it). ``dilution`` simulates ``dilution_accounts`` accounts per
    share that mix harvesting into organic traffic (1 % to 20 %), ten times as many organic
    ones, and records each method's recall (``training.dilution``; slow with MiniLM).

    Example::

        result = dw.evaluate(model, events, labels, baselines=True)
        result                      # headline table, one row per method
        result.figures["roc"]       # the ROC plot, inline
        result.accounts.head()      # per-account scores of every method
    """
    from training.evaluate import EvalConfig, run_evaluation, write_metrics

    config = EvalConfig(
        baselines=baselines or baselines_train is not None,
        seed=seed,
        dilution=dilution,
        dilution_accounts=dilution_accounts,
    )
    fit_data = None
    if baselines_train is not None:
        fit_data = (_as_table(baselines_train[0]), baselines_train[1])
    evaluation = run_evaluation(
        model,
        _as_table(events),
        labels,
        config,
        baseline_data=fit_data,
        compare=compare,
        progress=progress,
    )
    result = EvaluationResult(evaluation)
    if out is not None:
        out = Path(out)
        result.paths.append(write_metrics(out, evaluation.metrics))
        if report:
            from training.report import write_report

            result.paths.extend(write_report(out, evaluation, result.figures))
    return result
