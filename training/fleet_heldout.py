"""Held-out evaluation of the fleet stage: several hydra campaigns at once, unseen seeds.

The card's protocol simulations (``training.heldout``) hold ONE hydra campaign each, so the
adjusted Rand index of ``fleet_id`` against the true campaign cannot be judged on them.
This runs the fleet issue's goals on simulations made for it:

1. the fleet stage (``FleetModel.fit_from_training``: linker settings and fleet judge) is
   fitted onto an already trained model, on the protocol's training simulations
   (``train`` + ``trainL``, the accounts the model itself was trained on);
2. it is judged on three simulations, each ``--accounts`` accounts with ``--campaigns``
   hydra campaigns of 15-40 accounts beside the usual organic and harvesting mix, first
   ``--cap`` events per account: ``fleet_dev`` (seed 66), where the linking rules were
   chosen; ``fleet_eval`` (seed 77), which was then looked into once (it showed that a
   shared user agent joined two campaigns, and that rule was dropped), so it is no longer
   untouched; and ``fleet_test`` (seed 88), run only after the last change.

Printed and written to ``OUT/fleets.json`` per simulation: AUROC and recall of the
accounts after fleet evidence, hydra-fleet recall at the model's threshold, the ARI
overall and per harvesting kind, organic accounts in any fleet and in flagged fleets, and
how each campaign's accounts fall into fleets. ``--save DIR`` writes the model with its
fleet stage; ``--fit-only`` fits and saves without judging. Usage::

    python -m training.fleet_heldout --corpora ../shared/corpora --out runs/fleets \\
        [--model model/default] [--cache FILE] [--save DIR] [--fit-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.embedder import offline_hub
from model.events import EventError, read_events
from training.heldout import cap_events, pool_training_data
from training.labels import read_labels
from training.simulator import run_simulate

if TYPE_CHECKING:
    from model.scorer import Detector

EXIT_BAD_INPUT = 2
#: (name, seed) of the fleet simulations; the first is for development.
FLEET_SIMS = (("fleet_dev", 66), ("fleet_eval", 77), ("fleet_test", 88))


def simulate_fleets(
    corpora: Path, where: Path, seed: int, accounts: int, campaigns: int
) -> tuple[Path, Path]:
    """(events, labels) of one fleet simulation, simulated on first use."""
    events, labels = where / "events.jsonl", where / "labels.jsonl"
    stamp = {"seed": seed, "accounts": accounts, "campaigns": campaigns, "corpora": str(corpora)}
    stamp_path = where / "spec.json"
    if not stamp_path.is_file() or json.loads(stamp_path.read_text()) != stamp:
        stamp_path.unlink(missing_ok=True)
        run_simulate(
            accounts,
            seed,
            where,
            corpora_dir=corpora,
            progress=False,
            hydra_fleets=campaigns,
            hydra_fleet_size=(15, 40),
        )
        stamp_path.write_text(json.dumps(stamp) + "\n")
    return events, labels


def campaign_spread(rows: Any) -> dict[str, dict[str, int]]:
    """For each hydra campaign: how many of its accounts fall into which fleet."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, campaign, fleet in zip(rows.kinds, rows.campaigns, rows.fleet_ids, strict=True):
        if kind == "hydra_fleet":
            out[str(campaign)][fleet or "none"] += 1
    return {c: dict(n.most_common()) for c, n in sorted(out.items())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model.embedder import EmbedConfig
    from model.fleet_model import FleetModel
    from model.model_dir import build_embedder, default_model_path, load_model
    from training.dataset import embed_table, join_labels

    corpora = args.corpora.resolve()
    if not corpora.is_dir():
        raise FileNotFoundError(f"corpora directory not found: {corpora}")
    model_path = args.model or default_model_path()
    embed_config: dict[str, Any] = {"kind": "sentence-transformers", **EmbedConfig().to_dict()}
    embedder = build_embedder(embed_config, cache_path=args.cache)
    detector = load_model(model_path, embedder=embedder, fleets=False)

    table, labels = pool_training_data(corpora, args.out / "sims")
    accounts, labs, _ = join_labels(table, labels)
    t0 = time.perf_counter()
    embeddings = embed_table(table, embedder, progress=not args.quiet)
    detector.fleet_model = FleetModel.fit_from_training(
        detector, accounts, labs, embeddings, incidents_per_campaign=args.incidents_per_campaign
    )
    judged = detector.fleet_model.judge_ is not None
    print(
        f"fleet stage fitted on {len(accounts)} training accounts in "
        f"{time.perf_counter() - t0:.0f}s (judge: {'yes' if judged else 'none'})",
        file=sys.stderr,
    )

    results: dict[str, Any] = {"model": str(model_path), "sims": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.fit_only:
        results["sims"] = judge_on_fleet_sims(detector, corpora, args)
        (args.out / "fleets.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.save:
        if args.save.exists():
            shutil.rmtree(args.save)
        shutil.copytree(model_path, args.save)
        detector.fleet_model.save(args.save)
        print(f"wrote the model with its fleet stage to {args.save}", file=sys.stderr)
    return results


def judge_on_fleet_sims(
    detector: Detector, corpora: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Figures of ``detector`` (fleet stage fitted) on each of :data:`FLEET_SIMS`, by name."""
    from training.evaluate import evaluate_rows, score_labelled

    out: dict[str, Any] = {}
    for name, seed in FLEET_SIMS:
        events, label_file = simulate_fleets(
            corpora, args.out / "sims" / name, seed, args.accounts, args.campaigns
        )
        sim = cap_events(read_events(events), args.cap)
        rows = score_labelled(detector, sim, read_labels(label_file)[0], progress=not args.quiet)
        m = evaluate_rows(rows, detector.threshold)
        fleets = m.get("fleets") or {}
        out[name] = {
            "seed": seed,
            "accounts": args.accounts,
            "campaigns": args.campaigns,
            "cap": args.cap,
            "auroc": m["auroc"],
            "recall_at_1pct_fpr": m["recall_at_1pct_fpr"],
            "fpr_at_threshold": m["fpr_at_threshold"],
            "hydra_recall_at_threshold": m["per_kind"]["hydra_fleet"]["recall_at_threshold"],
            "fleets": fleets,
            "campaign_spread": campaign_spread(rows),
        }
        print(
            f"{name} (seed {seed}): hydra recall@thr "
            f"{out[name]['hydra_recall_at_threshold']:.3f}, ARI "
            f"{fleets.get('adjusted_rand_index', float('nan')):.3f} (hydra "
            f"{fleets.get('adjusted_rand_index_by_kind', {}).get('hydra_fleet', float('nan')):.3f})"
            f", organic in fleets {fleets.get('organic_in_fleets', float('nan')):.3%}, in "
            f"flagged fleets {fleets.get('organic_in_flagged_fleets', float('nan')):.3%}, "
            f"AUROC {m['auroc']:.4f}"
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.fleet_heldout",
        description="Fit the fleet stage onto a trained model and judge it on simulations "
        "with several hydra campaigns (unseen seeds).",
    )
    parser.add_argument("--corpora", type=Path, required=True, help="prompt corpora directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache file")
    parser.add_argument("--accounts", type=int, default=400)
    parser.add_argument("--campaigns", type=int, default=6)
    parser.add_argument("--cap", type=int, default=150, help="events per account")
    parser.add_argument("--save", type=Path, default=None, help="write model + fleet stage")
    parser.add_argument(
        "--incidents-per-campaign",
        type=int,
        default=256,
        help="labelled prompts per campaign kept for known-incident reasons (0: none)",
    )
    parser.add_argument(
        "--fit-only",
        action="store_true",
        help="fit the fleet stage (and --save it) without judging it on the fleet simulations",
    )
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    offline_hub()
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (EventError, ValueError, FileNotFoundError) as exc:
        print(f"fleet_heldout: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
