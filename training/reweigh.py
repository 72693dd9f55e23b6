"""Judge a trained model with and without content at a new weight, without retraining.

``model.network.ContentViews`` mixes each prompt's logit with its embedding and without it
(``TrainConfig.content_view_weight``). The weight changes the score, so the organic
reference, calibration and threshold are fitted anew, on the model's own training split
(``training.train.reweigh_content_views``): the training data must be the model's, which
the command checks by account count and kind counts against ``config.json``. The network
weights and topic prototypes are kept. A fleet stage is fitted on account scores, so it is
dropped; refit it with ``python -m training.fleet_heldout ... --fit-only --save DIR``.

Training data is either an events + labels pair or, with ``--corpora``, the held-out
protocol's ``pool`` training simulations (``train`` + ``trainL``, how the shipped model was
trained). Usage::

    python -m training.reweigh --model model/default --weight 0.5 --out runs/reweighed \\
        (--events train.jsonl --labels labels.jsonl | --corpora ../shared/corpora)
        [--sims DIR] [--cache FILE] [--quiet]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.embedder import offline_hub
from model.events import EventError, EventTable

if TYPE_CHECKING:
    from training.labels import Label

EXIT_BAD_INPUT = 2


def check_training_data(
    saved: Mapping[str, Any], table: EventTable, labels: Mapping[str, Label]
) -> None:
    """Raise ValueError unless ``table``/``labels`` look like the data ``saved`` describes
    (a model's ``training`` summary): the same labelled accounts, kinds and events."""
    joined = [acc.account_id for acc in table.accounts() if acc.account_id in labels]
    kinds = Counter(labels[a].kind or str(labels[a].label) for a in joined)
    want_kinds = dict(saved.get("kinds", {}))
    got = {
        "labelled accounts": len(joined),
        "events": len(table),
        "kinds": dict(kinds),
    }
    want = {
        "labelled accounts": saved.get("n_accounts"),
        "events": saved.get("n_events"),
        "kinds": want_kinds,
    }
    bad = [k for k in got if want[k] is not None and got[k] != want[k]]
    if bad:
        detail = "; ".join(f"{k}: model {want[k]}, given {got[k]}" for k in bad)
        raise ValueError(f"not the model's training data ({detail})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model.model_dir import load_model, save_model
    from training.train import model_card, reweigh_content_views

    model_path = Path(args.model)
    out = Path(args.out)
    if out.resolve() == model_path.resolve():
        raise ValueError("--out must be a new directory, not the model's own")
    detector = load_model(model_path, cache_path=args.cache, fleets=False)
    table, labels = _training_data(args)
    check_training_data(detector.meta.get("training", {}), table, labels)
    had_fleets = (model_path / "fleet.json").exists()
    metrics = reweigh_content_views(detector, table, labels, args.weight, progress=not args.quiet)
    meta = detector.meta
    report = {"validation": metrics, "training": meta["training"]}
    embed_config = _saved_embed_config(model_path)
    if out.exists():
        shutil.rmtree(out)
    save_model(detector, out, embed_config=embed_config, metrics=report)
    note = (
        f"Reweighed from `{model_path}` (version {meta.get('version')}): "
        f"`python -m training.reweigh --weight {args.weight:g}`; the same network weights, "
        "the organic reference, calibration and threshold fitted anew on its training split."
    )
    (out / "README.md").write_text(model_card(detector, report, extra=note))
    print(
        f"{out}: no-content view weight {args.weight:g}, threshold {detector.threshold:.6f}, "
        f"validation AUROC {metrics['auroc']:.4f}, recall at 1 % FPR "
        f"{metrics['recall_at_1pct_fpr']:.3f}"
        + (
            "; the fleet stage was dropped (refit it: python -m training.fleet_heldout "
            "... --fit-only --save DIR)"
            if had_fleets
            else ""
        ),
        file=sys.stderr,
    )
    return report


def _saved_embed_config(model_path: Path) -> dict[str, Any]:
    from model.model_dir import read_config

    return dict(read_config(model_path)["embedder"])


def _training_data(args: argparse.Namespace) -> tuple[EventTable, dict[str, Label]]:
    from model.events import read_events
    from training.heldout import pool_training_data
    from training.labels import read_labels

    if args.corpora is not None:
        return pool_training_data(args.corpora, args.sims or Path(args.out).parent / "reweigh-sims")
    if args.events is None or args.labels is None:
        raise ValueError("give --events and --labels, or --corpora for the protocol's data")
    return read_events(args.events), read_labels(args.labels)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.reweigh",
        description="Re-fit a trained model's calibration and threshold for a new no-content "
        "view weight, on its own training data (no retraining).",
    )
    parser.add_argument("--model", type=Path, required=True, help="trained model directory")
    parser.add_argument(
        "--weight",
        type=float,
        required=True,
        help="weight of the no-content view, in [0, 1) (0: content alone)",
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--events", type=Path, default=None, help="the model's training events")
    parser.add_argument("--labels", type=Path, default=None, help="the model's training labels")
    parser.add_argument(
        "--corpora",
        type=Path,
        default=None,
        help="instead of --events/--labels: the held-out protocol's pool training simulations "
        "from these corpora (the shipped model's training data)",
    )
    parser.add_argument("--sims", type=Path, default=None, help="where --corpora simulates")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache file")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    offline_hub()
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (EventError, ValueError, FileNotFoundError) as exc:
        print(f"reweigh: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
