"""How fast, and in how much memory, `read_events` loads a large JSON Lines file.

Generates a synthetic contract file (default: 1 million events from 20k accounts, prompts of
50-2000 characters, realistic optional fields, accounts interleaved in time as in a real
log), then measures, each in a fresh interpreter so the peaks do not mix:

- ``read_events``: wall and CPU time, events/s and peak RSS (``ru_maxrss``);
- a naive baseline: ``json.loads`` of every line into a list of dicts.

The file size on disk is printed beside the peaks for scale. No assertions: this prints
figures. Usage::

    python benchmarks/read_events.py [--events 1000000] [--accounts 20000] [--file PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]

# Each measurement runs as `python -c MEASURE mode path` in a fresh process. The RSS of the
# bare interpreter plus imports is taken first, so the figures show what the read itself adds.
MEASURE = r"""
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode == "read_events":
    from model.events import read_events
start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0, c0 = time.perf_counter(), time.process_time()
if mode == "read_events":
    table = read_events(path)
    n, n_accounts = len(table), table.n_accounts
else:
    with open(path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    n, n_accounts = len(records), len({r["account_id"] for r in records})
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "n_accounts": n_accounts, "wall_s": wall, "cpu_s": cpu,
                  "start_mb": start_kb / 1024, "peak_mb": peak_kb / 1024}))
"""

MODELS = ["frontier-large", "frontier-medium", "frontier-small", "reasoner-1", "coder-2"]
USER_AGENTS = [
    "python-sdk/1.42.0",
    "python-sdk/1.38.2",
    "node-sdk/4.9.1",
    "curl/8.5.0",
    "langchain/0.3.7",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
    "go-http-client/1.1",
    "custom-harness/0.1",
]


def _corpus(rng: random.Random, n_chars: int) -> str:
    """Word-like random text; prompts are random slices of it, so nearly all are distinct."""
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(5000)
    ]
    words += ["explain", "step", "by", "reasoning", "the", "of", "and", "code", "why", "answer"]
    out: list[str] = []
    size = 0
    while size < n_chars:
        chunk = " ".join(rng.choices(words, k=1000)) + ".\n"
        out.append(chunk)
        size += len(chunk)
    return "".join(out)


def generate(path: Path, n_events: int, n_accounts: int, seed: int = 0) -> None:
    """Write ``n_events`` contract records, time-ordered across accounts (not grouped)."""
    rng = random.Random(seed)
    corpus = _corpus(rng, 8_000_000)
    systems = [corpus[i * 997 : i * 997 + rng.randint(100, 800)] for i in range(50)]
    # Heavy-tailed activity: a few accounts send most requests, as on a real API.
    cum_weights = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(n_accounts)))
    population = range(n_accounts)
    accounts = [f"acct-{i:06d}" for i in range(n_accounts)]
    profiles = [
        {
            "model": rng.choice(MODELS),
            "ua": rng.choice(USER_AGENTS),
            "ip": f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24",
            "system": rng.choice(systems) if rng.random() < 0.3 else None,
            "max_tokens": rng.choice([None, 256, 1024, 4096, 8192]),
        }
        for _ in range(n_accounts)
    ]
    t = 1_775_000_000.0  # end of March 2026
    lo, hi = math.log(50), math.log(2000)
    with open(path, "wb") as fh:
        for i in range(n_events):
            a = rng.choices(population, cum_weights=cum_weights)[0] if i % 64 else i % n_accounts
            prof = profiles[a]
            t += rng.expovariate(1 / 0.5)
            length = int(math.exp(rng.uniform(lo, hi)))  # log-uniform 50-2000 chars
            start = rng.randrange(len(corpus) - length)
            kind = i % 10
            if kind < 7:
                ts: object = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            elif kind < 9:
                frac = f"{t % 1:.3f}"[1:]
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + 7200)) + frac + "+02:00"
            else:
                ts = round(t, 3)
            rec: dict[str, object] = {
                "account_id": accounts[a],
                "ts": ts,
                "prompt": corpus[start : start + length],
                "model": prof["model"],
                "user_agent": prof["ua"],
                "ip": prof["ip"],
            }
            if rng.random() < 0.7:
                rec["conversation_id"] = f"{accounts[a]}-c{i // 5000}-{rng.randrange(8)}"
            if prof["max_tokens"] is not None:
                rec["max_tokens"] = prof["max_tokens"]
            if prof["system"] is not None:
                rec["system"] = prof["system"]
            if kind == 3:
                rec["request_id"] = f"req-{i}"  # an unknown field: must be ignored
            fh.write(orjson.dumps(rec) + b"\n")


def measure(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, mode, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--file", type=Path, help="reuse (or create) this JSONL file")
    parser.add_argument("--no-baseline", action="store_true", help="skip the json.loads run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dw-bench-") as tmp:
        path = args.file or Path(tmp) / "events.jsonl"
        if not path.exists():
            t0 = time.perf_counter()
            generate(path, args.events, args.accounts, args.seed)
            print(f"generated {path} in {time.perf_counter() - t0:.1f} s")
        size_mb = path.stat().st_size / 2**20
        print(f"file: {size_mb:,.0f} MB on disk")

        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
            "(other load inflates wall time more than CPU time)"
        )
        print(f"{'':12} {'events':>10} {'wall s':>7} {'cpu s':>7} {'events/s':>9} {'peak MB':>8}")
        runs = {"read_events": measure("read_events", path)}
        if not args.no_baseline:
            runs["json.loads"] = measure("json_loads", path)
        for name, r in runs.items():
            print(
                f"{name:12} {r['n']:>10,} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} "
                f"{r['n'] / r['wall_s']:>9,.0f} {r['peak_mb']:>8,.0f}"
            )
        ours = runs["read_events"]
        print(
            f"read_events: {ours['n_accounts']:,} accounts; peak RSS = "
            f"{ours['peak_mb'] / size_mb:.2f}x the file size "
            f"(interpreter and imports alone: {ours['start_mb']:,.0f} MB)"
        )
        if "json.loads" in runs:
            base = runs["json.loads"]
            print(
                f"read_events / json.loads: wall {ours['wall_s'] / base['wall_s']:.2f}x, "
                f"cpu {ours['cpu_s'] / base['cpu_s']:.2f}x, "
                f"peak memory {ours['peak_mb'] / base['peak_mb']:.2f}x"
            )


if __name__ == "__main__":
    main()
