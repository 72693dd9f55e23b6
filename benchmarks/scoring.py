"""How fast ``distillwatch score`` scores events, with a cold and with a warm embedding cache.

Simulates accounts from the prompt corpora (``training.simulator.run_simulate``, fixed seed,
``data_samples/corpora`` unless ``--corpora`` is given) and scores them with a model
directory (default: the shipped one, MiniLM through ONNX Runtime), measured in one run:

* cold cache: a fresh SQLite embedding cache, so every distinct prompt goes through MiniLM;
  capped to the first accounts that hold ``--cold-events`` events, so that it takes a
  minute or two on 2 busy cores. Prints events/s and the prompts/s the encoder reached;
* warm cache: the same events again (every vector comes from the cache): events/s of
  ``Detector.score_table`` on the table in memory, and end to end with ``read_events`` of
  the JSON Lines file, best of ``--repeat`` runs, by wall clock and by this process's CPU
  time (the CPU figure is what a quiet machine would give; other work moves the wall one);
* where the warm time goes: reading the file, account views, cache look-ups (hashing +
  SQLite), feature extraction, the sequence network, reasons and the rest;
* what a deep ensemble would cost (``--ensemble-sizes``): the same warm run with the
  network replaced by K copies of itself (timing only; a trained ensemble has K different
  members of the same shape), events/s against the model as loaded;
* what judging every prompt with and without its embedding costs (``--view-weights``,
  ``model.network.ContentViews``): the same warm run with the model's trained network
  judged on content alone and with both views, events/s of each;
* the online state the service stores per account (``AccountState.to_bytes`` /
  ``from_bytes``), against the ``np.savez`` layout it replaced, on the same accounts.

The cold run is the baseline the warm one is compared with; the goal (issue 3) is
>= 5,000 events/s warm, end to end, on 2 cores. The load average is printed at the start and
the end. The embedding cache and the ONNX export live in the work directory
(``DISTILLWATCH_CACHE_DIR`` is pointed there), never in the user's cache. Prints figures,
asserts nothing. Usage::

    python benchmarks/scoring.py [--accounts 400] [--cold-events 2000] [--repeat 5]
                                 [--model DIR] [--work DIR] [--ensemble-sizes 3,5]
                                 [--view-weights 0.5]
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model.embedder import offline_hub  # noqa: E402

offline_hub()  # before anything imports transformers

from benchmarks.stage_clock import StageClock, load_average  # noqa: E402

GOAL_WARM_EVENTS_PER_S = 5_000


def simulated_events(work: Path, accounts: int, seed: int, corpora: Path | None) -> Path:
    """The simulation's events.jsonl (reused when the same one is already in ``work``)."""
    from training.simulator import run_simulate

    sim = work / f"sim-{accounts}-{seed}"
    events = sim / "events.jsonl"
    if not events.exists():
        t0 = time.perf_counter()
        run_simulate(accounts, seed, sim, corpora, progress=False)
        print(f"simulated {accounts} accounts in {time.perf_counter() - t0:.1f} s -> {sim}")
    return events


def first_accounts(table: Any, max_events: int) -> Any:
    """The leading accounts of ``table`` (sorted by account) holding at most ``max_events``."""
    from model.events import EventTable

    _, ends, _ = table._account_bounds()
    n = max(1, int((ends <= max_events).sum()))
    return EventTable(table.table.slice(0, int(ends[n - 1])))


def fresh_sqlite(path: Path) -> Path:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    return path


def timed_warm_run(detector: Any, events_path: Path) -> tuple[float, float, float, list[Any]]:
    """(wall s of score_table, wall s end to end, CPU s end to end, scores)."""
    from model.events import read_events

    c0, t0 = time.process_time(), time.perf_counter()
    table = read_events(events_path)
    t1 = time.perf_counter()
    scores = detector.score_table(table)
    t2, c2 = time.perf_counter(), time.process_time()
    return t2 - t1, t2 - t0, c2 - c0, scores


