"""The evaluation notebook runs top to bottom and draws its plots; the notebook API behind it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "evaluation.ipynb"


def _execute(timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return nb


def _outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]


def _n_images(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def test_committed_notebook_has_no_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_notebook_runs_with_a_tiny_model(monkeypatch, tiny_model_dir: Path) -> None:
    """The whole notebook, with the hashing-embedder model standing in for MiniLM."""
    monkeypatch.setenv("DISTILLWATCH_MODEL", str(tiny_model_dir))
    nb = _execute(timeout=600)
    assert not [o for o in _outputs(nb) if o["output_type"] == "error"]
    assert _n_images(nb) == 4  # roc, pr, scores by kind, time to detection
    headline = next(o for o in _outputs(nb) if "rules" in o.get("data", {}).get("text/html", ""))
    assert all(n in headline["data"]["text/html"] for n in ("distillwatch", "prada", "mmd_window"))


@pytest.mark.slow
def test_notebook_runs_with_the_shipped_model(monkeypatch) -> None:
    """As CI runs it: the shipped MiniLM model, a cold embedding cache."""
    monkeypatch.delenv("DISTILLWATCH_MODEL", raising=False)
    start = time.perf_counter()
    nb = _execute(timeout=900)
    print(f"notebook ran in {time.perf_counter() - start:.0f} s")
    assert _n_images(nb) == 4


# --------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def result(tiny_detector, sim_table, sim_labels, tmp_path_factory):
    import distillwatch as dw

    out = tmp_path_factory.mktemp("eval")
    return dw.evaluate(tiny_detector, sim_table, sim_labels, out=out)


def test_evaluate_result_displays_metrics_accounts_and_figures(result, sim_labels) -> None:
    assert result.methods == ["distillwatch"]
    assert 0.0 <= result.metrics["auroc"] <= 1.0
    accounts = result.accounts
    assert len(accounts) == len(sim_labels)
    assert {"account_id", "label", "kind", "score", "flagged", "first_flag_event"} <= set(accounts)
    assert (accounts["flagged"] == (accounts["score"] >= result.metrics["threshold"])).all()
    assert set(result.figures) == {"roc", "pr", "scores_by_kind", "time_to_detection"}
    assert result.figures["roc"]._repr_png_().startswith(b"\x89PNG")
    assert "AUROC" in result._repr_html_() and "<table" in result._repr_html_()
    assert list(result.headline().index) == ["distillwatch"]


def test_evaluate_with_out_writes_metrics_report_and_plots(result) -> None:
    names = sorted(p.name for p in result.paths)
    plots = ["roc.png", "pr.png", "scores_by_kind.png", "time_to_detection.png"]
    assert names == sorted(["metrics.json", "report.html", *plots])
    assert all(p.exists() for p in result.paths)
    assert json.loads(result.paths[0].read_text())["auroc"] == result.metrics["auroc"]
    assert "<h2>Headline</h2>" in result.report_html()
