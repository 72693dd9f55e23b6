"""How much the HTTP service costs on top of the in-process scorer.

Starts ``distillwatch serve`` on 127.0.0.1 in a subprocess (loopback only, a fresh SQLite
file) and drives it with concurrent httpx clients for a bounded time and count:

(a) single-event ingest of unseen prompts (every prompt carries a fresh nonce, so the
    embedder has to embed it): p50 / p95 / p99 latency and events/s, at 1 client and at
    ``--clients`` clients;
(b) 100-event batches of already-embedded prompts (sent once beforehand): p50 / p95 / p99
    latency per batch and events/s at ``--clients`` clients.

Clients encode each body (orjson) before starting its clock, so latency is the service's
round trip, not the client's JSON encoder; the clients still share the machine's cores.

(a) and (b) run against a service that updates accounts in its own process
(``DISTILLWATCH_WORKERS=0``), then once more against one with ``--workers`` worker processes
(default: one per CPU; ``--workers 0`` skips that run).

Baselines measured in the same run: the in-process scorer (``detector.embed`` of the batch
+ ``detector.update`` of each account, states kept in memory) on the same batches, before
and after the service runs (their mean), so the service overhead shows as a ratio; and the
time to embed one unseen prompt, so p99 single-event latency can be compared with 3x that.
Goals: (b) >= 70 % of in-process; p99 (a) at one client <= 3x one-prompt embed time.

The hashing embedder gives the pure service-overhead figure; when ``model/default/``
exists the same figures are taken with it (the real MiniLM encoder); otherwise with a small
model trained here with MiniLM on the same simulation. Prints figures, asserts
nothing. Usage::

    python benchmarks/serve_load.py [--seconds 8] [--clients 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model.embedder import offline_hub  # noqa: E402

offline_hub()  # before anything imports transformers

BATCH = 100
JSON_HEADERS = {"content-type": "application/json"}
MAX_REQUESTS = 20_000  # per scenario, whatever the time budget


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    vals = sorted(values)
    return vals[min(len(vals) - 1, round(q / 100 * (len(vals) - 1)))]


def tiny_hashing_model(work: Path) -> tuple[Path, Path]:
    """(model dir, events file): a small simulation and a model trained on it, reused."""
    from training.simulator import run_simulate

    sim = work / "sim"
    if not (sim / "events.jsonl").exists():
        run_simulate(200, 11, sim, progress=False)
    model_dir = work / "hashing-model"
    if not (model_dir / "config.json").exists():
        from model.embedder import HashingEmbedder
        from model.events import read_events
        from training.labels import read_labels
        from training.train import TrainConfig, train

        emb = HashingEmbedder()
        table = read_events(sim / "events.jsonl")
        labels = read_labels(sim / "labels.jsonl")[0]
        train(
            table,
            labels,
            emb,
            {"kind": "hashing", **emb.to_dict()},
            TrainConfig(max_epochs=3, n_topics=8),
            out=model_dir,
            progress=False,
        )
    return model_dir, sim / "events.jsonl"


def small_minilm_model(work: Path, sim_events: Path) -> Path:
    """A small model on the same simulation with the real MiniLM encoder (reused)."""
    model_dir = work / "minilm-model"
    if not (model_dir / "config.json").exists():
        from distillwatch.api import train
        from model.events import read_events
        from training.labels import read_labels
        from training.train import TrainConfig

        labels = read_labels(sim_events.with_name("labels.jsonl"))[0]
        train(
            read_events(sim_events),
            labels,
            out=model_dir,
            config=TrainConfig(max_epochs=3, n_topics=8),
            progress=False,
        )
    return model_dir


class Server:
    def __init__(self, model: Path, db: Path, log: Path, env: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distillwatch.cli",
                "serve",
                "--model",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db",
                str(db),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server not ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def drive(
    url: str,
    clients: int,
    seconds: float,
    make_body: Callable[[int, int], dict[str, Any]],
    events_per_request: int,
) -> dict[str, float]:
    """``clients`` threads POST /v1/events for ``seconds``; latency and throughput."""
    import httpx
    import orjson

    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    per_client = MAX_REQUESTS // clients

    def run(k: int) -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(per_client):
                if time.perf_counter() >= stop_at:
                    break
                body = orjson.dumps(make_body(k, i))  # before the clock: the client's cost
                t0 = time.perf_counter()
                r = http.post("/v1/events", content=body, headers=JSON_HEADERS)
                mine.append(time.perf_counter() - t0)
                bad += r.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "p50_ms": 1000 * _pct(latencies, 50),
        "p95_ms": 1000 * _pct(latencies, 95),
        "p99_ms": 1000 * _pct(latencies, 99),
        "events_per_s": n * events_per_request / wall,
    }


def in_process(model: Path, batches: list[list[dict[str, Any]]], seconds: float) -> float:
    """events/s of ``detector.embed`` + ``detector.update`` on the same batches (no HTTP)."""
    import numpy as np
    import torch

    from model.events import AccountEvents, parse_event
    from model.model_dir import load_model

    torch.set_num_threads(1)  # what the service runs with (DISTILLWATCH_TORCH_THREADS)
    detector = load_model(model)
    parsed = [[parse_event(r) for r in b] for b in batches]
    # (b) sends prompts the service has embedded before: so does the baseline (a cold first
    # pass would time the encoder, not the scorer; the cache directory is shared with it)
    detector.embed([ev.prompt for b in parsed for ev in b])
    states: dict[str, Any] = {}
    n_events = 0
    t0 = time.perf_counter()
    for i in range(10**9):
        events = parsed[i % len(parsed)]
        groups: dict[str, list[Any]] = {}
        for ev in events:
            groups.setdefault(ev.account_id, []).append(ev)
        accounts = [AccountEvents.from_events(g) for g in groups.values()]
        emb = detector.embed([p for a in accounts for p in a.prompts])
        bounds = np.cumsum([0] + [len(a) for a in accounts])
        for j, acc in enumerate(accounts):
            states[acc.account_id], _ = detector.update(
                states.get(acc.account_id), acc, embeddings=emb[bounds[j] : bounds[j + 1]]
            )
        n_events += len(events)
        if time.perf_counter() - t0 >= seconds:
            break
    return n_events / (time.perf_counter() - t0)


def embed_one_ms(model: Path, prompts: list[str]) -> tuple[float, float]:
    """(median, p99) ms to embed one unseen prompt, drawn as scenario (a) draws them."""
    from model.model_dir import load_model

    detector = load_model(model)
    detector.embed(["warm up the encoder " + uuid.uuid4().hex])
    times = []
    for text in prompts:
        t0 = time.perf_counter()
        detector.embed([f"{text} [{uuid.uuid4().hex}]"])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), 1000 * _pct(times, 99)


def bench(label: str, model: Path, events_path: Path, work: Path, args: argparse.Namespace) -> None:
    import httpx

    from model.events import read_events

    table = read_events(events_path)
    records = [e.to_record() for acc in table.accounts() for e in acc.events()]
    records.sort(key=lambda r: r["ts"])  # live traffic: accounts interleaved in time
    batches = [records[i : i + BATCH] for i in range(0, len(records) - BATCH + 1, BATCH)]
    print(f"\n== {label}: {model}")
    print(f"   {len(records)} events of {table.n_accounts} accounts, {len(batches)} batches")

    one_ms, one_p99 = embed_one_ms(
        model, [records[(i * 7919) % len(records)]["prompt"] for i in range(200)]
    )
    inproc_before = in_process(model, batches, min(args.seconds, 10.0))

    def fresh_db(name: str) -> Path:
        db = work / f"{label}-{name}.sqlite3"
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            p.unlink(missing_ok=True)
        return db

    def single(k: int, i: int) -> dict[str, Any]:
        rec = dict(records[(k * 7919 + i) % len(records)])
        rec["account_id"] = f"single-{k}-{i % 50}"
        rec["prompt"] = f"{rec['prompt']} [{uuid.uuid4().hex}]"
        return {"events": [rec]}

    def batch(k: int, i: int) -> dict[str, Any]:
        b = batches[(k * 31 + i) % len(batches)]
        return {"events": [{**r, "account_id": f"b{k}-{r['account_id']}"} for r in b]}

    def run_service(workers: int, with_single: bool) -> dict[str, dict[str, float]]:
        db = fresh_db(f"w{workers}")
        env = {"DISTILLWATCH_WORKERS": str(workers)}
        server = Server(model, db, work / f"{label}-w{workers}-server.log", env=env)
        out: dict[str, dict[str, float]] = {}
        try:
            server.wait_ready()
            with httpx.Client(base_url=server.url, timeout=120) as http:  # (b)'s prompts once
                for b in batches:
                    http.post("/v1/events", json={"events": b}).raise_for_status()
            if with_single:
                out["a1"] = drive(server.url, 1, args.seconds, single, 1)
                out["ac"] = drive(server.url, args.clients, args.seconds, single, 1)
            out["b1"] = drive(server.url, 1, args.seconds, batch, BATCH)
            out["bc"] = drive(server.url, args.clients, args.seconds, batch, BATCH)
        finally:
            server.stop()
        return out

    inline = run_service(0, with_single=True)
    a1, ac, b1, bc = inline["a1"], inline["ac"], inline["b1"], inline["bc"]
    pooled = run_service(args.workers, with_single=True) if args.workers > 0 else {}
    # once more after the service ran: load on a shared machine drifts, the mean is fairer
    inproc_after = in_process(model, batches, min(args.seconds, 10.0))
    inproc = (inproc_before + inproc_after) / 2

    def row(name: str, r: dict[str, float]) -> None:
        print(
            f"   {name:<38} p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms  "
            f"p99 {r['p99_ms']:8.2f} ms  {r['events_per_s']:9.0f} events/s  "
            f"({int(r['requests'])} requests, {int(r['errors'])} errors)"
        )

    row("(a) single unseen event, 1 client", a1)
    row(f"(a) single unseen event, {args.clients} clients", ac)
    row(f"(b) {BATCH}-event batches, 1 client", b1)
    row(f"(b) {BATCH}-event batches, {args.clients} clients", bc)
    if pooled:
        w = args.workers
        row(f"(a) single unseen event, 1 client, {w} workers", pooled["a1"])
        row(f"(a) single unseen event, {args.clients} clients, {w} workers", pooled["ac"])
        row(f"(b) {BATCH}-event batches, 1 client, {w} workers", pooled["b1"])
        row(f"(b) {BATCH}-event batches, {args.clients} clients, {w} workers", pooled["bc"])
    print(
        f"   in-process embed+update on the same batches (1 thread): {inproc:9.0f} events/s"
        f"  (before the service {inproc_before:.0f}, after {inproc_after:.0f})"
    )
    print(
        f"   service / in-process (b), updates in the serve process: 1 client "
        f"{b1['events_per_s'] / inproc:6.1%}, {args.clients} clients "
        f"{bc['events_per_s'] / inproc:6.1%}   (goal >= 70%)"
    )
    if pooled:
        print(
            f"   service / in-process (b), DISTILLWATCH_WORKERS={args.workers}: 1 client "
            f"{pooled['b1']['events_per_s'] / inproc:6.1%}, {args.clients} clients "
            f"{pooled['bc']['events_per_s'] / inproc:6.1%}   (goal >= 70%; the in-process "
            "scorer runs on one core)"
        )
    print(
        f"   embed one unseen prompt (same prompts as (a)): p50 {one_ms:.2f} ms, p99 "
        f"{one_p99:.2f} ms;  p99 (a, 1 client) / p50 embed = {a1['p99_ms'] / one_ms:.1f}x   "
        f"(goal <= 3x);  p50 (a, 1 client) - p50 embed = {a1['p50_ms'] - one_ms:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario (bounded)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where the simulation, model and databases go (reused if present)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="DISTILLWATCH_WORKERS of the second service run of (b) (0: skip it; default: CPUs)",
    )
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 1.0), 60.0)
    args.clients = min(max(args.clients, 1), 64)
    args.workers = min(max(args.workers, 0), 64)
    work = args.work or Path(tempfile.gettempdir()) / "distillwatch-serve-bench"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["DISTILLWATCH_CACHE_DIR"] = str(work / "embed-cache")  # no stale cache hits
    print(
        f"distillwatch service load benchmark (python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, work dir {work})"
    )
    model, events = tiny_hashing_model(work)
    bench("hashing", model, events, work, args)
    if args.skip_minilm:
        return
    default = ROOT / "model" / "default"
    if (default / "config.json").exists():
        bench("minilm-default", default, events, work, args)
    else:
        print("\n(model/default/ not present: a small model is trained with MiniLM instead)")
        bench("minilm-small", small_minilm_model(work, events), events, work, args)


if __name__ == "__main__":
    main()
