"""The analyst's report: sections, embedded plots, escaping, optional parts, promotion checks."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from training.evaluate import (
    MODEL_NAME,
    EvalRows,
    Evaluation,
    comparison,
    detection_curve,
    evaluate_rows,
    promotion_checks,
)
from training.report import (
    Png,
    best_baseline_margin,
    figures,
    metric_at,
    render_html,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KINDS = {"organic_casual": 0, "organic_developer": 0, "cot_harvest": 1, "slow_drip": 1}


def _rows(seed: int, separation: float, kinds: dict[str, int] = KINDS) -> EvalRows:
    """Accounts whose per-event scores drift up (harvesting) or stay low (organic)."""
    rng = np.random.default_rng(seed)
    rows = EvalRows()
    for kind, label in kinds.items():
        for j in range(25):
            n = int(rng.integers(5, 60))
            drift = separation * label * np.linspace(0.2, 1.0, n)
            trace = np.clip(rng.uniform(0, 0.5, n) * 0.6 + drift * 0.7, 0, 1)
            rows.account_ids.append(f"{kind}-{j}")
            rows.scores.append(float(trace[-1]))
            rows.labels.append(label)
            rows.kinds.append(kind)
            rows.campaigns.append(None)
            above = np.flatnonzero(trace >= 0.5)
            rows.first_flag.append(int(above[0]) + 1 if len(above) else None)
            rows.fleet_ids.append(None)
            rows.traces.append(trace)
    return rows


def _evaluation(
    *, baselines: bool = True, dilution: bool = True, compare: bool = True, kinds=KINDS
) -> Evaluation:
    rows = {MODEL_NAME: _rows(0, 1.0, kinds)}
    if baselines:
        rows["rules"] = _rows(1, 0.5, kinds)
        rows["prada"] = _rows(2, 0.2, kinds)
    thresholds = dict.fromkeys(rows, 0.5)
    metrics = evaluate_rows(rows[MODEL_NAME], 0.5)
    metrics["model"] = "candidate-2"
    metrics["evaluated_on"] = {"accounts": 100, "harvesting": 50, "organic": 50}
    if baselines:
        metrics["baselines"] = {
            n: evaluate_rows(r, 0.5) for n, r in rows.items() if n != MODEL_NAME
        }
        metrics["evaluated_on"]["baseline_fit"] = {
            "how": "campaign-disjoint split",
            "fit_accounts": 100,
            "note": "every method is reported on the other part only",
            "kinds_only_in_fit": ["hydra_fleet"],
        }
    if dilution:
        shares = [0.01, 0.02, 0.05, 0.10, 0.20]
        metrics["dilution"] = {
            "shares": shares,
            "n_mixed_per_share": 10,
            "n_organic": 100,
            "methods": {
                name: {
                    "recall_at_threshold": list(np.linspace(0.1, 0.9, 5) * (1 - i / 4)),
                    "recall_at_1pct_fpr": list(np.linspace(0.2, 1.0, 5) * (1 - i / 4)),
                    "control_at_threshold": 0.01,
                    "control_at_1pct_fpr": 0.0,
                }
                for i, name in enumerate(rows)
            },
        }
    if compare:
        old = evaluate_rows(_rows(3, 1.3, kinds), 0.5)
        metrics["compare"] = comparison(metrics, old, "current-1")
    return Evaluation(rows=rows, thresholds=thresholds, metrics=metrics)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(out, _evaluation())
    return out, paths, (out / "report.html").read_text()


def test_report_has_every_section(full_report) -> None:
    _, _, page = full_report
    for heading in (
        "Headline",
        "Ranking",
        "Scores by kind",
        "Per kind",
        "Time to detection",
        "Dilution",
        "Model comparison",
    ):
        assert f"<h2>{heading}</h2>" in page
    for method in (MODEL_NAME, "rules", "prada", "published MMD window test"):
        assert method in page
    assert "best baseline" in page
    assert "every method is reported on the other part only" in page
    assert "hydra_fleet" in page  # kinds the split could not evaluate are named


def test_plots_are_embedded_and_written_beside_the_page(full_report) -> None:
    out, paths, page = full_report
    pngs = sorted(p.name for p in paths if p.suffix == ".png")
    assert pngs == sorted(
        f"{n}.png" for n in ("roc", "pr", "scores_by_kind", "time_to_detection", "dilution")
    )
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs)
    on_disk = {(out / name).read_bytes() for name in pngs}
    assert {base64.b64decode(e) for e in embedded} == on_disk
    assert all(b.startswith(PNG_MAGIC) for b in on_disk)


def test_text_from_labels_and_models_is_escaped() -> None:
    kinds = {"<script>alert(1)</script>": 0, "cot & harvest": 1}
    ev = _evaluation(kinds=kinds)
    ev.metrics["model"] = 'v"1<img src=x onerror=alert(2)>'
    page = render_html(ev, figures(ev))
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "cot &amp; harvest" in page
    assert "v&quot;1&lt;img src=x onerror=alert(2)&gt;" in page


def test_report_without_baselines_dilution_or_compare(tmp_path) -> None:
    ev = _evaluation(baselines=False, dilution=False, compare=False)
    paths = write_report(tmp_path, ev)
    page = (tmp_path / "report.html").read_text()
    assert {p.name for p in paths} == {
        "report.html",
        "roc.png",
        "pr.png",
        "scores_by_kind.png",
        "time_to_detection.png",
    }
    assert "<h2>Headline</h2>" in page and "<h2>Time to detection</h2>" in page
    assert "<h2>Dilution</h2>" not in page and "<h2>Model comparison</h2>" not in page
    assert "best baseline" not in page


def test_figures_display_inline_in_a_notebook() -> None:
    figs = figures(_evaluation(dilution=False, compare=False))
    assert all(isinstance(f, Png) for f in figs.values())
    assert figs["roc"]._repr_png_().startswith(PNG_MAGIC)


def test_margin_is_against_the_best_baseline_in_each_direction() -> None:
    metrics = {
        "auroc": 0.95,
        "fpr_at_threshold": 0.01,
        "baselines": {
            "a": {"auroc": 0.90, "fpr_at_threshold": 0.05},
            "b": {"auroc": 0.80, "fpr_at_threshold": 0.02},
        },
    }
    margin = best_baseline_margin(metrics)
    assert margin["auroc"] == pytest.approx(0.05)
    assert margin["fpr_at_threshold"] == pytest.approx(-0.01)
    assert margin["recall_at_1pct_fpr"] is None


def test_detection_curve_counts_accounts_flagged_by_event_k() -> None:
    rows = EvalRows(
        labels=[1, 1, 1, 0],
        traces=[
            np.array([0.1, 0.9, 0.2]),  # flagged at event 2, later drops: still detected
            np.array([0.1] * 20 + [0.8]),  # flagged at event 21
            np.array([0.1, 0.1]),  # never
            np.array([0.99]),  # organic: not counted
        ],
    )
    assert detection_curve(rows, 0.5, [1, 2, 20, 21, 100]).tolist() == pytest.approx(
        [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3]
    )


def test_promotion_checks_flag_regressions_only_beyond_tolerance() -> None:
    current = {
        "auroc": 0.95,
        "recall_at_1pct_fpr": 0.80,
        "per_kind": {
            "organic_casual": {"label": 0, "fpr_at_threshold": 0.00},
            "cot_harvest": {"label": 1, "recall_at_threshold": 0.9},
        },
        "first_flag_event": {"median": 10.0},
    }
    candidate = {
        "auroc": 0.952,  # better, within noise either way
        "recall_at_1pct_fpr": 0.70,  # worse beyond 0.02
        "per_kind": {"organic_casual": {"label": 0, "fpr_at_threshold": 0.05}},
        "first_flag_event": {"median": 11.0},  # within 20 %
    }
    checks = {c["figure"]: c for c in promotion_checks(candidate, current)}
    assert checks["auroc"]["better"] == "model" and not checks["auroc"]["regression"]
    assert checks["recall_at_1pct_fpr"]["regression"]
    assert checks["fpr_at_threshold[organic_casual]"]["regression"]
    assert checks["first_flag_event_median"]["better"] == "compare"
    assert not checks["first_flag_event_median"]["regression"]
    assert checks["pr_auc"]["delta"] is None  # missing on both sides: reported, not judged
    section = comparison(candidate, current, "current")
    assert section["regressions"] == ["recall_at_1pct_fpr", "fpr_at_threshold[organic_casual]"]


def test_comparison_section_names_regressions(full_report) -> None:
    _, _, page = full_report
    section = page[page.index("<h2>Model comparison</h2>") :]
    assert "candidate-2" in section and "current-1" in section
    assert "fpr_at_threshold[organic_casual]" in section


def test_metric_keys_may_contain_dots() -> None:
    metrics = {"recall_at_0.1pct_fpr": 0.4, "first_flag_event": {"median": 7.0}}
    assert metric_at(metrics, "recall_at_0.1pct_fpr") == 0.4
    assert metric_at(metrics, "first_flag_event.median") == 7.0
    assert metric_at(metrics, "first_flag_event.p90") is None
    assert metric_at(metrics, "auroc") is None