def warm_breakdown(detector: Any, events_path: Path) -> tuple[float, dict[str, float]]:
    """One instrumented end-to-end warm run: total seconds and seconds per stage."""
    import model.events as events_module
    from model.events import EventTable

    clock = StageClock()
    t0 = time.perf_counter()
    with clock.patched(events_module, "read_events", "read events (JSON Lines -> table)"):
        table = events_module.read_events(events_path)
    table.accounts = clock.wrap_iter(  # type: ignore[method-assign]
        "account views (table -> columns)", functools.partial(EventTable.accounts, table)
    )
    with (
        clock.patched(detector, "embed", "cache look-ups (hash + SQLite)"),
        clock.patched(detector.extractor, "transform", "feature extraction"),
        clock.patched(detector, "_logits", "sequence network"),
        clock.patched(detector, "reasons", "reasons (flagged accounts)"),
    ):
        detector.score_table(table)
    return time.perf_counter() - t0, clock.seconds


def warm_rates(
    detector: Any, events_path: Path, networks: dict[Any, Any], repeat: int
) -> dict[Any, float]:
    """Warm end-to-end events/s (best of ``repeat``) with each of ``networks`` in place of
    the detector's own network, which is put back afterwards."""
    net = detector.network
    rates: dict[Any, float] = {}
    try:
        for key, network in networks.items():
            detector.network = network
            best = min(timed_warm_run(detector, events_path)[1] for _ in range(repeat))
            rates[key] = _n_events(events_path) / best
    finally:
        detector.network = net
    return rates


def ensemble_figures(detector: Any, events_path: Path, sizes: list[int], repeat: int) -> None:
    """Warm end-to-end events/s with the network as a K-member ensemble of copies of itself
    (judged on content alone)."""
    from model.network import EnsembleDetector, SequenceDetector, base_network

    base = base_network(detector.network)
    single = base.members[0] if isinstance(base, EnsembleDetector) else base
    assert isinstance(single, SequenceDetector)
    networks = {
        k: single if k == 1 else EnsembleDetector.of([single] * k) for k in sorted({1, *sizes})
    }
    rates = warm_rates(detector, events_path, networks, repeat)
    print()
    print(f"{'warm, end to end, network as an ensemble of':<46}{'events/s':>11}{'x one':>8}")
    for k, rate in rates.items():
        print(f"{f'{k} network(s)':<46}{rate:>11,.0f}{rate / rates[1]:>8.2f}")


def view_figures(detector: Any, events_path: Path, weights: list[float], repeat: int) -> None:
    """Warm end-to-end events/s of the model's trained network judged on content alone
    (weight 0) and with the no-content view mixed in at each weight (timing only)."""
    from model.network import with_content_views

    net = detector.network
    networks = {w: with_content_views(net, w) for w in sorted({0.0, *weights})}
    rates = warm_rates(detector, events_path, networks, repeat)
    print()
    print(f"{'warm, end to end, no-content view weight':<46}{'events/s':>11}{'x none':>8}")
    for w, rate in rates.items():
        label = "content alone" if w == 0 else f"{w:g} (both views)"
        print(f"{label:<46}{rate:>11,.0f}{rate / rates[0.0]:>8.2f}")


