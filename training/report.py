"""The analyst's report: one self-contained HTML page (and its PNGs) for an evaluation run.

What it knows: how an :class:`training.evaluate.Evaluation` looks to a reader — ROC and PR
curves of every method on the same axes, score distributions by kind with the model's
threshold, time to detection, the dilution curve against the published anchor, headline
and per-kind tables with distillwatch's margin over the best baseline, fleet figures and
the side-by-side checks for promoting a retrained model. Each plot is one function
returning PNG bytes (:class:`Png`, which also shows itself inline in a notebook); one
function assembles the HTML, with every piece of text escaped.
What it does not know: how figures are computed (``training.evaluate``), files other than
the ones it writes. matplotlib is imported on first use, with the Agg canvas, never pyplot.

Example::

    evaluation = run_evaluation(detector, table, labels, EvalConfig(baselines=True))
    write_report(Path("eval"), evaluation)      # eval/report.html + eval/*.png
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import MODEL_NAME, EvalRows, Evaluation, detection_curve

#: Published anchor for the dilution curve: recall of the MMD window test (Liu, Guo and
#: Dong 2026) when harvesting is this share of an account's traffic.
MMD_ANCHOR: tuple[tuple[float, float], ...] = ((0.05, 0.59), (0.10, 0.94))

#: Headline columns: metrics key (dots reach into nested dicts), label, which way is better.
#: The first-flag columns count events; the others are rates.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("auroc", "AUROC", "higher"),
    ("pr_auc", "PR-AUC", "higher"),
    ("recall_at_1pct_fpr", "recall @ 1% FPR", "higher"),
    ("recall_at_0.1pct_fpr", "recall @ 0.1% FPR", "higher"),
    ("recall_at_threshold", "recall @ threshold", "higher"),
    ("fpr_at_threshold", "FPR @ threshold", "lower"),
    ("first_flag_event.median", "first flag, median event", "lower"),
    ("first_flag_event.p90", "first flag, p90 event", "lower"),
)

_ORGANIC_COLOR = "#4c78a8"
_HARVEST_COLOR = "#e45756"


class Png(bytes):
    """PNG bytes that a notebook displays as the image (``display(png)`` or last line)."""

    def _repr_png_(self) -> bytes:
        return bytes(self)

    def __repr__(self) -> str:
        return f"<PNG, {len(self) / 1024:.0f} KiB>"


# --------------------------------------------------------------------------- plots


def _figure(width: float = 6.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> Png:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Png(buf.getvalue())


def _colors(names: Sequence[str]) -> dict[str, str]:
    """The model in black, baselines in the tab10 cycle, stable across plots."""
    palette = ["#f58518", "#54a24b", "#b279a2", "#72b7b2", "#9d755d", "#bab0ac"]
    baselines = [n for n in names if n != MODEL_NAME]
    out = {n: palette[i % len(palette)] for i, n in enumerate(baselines)}
    out[MODEL_NAME] = "black"
    return out


def _has_both(rows: EvalRows) -> bool:
    return {0, 1} <= set(rows.labels)


def roc_png(methods: Mapping[str, EvalRows]) -> Png:
    """ROC curves of every method on the same axes, 1 % FPR marked."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure()
    ax = fig.add_subplot()
    colors = _colors(list(methods))
    for name, rows in methods.items():
        fpr, tpr, _ = roc_curve(rows.labels, rows.scores)
        auc = roc_auc_score(rows.labels, rows.scores)
        lw = 2.2 if name == MODEL_NAME else 1.4
        ax.plot(fpr, tpr, color=colors[name], lw=lw, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axvline(0.01, color="grey", lw=0.8, ls="--", label="1% FPR")
    ax.set(xlabel="false-positive rate (organic accounts)", ylabel="recall (harvesting)")
    ax.set(title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def pr_png(methods: Mapping[str, EvalRows]) -> Png:
    """Precision-recall curves of every method on the same axes."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure()
    ax = fig.add_subplot()
    colors = _colors(list(methods))
    for name, rows in methods.items():
        prec, rec, _ = precision_recall_curve(rows.labels, rows.scores)
        ap = average_precision_score(rows.labels, rows.scores)
        lw = 2.2 if name == MODEL_NAME else 1.4
        ax.step(rec, prec, where="post", color=colors[name], lw=lw, label=f"{name} (AP {ap:.3f})")
    base = float(np.mean(next(iter(methods.values())).labels))
    ax.axhline(base, color="grey", lw=0.8, ls=":", label=f"harvesting share {base:.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def score_distribution_png(rows: EvalRows, threshold: float) -> Png:
    """Each kind's account scores (organic kinds above, harvesting below), threshold drawn.

    Dots are accounts; the band spans the middle half of a kind's scores, the bar its median.
    """
    kinds = _kinds_in_order(rows)
    fig = _figure(6.5, 0.9 + 0.38 * len(kinds))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    scores, kind_arr = np.asarray(rows.scores), np.asarray(rows.kinds)
    for pos, (kind, label) in enumerate(kinds):
        s = scores[kind_arr == kind]
        color = _HARVEST_COLOR if label else _ORGANIC_COLOR
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        ax.hlines(pos, q1, q3, color=color, lw=7, alpha=0.25)
        ax.plot([med], [pos], marker="|", ms=14, mew=2, color="black")
        y = pos + rng.uniform(-0.22, 0.22, len(s))
        ax.scatter(s, y, s=9, color=color, alpha=0.7, linewidths=0)
    ax.axvline(threshold, color="black", ls="--", lw=1)
    ax.set_yticks(range(len(kinds)), [f"{k} ({'H' if lab else 'O'})" for k, lab in kinds])
    ax.invert_yaxis()
    ax.set(xlabel=f"{MODEL_NAME} account score", xlim=(-0.02, 1.02))
    ax.set_title(f"Scores by kind (O organic, H harvesting); threshold {threshold:.3f} dashed")
    return _png(fig)


def _kinds_in_order(rows: EvalRows) -> list[tuple[str, int]]:
    """(kind, label) pairs: organic kinds first, each group alphabetical."""
    pairs = {(k, y) for k, y in zip(rows.kinds, rows.labels, strict=True)}
    return sorted(pairs, key=lambda p: (p[1], p[0]))


def time_to_detection_png(methods: Mapping[str, EvalRows], thresholds: Mapping[str, float]) -> Png:
    """Share of harvesting accounts flagged within the first k events, per method."""
    fig = _figure()
    ax = fig.add_subplot()
    colors = _colors(list(methods))
    for name, rows in methods.items():
        lengths = [len(t) for t, y in zip(rows.traces, rows.labels, strict=True) if y == 1]
        if not lengths:
            continue
        ks = np.arange(1, max(lengths) + 1)
        share = detection_curve(rows, thresholds[name], ks)
        lw = 2.2 if name == MODEL_NAME else 1.4
        ax.step(ks, share, where="post", color=colors[name], lw=lw, label=name)
    ax.set_xscale("log")
    ax.set(xlabel="events seen (k)", ylabel="harvesting accounts flagged by event k")
    ax.set(title="Time to detection (each method at its own threshold)", ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def dilution_png(dilution: Mapping[str, Any]) -> Png:
    """Recall vs harvesting share of traffic, per method, with the published MMD anchor."""
    shares = np.asarray(dilution["shares"], dtype=float)
    methods: Mapping[str, Mapping[str, Sequence[float]]] = dilution["methods"]
    fig = _figure(10.0, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    colors = _colors(list(methods))
    for ax, key, title in zip(
        axes,
        ("recall_at_threshold", "recall_at_1pct_fpr"),
        ("at each method's threshold", "at 1% FPR"),
        strict=True,
    ):
        for name, curves in methods.items():
            if curves.get(key) is None:
                continue
            lw = 2.2 if name == MODEL_NAME else 1.4
            y = np.asarray(curves[key], dtype=float)
            ax.plot(shares, y, marker="o", ms=3, color=colors[name], lw=lw, label=name)
        ax.scatter(
            [s for s, _ in MMD_ANCHOR],
            [r for _, r in MMD_ANCHOR],
            marker="*",
            s=140,
            color="black",
            zorder=5,
            label="published MMD window test",
        )
        ax.set_xscale("log")
        ax.set_xticks(shares, [f"{s:.0%}" for s in shares])
        ax.set(xlabel="harvesting share of the account's traffic", title=f"Recall {title}")
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("recall (mixed accounts)")
    axes[1].legend(loc="lower right", fontsize=8)
    return _png(fig)


def figures(evaluation: Evaluation) -> dict[str, Png]:
    """Every plot the evaluation supports, by file stem (``roc``, ``pr``, ...)."""
    rows = evaluation.rows
    model = evaluation.model_rows
    out: dict[str, Png] = {}
    if _has_both(model):
        out["roc"] = roc_png(rows)
        out["pr"] = pr_png(rows)
    out["scores_by_kind"] = score_distribution_png(model, evaluation.thresholds[MODEL_NAME])
    if any(model.labels):
        out["time_to_detection"] = time_to_detection_png(rows, evaluation.thresholds)
    if evaluation.metrics.get("dilution"):
        out["dilution"] = dilution_png(evaluation.metrics["dilution"])
    return out


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} tr.margin td{font-style:italic;background:#fafafa}
.good{color:#1a7f37}.bad{color:#c0392b;font-weight:600}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
img{max-width:100%} .pair{display:flex;gap:1em;flex-wrap:wrap} .pair img{max-width:49%}
"""

_IMAGE_TITLES = {
    "roc": "ROC curves",
    "pr": "Precision-recall curves",
    "scores_by_kind": "Scores by kind",
    "time_to_detection": "Time to detection",
    "dilution": "Dilution",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _signed(value: float | None, better: str, digits: int = 3) -> str:
    if value is None:
        return "—"
    good = value > 0 if better == "higher" else value < 0
    css = "good" if good else ("bad" if value != 0 else "")
    return f'<span class="{css}">{value:+.{digits}f}</span>'


def metric_at(metrics: Mapping[str, Any], dotted: str) -> Any:
    """``metrics[dotted]``, else ``metrics["a"]["b"]`` for ``"a.b"``; None where missing.

    Keys may hold dots themselves (``recall_at_0.1pct_fpr``): the longest key that
    exists at each level wins.
    """
    value: Any = metrics
    parts = dotted.split(".")
    while parts:
        if not isinstance(value, Mapping):
            return None
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in value:
                value, parts = value[key], parts[n:]
                break
        else:
            return None
    return value


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css: Sequence[str] = ()) -> str:
    """An HTML table; header cells are escaped here, body cells must already be safe HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{css[i] if i < len(css) else ""}">'
        + "".join(f"<td>{c}</td>" for c in r)
        + "</tr>"
        for i, r in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _method_metrics(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {MODEL_NAME: metrics, **metrics.get("baselines", {})}


def best_baseline_margin(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """distillwatch minus the best baseline on each headline figure (best: per direction)."""
    baselines = metrics.get("baselines") or {}
    out: dict[str, float | None] = {}
    for key, _label, better in HEADLINE:
        ours = metric_at(metrics, key)
        theirs = [v for b in baselines.values() if (v := metric_at(b, key)) is not None]
        if ours is None or not theirs:
            out[key] = None
            continue
        best = max(theirs) if better == "higher" else min(theirs)
        out[key] = float(ours) - float(best)
    return out


def _digits(key: str) -> int:
    return 1 if key.startswith("first_flag_event") else 3


def _headline_section(evaluation: Evaluation) -> str:
    per_method = _method_metrics(evaluation.metrics)
    header = ["method", "threshold", *(label for _, label, _ in HEADLINE)]
    rows = [
        [f"<b>{_e(name)}</b>", _fmt(evaluation.thresholds.get(name), 4)]
        + [_fmt(metric_at(m, key), _digits(key)) for key, _, _ in HEADLINE]
        for name, m in per_method.items()
    ]
    css = [""] * len(rows)
    if len(per_method) > 1:
        margin = best_baseline_margin(evaluation.metrics)
        rows.append(
            [f"{_e(MODEL_NAME)} − best baseline", ""]
            + [_signed(margin[key], better, _digits(key)) for key, _, better in HEADLINE]
        )
        css.append("margin")
    return "<h2>Headline</h2>" + _table(header, rows, css)


def _evaluated_on_section(metrics: Mapping[str, Any]) -> str:
    ev = metrics.get("evaluated_on") or {}
    counts = (
        f"{_fmt(ev.get('accounts'))} labelled accounts ({_fmt(ev.get('harvesting'))} "
        f"harvesting, {_fmt(ev.get('organic'))} organic)"
    )
    fit = ev.get("baseline_fit")
    if not fit:
        return f"<p>Evaluated on {counts}.</p>"
    lines = [f"Evaluated on {counts}. Baselines: {_e(fit.get('how'))}; "]
    lines.append(f"{_fmt(fit.get('fit_accounts'))} accounts fitted them.")
    if fit.get("note"):
        lines.append(f" <b>{_e(fit['note'])}.</b>")
    if fit.get("kinds_only_in_fit"):
        kinds = ", ".join(_e(k) for k in fit["kinds_only_in_fit"])
        lines.append(f" Kinds with a single campaign, so not evaluated: {kinds}.")
    if fit.get("campaigns_in_both"):
        camps = ", ".join(_e(c) for c in fit["campaigns_in_both"])
        lines.append(
            " Campaign ids found in both the fitting and the evaluated data (one operator, "
            f"or ids reused across data sets): {camps}."
        )
    return f'<p class="note">{"".join(lines)}</p>'


def _per_kind_section(evaluation: Evaluation) -> str:
    per_method = _method_metrics(evaluation.metrics)
    names = list(per_method)
    kinds = per_method[MODEL_NAME].get("per_kind", {})
    organic = [k for k, v in kinds.items() if v["label"] == 0]
    harvest = [k for k, v in kinds.items() if v["label"] == 1]
    out = "<h2>Per kind</h2>"
    if organic:
        rows = [
            [_e(k), _fmt(kinds[k]["n"])]
            + [_fmt(metric_at(per_method[n], f"per_kind.{k}.fpr_at_threshold")) for n in names]
            for k in organic
        ]
        out += "<h3>Organic kinds: false-positive rate at each method's threshold</h3>"
        out += _table(["kind", "accounts", *names], rows)
    if harvest:
        rows = [
            [_e(k), _fmt(kinds[k]["n"])]
            + [
                f"{_fmt(metric_at(per_method[n], f'per_kind.{k}.recall_at_threshold'))} / "
                f"{_fmt(metric_at(per_method[n], f'per_kind.{k}.recall_at_1pct_fpr'))}"
                for n in names
            ]
            for k in harvest
        ]
        out += "<h3>Harvesting kinds: recall at threshold / at 1% FPR</h3>"
        out += _table(["kind", "accounts", *names], rows)
    return out


def _detection_table(evaluation: Evaluation) -> str:
    per_method = _method_metrics(evaluation.metrics)
    ks = list(per_method[MODEL_NAME].get("detected_within", {}))
    rows = [
        [_e(name)] + [_fmt(metric_at(m, f"detected_within.{k}")) for k in ks]
        for name, m in per_method.items()
    ]
    return (
        "<p>Share of harvesting accounts an online scorer had flagged within the first k "
        "events (shorter accounts count if flagged by their last event).</p>"
        + _table(["method", *(f"k = {k}" for k in ks)], rows)
    )


def _fleet_section(metrics: Mapping[str, Any]) -> str:
    fleets = metrics.get("fleets")
    if not fleets:
        return ""
    rows = [
        ["adjusted Rand index (fleets vs campaigns)", _fmt(fleets.get("adjusted_rand_index"))],
        ["fleets found", _fmt(fleets.get("n_fleets"))],
        ["organic accounts placed in a fleet", _fmt(fleets.get("organic_in_fleets"))],
    ]
    return "<h2>Fleets</h2>" + _table(["figure", "value"], rows)


def _dilution_section(metrics: Mapping[str, Any], image: str) -> str:
    dil = metrics.get("dilution")
    if not dil:
        return ""
    shares = dil["shares"]
    rows = [
        [_e(name)]
        + [
            f"{_fmt(_at(c, 'recall_at_threshold', i))} / {_fmt(_at(c, 'recall_at_1pct_fpr', i))}"
            for i in range(len(shares))
        ]
        + [f"{_fmt(c.get('control_at_threshold'))} / {_fmt(c.get('control_at_1pct_fpr'))}"]
        for name, c in dil["methods"].items()
    ]
    anchor = dict(MMD_ANCHOR)
    rows.append(
        ["published MMD window test"] + [_fmt(anchor.get(float(s))) for s in shares] + ["—"]
    )
    intro = (
        f"<p>Accounts mixing harvesting into organic traffic at each share "
        f"({_fmt(dil.get('n_mixed_per_share'))} mixed accounts per share, "
        f"{_fmt(dil.get('n_organic'))} organic). Cells: recall at the method's threshold / "
        "at 1% FPR on this run's organic accounts; <i>control</i>: the same mixed accounts "
        "with their harvesting prompts removed (flag rate, lower is better). Stars in the "
        "plot: the published MMD window test (59% at 5%, 94% at 10%).</p>"
    )
    header = ["method", *(f"{float(s):.0%}" for s in shares), "control"]
    return "<h2>Dilution</h2>" + intro + image + _table(header, rows)


def _at(curves: Mapping[str, Any], key: str, i: int) -> float | None:
    values = curves.get(key)
    return None if values is None or i >= len(values) else values[i]


def _compare_section(metrics: Mapping[str, Any]) -> str:
    comp = metrics.get("compare")
    if not comp:
        return ""
    this_name = str(metrics.get("model") or "this model")
    other_name = str(comp.get("model") or "--compare")
    this, other = _e(this_name), _e(other_name)
    rows = []
    for c in comp.get("checks", []):
        better = {"model": "candidate", "compare": "current", "tie": "tie"}.get(
            c.get("better"), "—"
        )
        flag = '<span class="bad">REGRESSION</span>' if c.get("regression") else ""
        rows.append(
            [_e(c["figure"]), _fmt(c["model"]), _fmt(c["compare"]), _fmt(c["delta"]), better, flag]
        )
    regressions = comp.get("regressions", [])
    verdict = (
        f'<p class="bad">{len(regressions)} regression(s) of {this} against {other}: '
        + ", ".join(_e(r) for r in regressions)
        + ".</p>"
        if regressions
        else f'<p class="good">No regression of {this} against {other} on these figures.</p>'
    )
    return (
        "<h2>Model comparison</h2>"
        f"<p>{this} (<code>--model</code>, the candidate) against {other} "
        "(<code>--compare</code>, the current model), on the same accounts. Delta = "
        "candidate − current; a regression is a change for the worse beyond noise "
        "tolerance.</p>"
        + verdict
        + _table(
            ["figure", f"candidate {this_name}", f"current {other_name}", "delta", "better", ""],
            rows,
        )
    )


def _img(name: str, png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    alt = _e(_IMAGE_TITLES.get(name, name))
    return f'<img src="data:image/png;base64,{data}" alt="{alt}" title="{alt}">'


def render_html(evaluation: Evaluation, images: Mapping[str, bytes]) -> str:
    """The whole report as one HTML string, images inlined as data URIs."""
    m = evaluation.metrics

    def img(name: str) -> str:
        return _img(name, images.get(name))

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>distillwatch evaluation {_e(m.get('model') or '')}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>distillwatch evaluation — model {_e(m.get('model') or 'unknown')}</h1>",
        _evaluated_on_section(m),
        _headline_section(evaluation),
        "<h2>Ranking</h2>" if "roc" in images else "",
        f'<div class="pair">{img("roc")}{img("pr")}</div>',
        "<h2>Scores by kind</h2>",
        img("scores_by_kind"),
        _per_kind_section(evaluation),
        "<h2>Time to detection</h2>",
        img("time_to_detection"),
        _detection_table(evaluation),
        _fleet_section(m),
        _dilution_section(m, img("dilution")),
        _compare_section(m),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(
    out: Path, evaluation: Evaluation, images: Mapping[str, bytes] | None = None
) -> list[Path]:
    """Write ``out/report.html`` and each plot as ``out/<name>.png``; the paths written.

    ``images`` are the plots when already drawn (:func:`figures`).
    """
    out.mkdir(parents=True, exist_ok=True)
    images = figures(evaluation) if images is None else images
    paths = []
    for name, png in images.items():
        path = out / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    report = out / "report.html"
    report.write_text(render_html(evaluation, images), encoding="utf-8")
    return [report, *paths]
