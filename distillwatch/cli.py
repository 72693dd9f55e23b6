"""The ``distillwatch`` command: simulate, train, score, evaluate, fleets, serve.

Each sub-command is a few lines that call the notebook API (``distillwatch.api``) or a
stage module. Bad input ends the command with exit status 2 and one line naming the
file, line and field; ``--on-error skip`` skips bad records and reports how many.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class CLIError(Exception):
    """An error to show the user as one line, exiting with status 2."""


def _events_args(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    p.add_argument(
        "--events",
        required=True,
        type=Path,
        nargs="+",
        help="event file(s): .jsonl, .jsonl.gz or .parquet",
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="bad records: stop with an error (default) or skip, count and report them",
    )
    if model:
        p.add_argument(
            "--model",
            type=Path,
            default=None,
            help="model directory (default: $DISTILLWATCH_MODEL or the shipped model)",
        )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="embedding cache file (default: $DISTILLWATCH_CACHE_DIR or ~/.cache/distillwatch)",
    )
    if model:
        p.add_argument(
            "--embed-backend",
            choices=("onnx", "torch", "onnx-int8"),
            default=None,
            help="run the model's encoder through this backend instead of its saved one "
            "(onnx-int8: 2-3x faster on CPU, slightly less exact; see the model card)",
        )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillwatch",
        description="Detect distillation (capability-harvesting) attacks in LLM API traffic.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="write simulated organic and harvesting accounts")
    p.add_argument("--accounts", type=int, required=True, help="number of accounts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--corpora",
        type=Path,
        default=None,
        help="prompt corpora directory (default: data_samples/corpora)",
    )
    p.add_argument(
        "--exclude-sources",
        default="",
        help="comma-separated corpus source prefixes to leave out (e.g. gsm8k,bbh)",
    )
    p.add_argument(
        "--only-sources",
        default="",
        help="comma-separated corpus source prefixes to use exclusively",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train a detector into a model directory")
    p.add_argument("--events", required=True, type=Path, nargs="+")
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target-fpr",
        type=float,
        default=0.01,
        help="false-positive rate the operating threshold is set for (default 0.01)",
    )
    p.add_argument("--max-epochs", type=int, default=25)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument(
        "--dilution-augment",
        type=float,
        default=None,
        metavar="F",
        help="add F spliced training accounts per organic training account: organic streams "
        "with harvesting prompts of the labelled harvesting accounts inserted (needs labels "
        "with harvest_prompts; 0 turns it off; default 0.5, as the shipped model)",
    )
    p.add_argument(
        "--content-dropout",
        type=float,
        default=None,
        metavar="P",
        help="zero a training stream's prompt embeddings with probability P at each step, so "
        "the model also judges behaviour and phrasing without the content (0 turns it off; "
        "default: the TrainConfig default)",
    )
    p.add_argument(
        "--length-dropout",
        type=float,
        default=None,
        metavar="P",
        help="zero a training stream's prompt-length features with probability P at each "
        "step, so that long documents alone cannot decide an account (0 off, the default)",
    )
    p.add_argument(
        "--splice-cover-client",
        action="store_const",
        const=True,
        default=None,
        help="spliced training accounts' inserted harvesting prompts take the cover "
        "account's system prompt and model, not the donor's (off by default)",
    )
    p.add_argument(
        "--content-view-weight",
        type=float,
        default=None,
        metavar="W",
        help="judge every prompt with and without its embedding and mix the logits with "
        "weight W on the no-content view, so unfamiliar content cannot decide a score alone "
        "(twice the network time per event; needs content dropout; 0 off; default: the "
        "TrainConfig default)",
    )
    p.add_argument(
        "--kind-balance",
        type=float,
        default=None,
        metavar="P",
        help="weigh each account n**-P in the loss, n the accounts of its kind in its class, "
        "so rare kinds (evaluation teams among casual users) count more (0 off, 1 every kind "
        "the same; needs label kinds; default: the TrainConfig default)",
    )
    p.add_argument(
        "--chain-augment",
        type=int,
        default=None,
        metavar="N",
        help="add N organic training accounts per organic kind, each the starts of two or "
        "three accounts of that kind in one stream (an evaluation team running a suite, not "
        "one benchmark; 0 off; default: the TrainConfig default)",
    )
    p.add_argument(
        "--chain-kinds",
        nargs="+",
        default=None,
        metavar="KIND",
        help="chain only accounts of these organic kinds (default: every organic kind)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="N",
        help="train N networks from different seeds and average their logits (a deep "
        "ensemble: steadier on unseen traffic, N times the training time; default 1)",
    )
    p.add_argument(
        "--context-reuse",
        action="store_true",
        help="add the context-reuse features (passages re-sent from the account's other "
        "conversations); experimental: off in the shipped model (see its model card)",
    )
    p.add_argument(
        "--embedder",
        default=None,
        help="sentence-transformers model path or name (default: bundled all-MiniLM-L6-v2)",
    )
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument(
        "--fleets",
        action="store_true",
        help="also fit the fleet judge (links coordinated accounts; experimental)",
    )
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("score", help="score every account of an event file")
    _events_args(p)
    p.add_argument(
        "--out", required=True, type=Path, help="output JSON Lines, one line per account"
    )

    p = sub.add_parser(
        "evaluate",
        help="metrics, plots and an HTML report against labels",
        description=(
            "Judge a model on labelled events: writes DIR/metrics.json, DIR/report.html and "
            "the plots as PNG files. With --baselines the published detectors are fitted on "
            "--baselines-train-* when given, else on a campaign-disjoint half of the labelled "
            "accounts, and every method is then reported on the other half only."
        ),
    )
    _events_args(p)
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also run the baselines (rules, logistic regression, PRADA, MMD window test)",
    )
    p.add_argument(
        "--baselines-train-events",
        type=Path,
        nargs="+",
        default=None,
        metavar="F",
        help="labelled events to fit the baselines on, disjoint from --events "
        "(implies --baselines; default: a campaign-disjoint half of --events)",
    )
    p.add_argument(
        "--baselines-train-labels",
        type=Path,
        default=None,
        metavar="F",
        help="labels of --baselines-train-events",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the baseline split and of the dilution simulation (default 0)",
    )
    p.add_argument(
        "--dilution",
        action="store_true",
        help="also simulate accounts mixing harvesting into organic traffic and record recall",
    )
    p.add_argument(
        "--dilution-accounts",
        type=int,
        default=None,
        metavar="N",
        help="mixed accounts simulated per harvesting share, 200 events each (default 100; "
        "10 x N organic accounts are simulated beside them)",
    )
    p.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="a second model directory (the current one) to compare --model against",
    )
    p.add_argument(
        "--no-report",
        action="store_true",
        help="write metrics.json only (no HTML report, no PNG plots)",
    )

    p = sub.add_parser("fleets", help="write coordinated-account clusters")
    _events_args(p)
    p.add_argument("--out", required=True, type=Path, help="output JSON Lines, one line per fleet")

    p = sub.add_parser("serve", help="run the HTTP scoring service")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--db", type=Path, default=None, help="SQLite file holding account state")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes that update account states (DISTILLWATCH_WORKERS; default 0: "
        "in the serve process; about one per core for throughput)",
    )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distillwatch")
    except PackageNotFoundError:
        return "unknown"


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.replace(path)


def _report_skips(stats: object, what: str = "events") -> None:
    n = getattr(stats, "n_skipped", 0)
    if n:
        print(f"skipped {n} bad {what}: {stats.summary()}", file=sys.stderr)  # type: ignore[attr-defined]


def cmd_simulate(a: argparse.Namespace) -> None:
    from training.simulator import run_simulate

    if a.accounts < 1:
        raise CLIError("--accounts must be >= 1")
    kwargs = {}
    if a.exclude_sources:
        kwargs["exclude_sources"] = tuple(s for s in a.exclude_sources.split(",") if s)
    if a.only_sources:
        kwargs["include_sources"] = tuple(s for s in a.only_sources.split(",") if s)
    sim = run_simulate(
        a.accounts, a.seed, a.out, corpora_dir=a.corpora, progress=not a.quiet, **kwargs
    )
    print(f"wrote {len(sim.events)} events of {len(sim.labels)} accounts to {a.out}")


def cmd_train(a: argparse.Namespace) -> None:
    from distillwatch import api
    from model.features import FeatureConfig
    from training.train import TrainConfig

    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("dilution_augment", a.dilution_augment),
            ("content_dropout", a.content_dropout),
            ("length_dropout", a.length_dropout),
            ("splice_cover_client", a.splice_cover_client),
            ("kind_balance", a.kind_balance),
            ("content_view_weight", a.content_view_weight),
            ("chain_augment", a.chain_augment),
            ("chain_kinds", None if a.chain_kinds is None else tuple(a.chain_kinds)),
        )
        if value is not None  # absent: the TrainConfig default
    }
    cfg = TrainConfig(
        seed=a.seed,
        features=FeatureConfig(context_reuse=a.context_reuse),
        target_fpr=a.target_fpr,
        max_epochs=a.max_epochs,
        val_fraction=a.val_fraction,
        fleets=a.fleets,
        ensemble=a.ensemble,
        **overrides,
    )
    table = api.read_events(a.events, on_error=a.on_error)
    _report_skips(table.stats)
    labels = api.read_labels(a.labels, on_error=a.on_error)
    _, report = api.train(
        table,
        labels,
        out=a.out,
        config=cfg,
        embedder_model=a.embedder,
        cache_path=a.cache,
        progress=not a.quiet,
    )
    v = report["validation"]
    print(
        f"model written to {a.out}: validation AUROC {v['auroc']:.4f}, "
        f"recall@1%FPR {v['recall_at_1pct_fpr']:.3f}, threshold {v['threshold']:.4f}"
    )


def cmd_score(a: argparse.Namespace) -> None:
    from distillwatch import api

    detector = api.load_model(a.model, cache_path=a.cache, embed_backend=a.embed_backend)
    table = api.read_events(a.events, on_error=a.on_error)
    scores = detector.score_table(table, progress=not a.quiet)
    _write_jsonl(a.out, [s.to_dict() for s in scores])
    n_flag = sum(s.flagged for s in scores)
    print(f"scored {len(scores)} accounts ({len(table)} events): {n_flag} flagged -> {a.out}")
    _report_skips(table.stats)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from distillwatch import api

    train_events, train_labels = a.baselines_train_events, a.baselines_train_labels
    if (train_events is None) != (train_labels is None):
        raise CLIError("--baselines-train-events and --baselines-train-labels go together")
    if a.dilution_accounts is not None and not a.dilution:
        raise CLIError("--dilution-accounts needs --dilution")
    detector = api.load_model(a.model, cache_path=a.cache, embed_backend=a.embed_backend)
    table = api.read_events(a.events, on_error=a.on_error)
    labels = api.read_labels(a.labels, on_error=a.on_error)
    baselines_train = None
    if train_events is not None:
        train_table = api.read_events(train_events, on_error=a.on_error)
        _report_skips(train_table.stats, "baseline-training events")
        baselines_train = (train_table, api.read_labels(train_labels, on_error=a.on_error))
    compare = (
        api.load_model(a.compare, cache_path=a.cache, embed_backend=a.embed_backend)
        if a.compare
        else None
    )
    result = api.evaluate(
        detector,
        table,
        labels,
        out=a.out,
        baselines=a.baselines,
        baselines_train=baselines_train,
        compare=compare,
        dilution=a.dilution,
        dilution_accounts=a.dilution_accounts or 100,
        seed=a.seed,
        report=not a.no_report,
        progress=not a.quiet,
    )
    print(_summary(result.metrics))
    for path in result.paths:
        print(f"wrote {path}")
    _report_skips(table.stats)


def _summary(metrics: dict) -> str:
    """A short table of the headline figures, one line per method, and what was evaluated."""

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    per_method = {"distillwatch": metrics, **metrics.get("baselines", {})}
    lines = [
        f"{'method':<14}{'AUROC':>7}{'PR-AUC':>8}{'R@1%':>7}{'R@0.1%':>8}"
        f"{'R@thr':>7}{'FPR@thr':>8}{'TTD med':>8}"
    ]
    for name, m in per_method.items():
        ttd = (m.get("first_flag_event") or {}).get("median")
        lines.append(
            f"{name:<14}{f(m.get('auroc')):>7}{f(m.get('pr_auc')):>8}"
            f"{f(m.get('recall_at_1pct_fpr')):>7}{f(m.get('recall_at_0.1pct_fpr')):>8}"
            f"{f(m.get('recall_at_threshold')):>7}{f(m.get('fpr_at_threshold')):>8}"
            f"{'-' if ttd is None else f'{ttd:.0f}':>8}"
        )
    ev = metrics.get("evaluated_on") or {}
    fit = ev.get("baseline_fit") or {}
    lines.append(
        f"evaluated on {ev.get('accounts')} accounts ({ev.get('harvesting')} harvesting)"
        + (f"; {fit['note']}" if fit.get("note") else "")
    )
    comp = metrics.get("compare")
    if comp:
        regressions = comp.get("regressions") or []
        lines.append(
            f"against {comp.get('model')}: "
            + (
                f"{len(regressions)} regression(s): {', '.join(regressions)}"
                if regressions
                else "no regression"
            )
        )
    return "\n".join(lines)


def cmd_fleets(a: argparse.Namespace) -> None:
    from distillwatch import api

    detector = api.load_model(a.model, cache_path=a.cache, embed_backend=a.embed_backend)
    table = api.read_events(a.events, on_error=a.on_error)
    fleets = api.fleets(detector, table, progress=not a.quiet)
    _write_jsonl(a.out, [f.to_dict() for f in fleets])
    print(f"{len(fleets)} fleets over {table.n_accounts} accounts -> {a.out}")
    _report_skips(table.stats)


def cmd_serve(a: argparse.Namespace) -> None:
    from serve.app import run

    run(model=a.model, host=a.host, port=a.port, db=a.db, workers=a.workers)


COMMANDS = {
    "simulate": cmd_simulate,
    "train": cmd_train,
    "score": cmd_score,
    "evaluate": cmd_evaluate,
    "fleets": cmd_fleets,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    from model.embedder import offline_hub

    offline_hub()  # before anything imports transformers
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from model.events import EventError
    from model.model_dir import ModelDirError

    try:
        COMMANDS[args.command](args)
    except (CLIError, EventError, ModelDirError) as exc:
        print(f"distillwatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"distillwatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