def _n_events(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def savez_layout(state: Any) -> bytes:
    """The account state as the ``np.savez`` layout (version 1) stored it: the baseline."""
    import json

    import numpy as np

    f = state.features
    meta = {
        "config": f.config.to_dict(),
        **{k: getattr(f, k) for k in ("n_topics", "dim", "n", "last_ts", "first_ts")},
        **{k: getattr(f, k) for k in ("last_conversation", "n_emb", "conv_turns", "counts")},
        **{k: getattr(f, k) for k in ("hour_cos", "hour_sin", "ua_script")},
    }
    fbuf = io.BytesIO()
    np.savez(
        fbuf,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        recent_ts=np.asarray(f.recent_ts, dtype=np.float64),
        recent_log_gaps=np.asarray(f.recent_log_gaps, dtype=np.float64),
        recent_emb=f.recent_emb[: min(f.n_emb, f.config.window)].astype(np.float16),
        head_keys=np.array(list(f.head_keys.items()), dtype=np.int64).reshape(-1, 2),
        tail_keys=np.array(list(f.tail_keys.items()), dtype=np.int64).reshape(-1, 2),
        topic_counts=f.topic_counts,
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        features=np.frombuffer(fbuf.getvalue(), dtype=np.uint8),
        hidden=state.net.hidden.numpy(),
        ev_max=state.net.ev_max.numpy(),
        ev_sum=state.net.ev_sum.numpy(),
        n_seen=state.net.n_seen.numpy(),
        scalars=np.array(
            [state.n_events, state.first_flag_event or -1, state.last_prob], dtype=np.float64
        ),
    )
    return buf.getvalue()


def state_figures(detector: Any, table: Any) -> None:
    """Per-account cost and size of the stored online state, new layout vs np.savez."""
    from model.scorer import AccountState

    states = [detector.update(None, acc)[0] for acc in table.accounts()]

    def per_state_ms(fn: Any, items: list[Any]) -> float:
        times = []
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    new_blobs = [s.to_bytes() for s in states]
    old_blobs = [savez_layout(s) for s in states]
    rows = [
        ("np.savez layout (v1, baseline)", savez_layout, old_blobs),
        ("flat layout (v2)", AccountState.to_bytes, new_blobs),
    ]
    print()
    print(
        f"online state per account ({len(states)} accounts, "
        f"median {statistics.median(s.n_events for s in states):.0f} events)"
    )
    print(f"{'layout':<34}{'to_bytes ms':>12}{'from_bytes ms':>15}{'KiB median':>12}{'max':>8}")
    base_ms = None
    for name, write, blobs in rows:
        write_ms = per_state_ms(write, states)
        read_ms = per_state_ms(AccountState.from_bytes, blobs)
        sizes = sorted(len(b) / 1024 for b in blobs)
        base_ms = base_ms or write_ms + read_ms
        print(
            f"{name:<34}{write_ms:>12.3f}{read_ms:>15.3f}{statistics.median(sizes):>12.1f}"
            f"{sizes[-1]:>8.1f}   x{base_ms / (write_ms + read_ms):.1f}"
        )
    print("(v2 keeps the embeddings ring in float32, so a restored account scores exactly")
    print(" like the live one; v1 rounded it to float16; v1 states are still read)")
    # what the service writes: the state without its ring, plus the ring slots one new
    # event changes (one row of 4 * D bytes), instead of the whole blob every update
    outer = sorted(len(s.to_bytes(ring=False)) / 1024 for s in states)
    slot_kib = 4 * states[0].features.recent_emb.shape[1] / 1024 if states else 0.0
    whole = statistics.median(len(b) / 1024 for b in new_blobs)
    print(
        f"service layout (ring beside the state): {statistics.median(outer):.1f} KiB median "
        f"state (max {outer[-1]:.1f}) + {slot_kib:.1f} KiB per new prompt, written per "
        f"update instead of {whole:.1f} KiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=400, help="simulated accounts")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--corpora", type=Path, default=None, help="prompt corpora directory")
    parser.add_argument(
        "--cold-events", type=int, default=2_000, help="events in the cold and warm runs"
    )
    parser.add_argument("--repeat", type=int, default=5, help="warm runs (best kept)")
    parser.add_argument("--model", type=Path, default=ROOT / "model" / "default")
    parser.add_argument(
        "--ensemble-sizes",
        default="3,5",
        help="comma-separated ensemble sizes to time (empty: none)",
    )
    parser.add_argument(
        "--view-weights",
        default="0.5",
        help="comma-separated no-content view weights to time (empty: none)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "distillwatch-scoring-bench",
        help="simulation, embedding cache and ONNX export (reused between runs)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["DISTILLWATCH_CACHE_DIR"] = str(args.work / "cache")  # never the user's cache

    import torch

    from model.events import read_events, write_events
    from model.model_dir import load_model

    print(
        f"distillwatch scoring benchmark (python {sys.version.split()[0]}, torch threads "
        f"{torch.get_num_threads()}, work dir {args.work})"
    )
    print(f"load average at start: {load_average()}")
    full = read_events(simulated_events(args.work, args.accounts, args.seed, args.corpora))
    table = first_accounts(full, args.cold_events)
    events_path = args.work / f"score-{args.accounts}-{args.seed}-{len(table)}.jsonl"
    if not events_path.exists():
        write_events((e for acc in table.accounts() for e in acc.events()), events_path)
    n_prompts = len(table.unique_prompts())
    print(
        f"simulation: {len(full)} events of {full.n_accounts} accounts; scored: {len(table)} "
        f"events of {table.n_accounts} accounts, {n_prompts} distinct prompts"
    )

    cache_file = fresh_sqlite(args.work / "cache" / "bench-embeddings.sqlite3")
    detector = load_model(args.model, cache_path=cache_file)
    t0 = time.perf_counter()
    detector.embed(["warm-up: the encoder loads lazily (and is exported to ONNX once)"])
    load_s = time.perf_counter() - t0
    stats = getattr(detector.embedder, "stats", None)
    embedded_before = stats.embedded if stats is not None else 0

    t0 = time.perf_counter()
    cold_scores = detector.score_table(table)
    cold_s = time.perf_counter() - t0
    embedded = (stats.embedded if stats is not None else n_prompts) - embedded_before

    runs = [timed_warm_run(detector, events_path) for _ in range(max(1, args.repeat))]
    warm_table_s = min(r[0] for r in runs)
    warm_e2e_s = min(r[1] for r in runs)
    warm_cpu_s = min(r[2] for r in runs)
    same = [s.to_dict() for s in cold_scores] == [s.to_dict() for s in runs[-1][3]]
    total_s, stages = warm_breakdown(detector, events_path)

    n = len(table)
    print()
    print(f"{'run':<46}{'seconds':>9}{'events/s':>11}{'x cold':>8}")
    print(f"{'encoder load (first call)':<46}{load_s:>9.2f}")
    print(f"{'cold cache: score_table':<46}{cold_s:>9.2f}{n / cold_s:>11,.0f}{1.0:>8.2f}")
    for name, sec in (
        ("warm cache: score_table (table in memory)", warm_table_s),
        ("warm cache: read_events + score_table", warm_e2e_s),
        ("warm cache: read_events + score_table, CPU s", warm_cpu_s),
    ):
        print(f"{name:<46}{sec:>9.3f}{n / sec:>11,.0f}{cold_s / sec:>8.1f}")
    print(
        f"cold: {embedded} prompts embedded at {embedded / cold_s:,.1f} prompts/s "
        f"(whole cold run); warm scores identical to cold: {'yes' if same else 'NO'}"
    )

    print()
    print(f"{'warm, end to end, by stage (one run)':<46}{'seconds':>9}{'share':>8}{'events/s':>11}")
    accounted = 0.0
    for stage, sec in stages.items():
        accounted += sec
        print(f"{stage:<46}{sec:>9.3f}{sec / total_s:>8.1%}{n / max(sec, 1e-9):>11,.0f}")
    rest = max(total_s - accounted, 0.0)
    print(f"{'the rest (batching, scores, bookkeeping)':<46}{rest:>9.3f}{rest / total_s:>8.1%}")
    print(f"{'total':<46}{total_s:>9.3f}{1:>8.0%}{n / total_s:>11,.0f}")

    sizes = [int(x) for x in args.ensemble_sizes.split(",") if x.strip()]
    if sizes:
        ensemble_figures(detector, events_path, sizes, max(1, args.repeat))

    weights = [float(x) for x in args.view_weights.split(",") if x.strip()]
    if weights:
        view_figures(detector, events_path, weights, max(1, args.repeat))

    state_figures(detector, table)

    rate, cpu_rate = n / warm_e2e_s, n / warm_cpu_s
    verdict = "met" if rate >= GOAL_WARM_EVENTS_PER_S else "NOT met"
    print()
    print(
        f"goal: warm end to end >= {GOAL_WARM_EVENTS_PER_S:,} events/s on 2 cores: "
        f"{rate:,.0f} events/s by wall clock ({verdict}), {cpu_rate:,.0f} per CPU second"
    )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
