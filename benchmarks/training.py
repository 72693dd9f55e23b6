"""How long training a detector on 5,000 simulated accounts takes, stage by stage.

Runs the real training pipeline (``training.train.train``) on a fresh simulation and times
each of its stages by wrapping the stage functions for this run:

* simulation (``run_simulate``) and reading the events back (``read_events``);
* embedding, with the dependency-free ``HashingEmbedder``: embedding 5,000 accounts with
  MiniLM on 2 cores would take hours, so the training time printed EXCLUDES real embedding.
  What MiniLM would add is estimated from its prompts/s measured here on a sample of the
  same prompts (``--minilm-sample``; a model's embeddings are cached, so a second training
  on the same prompts pays only the look-ups);
* building the dataset: topic prototypes (k-means) and the causal features of every account;
* dilution augmentation: the spliced training accounts and their features
  (``--dilution-augment``, default the ``TrainConfig`` default; 0 skips it);
* fitting the network (Lightning), per epoch (train + validation), ``--epochs`` epochs with
  early stopping off so that every epoch runs;
* calibration, threshold and reference, and saving the model directory;
* peak resident memory after each stage (it only grows: peaks, not current use).

The baseline in the same run is the simulation itself (seconds per 1,000 accounts) so the
stages compare on one machine. Prints figures, asserts nothing. Usage::

    python benchmarks/training.py [--accounts 5000] [--epochs 3] [--minilm-sample 96]
        [--dilution-augment F]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model.embedder import offline_hub  # noqa: E402

offline_hub()  # before anything imports transformers

from benchmarks.stage_clock import StageClock, load_average, peak_rss_mb  # noqa: E402


def minilm_prompts_per_s(prompts: list[str], sample: int, cache_dir: Path) -> float | None:
    """MiniLM (ONNX, the shipped model's settings) prompts/s on a sample, cold cache."""
    if sample <= 0:
        return None
    from model.embedder import EmbedConfig, Embedder
    from model.embedding_cache import EmbeddingCache

    step = max(1, len(prompts) // sample)
    texts = prompts[::step][:sample]
    embedder = Embedder(EmbedConfig(), cache=EmbeddingCache(cache_dir / "minilm-sample.sqlite3"))
    embedder.encode(["warm-up: load (and export to ONNX once)"])
    t0 = time.perf_counter()
    embedder.encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs run (no early stopping)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--corpora", type=Path, default=None, help="prompt corpora directory")
    parser.add_argument(
        "--minilm-sample", type=int, default=96, help="prompts embedded with MiniLM (0: skip)"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (temporary)")
    parser.add_argument(
        "--dilution-augment",
        type=float,
        default=None,
        help="spliced accounts per organic training account (default: TrainConfig's; 0: off)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["DISTILLWATCH_CACHE_DIR"] = str(work / "cache")  # never the user's cache
        run(args, work)


def run(args: argparse.Namespace, work: Path) -> None:
    import torch

    import training.augment as augment_module
    import training.train as train_module
    from model.embedder import HashingEmbedder
    from model.events import read_events
    from training.labels import read_labels
    from training.lightning_module import LitDetector
    from training.simulator import run_simulate
    from training.train import TrainConfig

    print(
        f"distillwatch training benchmark (python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__})"
    )
    print(f"load average at start: {load_average()}")
    marks: list[tuple[str, float, float]] = []  # stage, seconds, peak MB after it

    t0 = time.perf_counter()
    run_simulate(args.accounts, args.seed, work / "sim", args.corpora, progress=False)
    marks.append(("simulate", time.perf_counter() - t0, peak_rss_mb()))
    t0 = time.perf_counter()
    table = read_events(work / "sim" / "events.jsonl")
    labels = read_labels(work / "sim" / "labels.jsonl")[0]
    marks.append(("read events + labels", time.perf_counter() - t0, peak_rss_mb()))
    n_prompts = len(table.unique_prompts())
    print(
        f"{table.n_accounts} accounts, {len(table):,} events, {n_prompts:,} distinct prompts; "
        f"{args.epochs} epochs, early stopping off"
    )

    clock = StageClock()
    epoch_starts: list[float] = []
    peaks: dict[str, float] = {}
    ended: dict[str, float] = {}

    def on_train_epoch_start(self: LitDetector) -> None:
        epoch_starts.append(time.perf_counter())

    def after(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            ended[stage] = time.perf_counter()
            peaks[stage] = peak_rss_mb()
            return out

        return wrapped

    stages = (
        ("embed_table", "embed (HashingEmbedder)"),
        ("fit_topic_centroids", "topic prototypes (k-means)"),
        ("build_examples", "features of every account"),
        ("_fit_network", "fit network (Lightning)"),
        ("fit_calibration", "calibration fit"),
        ("save_model", "save model directory"),
    )
    originals = {name: getattr(train_module, name) for name, _ in stages}
    augment_stage = "spliced accounts (augmentation)"
    splice_original = augment_module.augmented_examples  # train() imports it when it runs
    embedder = HashingEmbedder()
    extra = {} if args.dilution_augment is None else {"dilution_augment": args.dilution_augment}
    config = TrainConfig(max_epochs=args.epochs, patience=args.epochs, seed=args.seed, **extra)
    print(f"dilution augmentation: {config.dilution_augment} spliced per organic training account")
    LitDetector.on_train_epoch_start = on_train_epoch_start  # type: ignore[method-assign]
    try:
        for name, stage in stages:
            setattr(train_module, name, after(stage, clock.wrap(stage, originals[name])))
        augment_module.augmented_examples = after(  # type: ignore[assignment]
            augment_stage, clock.wrap(augment_stage, splice_original)
        )
        t0 = time.perf_counter()
        _, report = train_module.train(
            table,
            labels,
            embedder,
            {"kind": "hashing", **embedder.to_dict()},
            config,
            out=work / "model",
            progress=False,
        )
        total = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(train_module, name, fn)
        augment_module.augmented_examples = splice_original  # type: ignore[assignment]
        del LitDetector.on_train_epoch_start
    fit_end = ended["fit network (Lightning)"]  # the last epoch ends with the best-weights reload
    epochs = [b - a for a, b in zip(epoch_starts, [*epoch_starts[1:], fit_end], strict=True)]

    rate = minilm_prompts_per_s(table.unique_prompts(), args.minilm_sample, work / "cache")

    sim_s = marks[0][1]
    per_k = sim_s / (args.accounts / 1000)
    print()
    print(f"{'stage':<36}{'seconds':>9}{'x simulate':>12}{'peak RSS MB':>13}")
    for stage, sec, peak in marks:
        print(f"{stage:<36}{sec:>9.1f}{sec / sim_s:>12.2f}{peak:>13,.0f}")
    accounted = 0.0
    timed = [stage for _, stage in stages]
    if augment_stage in peaks:  # set only when the stage ran
        timed.insert(3, augment_stage)  # it runs between the features and the fit
    for stage in timed:
        sec = clock.seconds[stage]
        accounted += sec
        print(f"{stage:<36}{sec:>9.1f}{sec / sim_s:>12.2f}{peaks.get(stage, 0):>13,.0f}")
    rest = total - accounted
    print(f"{'rest (split, val traces, reference)':<36}{rest:>9.1f}{rest / sim_s:>12.2f}")
    train_s = total - clock.seconds["embed (HashingEmbedder)"]
    print(f"{'train() without embedding':<36}{train_s:>9.1f}{train_s / sim_s:>12.2f}")
    print(f"(simulation: {per_k:.1f} s per 1,000 accounts)")
    print()
    print(
        "epochs (train + validation): "
        + ", ".join(f"{e:.1f} s" for e in epochs)
        + f"; validation AUROC {report['validation'].get('auroc', float('nan')):.3f}"
    )
    if rate is not None:
        print(
            f"MiniLM (ONNX) on {args.minilm_sample} of these prompts: {rate:.1f} prompts/s, so "
            f"embedding all {n_prompts:,} distinct prompts once would take about "
            f"{n_prompts / rate / 3600:.1f} h on this machine now (then cached: reruns skip it)"
        )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
