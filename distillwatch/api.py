"""The notebook API: load a model, read events, score, evaluate — in a few calls.

Example::

    import distillwatch as dw
    model = dw.load_model()                         # the shipped model
    events = dw.read_events("data_samples/events.jsonl")
    scores = dw.score_frame(model, events)          # a pandas DataFrame, one row per account
    result = dw.evaluate(model, events, dw.read_labels("data_samples/labels.jsonl"), out="eval")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.events import EventTable, OnError
from model.model_dir import load_model as _load_model
from model.scorer import Detector
from training.labels import Label
from training.labels import read_labels as _read_labels

PathLike = str | Path


def load_model(path: PathLike | None = None, *, cache_path: PathLike | None = None) -> Detector:
    """A trained detector from a model directory (default: the shipped model)."""
    return _load_model(path, cache_path=cache_path)


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


def evaluate(
    model: Detector,
    events: Any,
    labels: dict[str, Label],
    *,
    out: PathLike | None = None,
    baselines: bool = False,
    compare: Detector | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics (and, with ``out``, metrics.json plus the HTML report) for labelled events."""
    from training.evaluate import evaluate_rows, score_labelled, write_metrics

    table = _as_table(events)
    rows = score_labelled(model, table, labels, progress=progress)
    metrics = evaluate_rows(rows, model.threshold)
    result: dict[str, Any] = {"metrics": metrics, "rows": rows}
    if baselines:
        raise ValueError("--baselines is not available in this version (see the open issue)")
    if compare is not None:
        other = evaluate_rows(
            score_labelled(compare, table, labels, progress=progress), compare.threshold
        )
        metrics["compare"] = {
            "model": compare.meta.get("version"),
            "metrics": other,
            "delta": {
                k: metrics[k] - other[k]
                for k in _HEADLINE
                if metrics.get(k) is not None and other.get(k) is not None
            },
        }
    if out is not None:
        write_metrics(Path(out), metrics)
    return result


_HEADLINE = (
    "auroc",
    "pr_auc",
    "recall_at_1pct_fpr",
    "recall_at_0.1pct_fpr",
    "recall_at_threshold",
    "fpr_at_threshold",
)
