"""The dilution experiment: how recall falls as harvesting hides inside organic use.

What it knows: how to simulate mixed accounts whose streams are ordinary use with a fixed
share ``s`` of harvesting prompts dripped in (the simulator's ``slow_drip`` kind with
``slow_drip_share=(s, s)``), an organic population from the same seed to set
false-positive thresholds on, and how to score both with distillwatch and the baselines
on the same embeddings, giving recall against ``s``.

What it does not know: how the detector or the baselines were trained (pass them fitted),
plots (``training.report`` draws the curve from the returned dict).

Design. Every mixed account has ``n_events`` prompts (default 200), so the smallest share,
1 %, is two harvesting prompts; ``share * n_events`` must be at least one. The simulator
places ``round(share * n)`` harvesting prompts when that is a whole number, otherwise it
lengthens the account until it is, so the realised share is exact; it is measured from the
simulator's per-event ground truth and returned. Every share uses the same seed, so the
mixed accounts of two shares share their personas, clients and operators and differ mostly
in how many harvesting prompts they carry. Organic accounts come from the default organic
mix (casual users to eval teams); they are mostly shorter than the mixed ones, so the
*control*, the mixed accounts of the smallest share with their harvesting prompts removed,
says how often a method flags such long organic-looking streams without any harvesting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.events import AccountEvents, EventTable
from model.scorer import Detector
from training.baselines import Baseline
from training.corpora import Corpora
from training.metrics import threshold_at_fpr
from training.simulator import DEFAULT_KIND_MIX, ORGANIC_KINDS, SimConfig, Simulation, simulate

DEFAULT_SHARES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10, 0.20)
#: The false-positive rate of the same-run thresholds (``recall_at_1pct_fpr``).
FPR = 0.01
DETECTOR_NAME = "distillwatch"
_CHUNK_EVENTS = 20_000


def mixed_simulation(
    share: float, n_accounts: int, n_events: int, seed: int, corpora: Corpora
) -> Simulation:
    """``n_accounts`` organic-looking accounts of ``n_events`` prompts, ``share`` harvesting.

    All are ``slow_drip`` accounts (label 1): an organic persona's stream with harvesting
    prompts inserted at random positions. See the module docstring for exact shares.
    """
    _check_share(share, n_events)
    config = SimConfig(
        n_accounts=n_accounts,
        seed=seed,
        kind_mix={"slow_drip": 1.0},
        hydra_share=0.0,
        slow_drip_share=(share, share),
        prompts_per_account={"slow_drip": (n_events, n_events)},
    )
    return simulate(config, corpora)


def _check_share(share: float, n_events: int) -> None:
    if not 0.0 < share < 1.0:
        raise ValueError(f"a harvesting share must be in (0, 1), got {share}")
    if math.floor(share * n_events + 1e-9) < 1:
        raise ValueError(
            f"a share of {share:g} of {n_events} events is less than one harvesting prompt; "
            f"use n_events >= {math.ceil(1 / share - 1e-9)}"
        )


def organic_simulation(n_accounts: int, seed: int, corpora: Corpora) -> Simulation:
    """Organic accounts only, in the simulator's default proportions of organic kinds."""
    mix = {k: DEFAULT_KIND_MIX[k] for k in ORGANIC_KINDS}
    return simulate(
        SimConfig(n_accounts=n_accounts, seed=seed, kind_mix=mix, hydra_share=0.0), corpora
    )


def realised_shares(sim: Simulation) -> dict[str, float]:
    """Share of harvesting prompts in each account of ``sim`` (from its ground truth)."""
    n: dict[str, int] = {}
    h: dict[str, int] = {}
    for ev, flag in zip(sim.events, sim.harvest_flags, strict=True):
        a = ev["account_id"]
        n[a] = n.get(a, 0) + 1
        h[a] = h.get(a, 0) + int(flag)
    return {a: h[a] / n[a] for a in n}


def _without_harvesting(sim: Simulation) -> EventTable:
    keep = [ev for ev, flag in zip(sim.events, sim.harvest_flags, strict=True) if not flag]
    return EventTable.from_records(keep, source="<dilution control>")


def _chunks(table: EventTable) -> Iterator[list[AccountEvents]]:
    chunk: list[AccountEvents] = []
    size = 0
    for acc in table.accounts():
        chunk.append(acc)
        size += len(acc)
        if size >= _CHUNK_EVENTS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _final_scores(
    detector: Detector, baselines: Sequence[Baseline], table: EventTable
) -> dict[str, np.ndarray]:
    """Account scores (the last value of each trace) of every method, one embedding pass."""
    out: dict[str, list[float]] = {DETECTOR_NAME: [], **{b.name: [] for b in baselines}}
    for chunk in _chunks(table):
        vecs = detector.embed([p for a in chunk for p in a.prompts])  # (N, D), cached
        bounds = np.cumsum([0, *(len(a) for a in chunk)])
        embs = [vecs[bounds[i] : bounds[i + 1]] for i in range(len(chunk))]
        out[DETECTOR_NAME].extend(float(t.probs[-1]) for t in detector.trace_many(chunk, embs))
        for b in baselines:
            out[b.name].extend(float(b.trace(a, e)[-1]) for a, e in zip(chunk, embs, strict=True))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _check_methods(baselines: Sequence[Baseline]) -> None:
    names = [b.name for b in baselines]
    if DETECTOR_NAME in names or len(set(names)) != len(names):
        raise ValueError(f"baseline names must be unique and not {DETECTOR_NAME!r}, got {names}")
    for b in baselines:
        if getattr(b, "threshold_", None) is None:
            raise ValueError(f"baseline {b.name!r} is not fitted: fit it before dilution_curve")


def dilution_curve(
    detector: Detector,
    baselines: Sequence[Baseline],
    shares: Sequence[float] = DEFAULT_SHARES,
    n_accounts_per_share: int = 100,
    n_organic: int = 1000,
    n_events: int = 200,
    seed: int = 0,
    corpora_dir: str | Path | None = None,
    control: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Recall of distillwatch and each (fitted) baseline against the harvesting share.

    Simulates ``n_organic`` organic accounts once and ``n_accounts_per_share`` mixed
    accounts of ``n_events`` prompts per share (corpora from ``corpora_dir``, default the
    committed subset), embeds every prompt with ``detector.embed`` (so all methods see the
    same vectors, through the detector's embedding cache) and scores each account by the
    last value of its trace. Fleets are not applied: this is about single accounts.

    Two recalls per method and share, both over the mixed accounts of that share:

    * ``recall_at_threshold``: flagged at the method's own operating threshold
      (``detector.threshold``, ``baseline.threshold_``), as it would run in production;
    * ``recall_at_1pct_fpr``: flagged at the threshold that lets 1 % of THIS run's organic
      accounts through (``training.metrics.threshold_at_fpr``), which compares methods at
      equal false-positive rate. With fewer than 100 organic accounts that threshold lets
      none through.

    Returns plain JSON-ready data::

        {
          "shares": [0.01, 0.02, ...],            # requested harvesting shares
          "realised_shares": [0.01, 0.02, ...],   # mean measured share of the mixed accounts
          "events_per_account": [200.0, ...],     # mean events of the mixed accounts
          "n_mixed_per_share": 100,
          "n_organic": 1000,
          "n_events": 200,
          "seed": 0,
          "fpr": 0.01,
          "methods": {
            "distillwatch": {
              "threshold": 0.83,                  # own operating threshold
              "fpr_at_threshold": 0.004,          # share of this run's organic flagged by it
              "threshold_at_1pct_fpr": 0.91,      # the same-run 1 % FPR threshold
              "recall_at_threshold": [...],       # one per share, in order
              "recall_at_1pct_fpr": [...],
              "control_at_threshold": 0.02,       # flag rate of the control (or None)
              "control_at_1pct_fpr": 0.01
            },
            "rules": {...}, "logistic": {...}, "prada": {...}, "mmd_window": {...}
          }
        }

    Example::

        baselines = fit_baselines(default_baselines(), accounts, embeddings, labels)
        curve = dilution_curve(load_model(), baselines, n_accounts_per_share=50)
        curve["methods"]["distillwatch"]["recall_at_1pct_fpr"]
    """
    from tqdm.auto import tqdm

    shares = [float(s) for s in shares]
    if not shares:
        raise ValueError("dilution_curve needs at least one share")
    for name, value in (
        ("n_accounts_per_share", n_accounts_per_share),
        ("n_organic", n_organic),
        ("n_events", n_events),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"dilution_curve: {name} must be a positive integer, got {value!r}")
    for s in shares:  # fail before any simulation or scoring
        _check_share(s, n_events)
    _check_methods(baselines)
    corpora = Corpora.load(corpora_dir)
    steps = len(shares) + 1 + int(control)
    bar = tqdm(total=steps, desc="dilution", unit="run", disable=not progress)

    organic = _final_scores(
        detector,
        baselines,
        EventTable.from_records(organic_simulation(n_organic, seed, corpora).events),
    )
    bar.update(1)
    own = {DETECTOR_NAME: detector.threshold, **{b.name: b.threshold_ for b in baselines}}
    same_run = {name: threshold_at_fpr(scores, FPR) for name, scores in organic.items()}
    recall_own: dict[str, list[float]] = {name: [] for name in own}
    recall_fpr: dict[str, list[float]] = {name: [] for name in own}
    realised: list[float] = []
    lengths: list[float] = []
    control_rates: dict[str, tuple[float | None, float | None]] = dict.fromkeys(own, (None, None))
    control_sim: Simulation | None = None  # the mixed accounts of the smallest share
    for s in shares:
        sim = mixed_simulation(s, n_accounts_per_share, n_events, seed, corpora)
        if control and control_sim is None and s == min(shares):
            control_sim = sim
        per_account = realised_shares(sim)
        realised.append(float(np.mean(list(per_account.values()))))
        lengths.append(len(sim.events) / len(per_account))
        scores = _final_scores(detector, baselines, EventTable.from_records(sim.events))
        for name, sc in scores.items():
            recall_own[name].append(float(np.mean(sc >= own[name])))
            recall_fpr[name].append(float(np.mean(sc >= same_run[name])))
        bar.update(1)
    if control_sim is not None:
        scores = _final_scores(detector, baselines, _without_harvesting(control_sim))
        control_rates = {
            name: (float(np.mean(sc >= own[name])), float(np.mean(sc >= same_run[name])))
            for name, sc in scores.items()
        }
        bar.update(1)
    bar.close()
    return {
        "shares": shares,
        "realised_shares": realised,
        "events_per_account": lengths,
        "n_mixed_per_share": n_accounts_per_share,
        "n_organic": len(organic[DETECTOR_NAME]),
        "n_events": n_events,
        "seed": seed,
        "fpr": FPR,
        "methods": {
            name: {
                "threshold": float(own[name]),
                "fpr_at_threshold": float(np.mean(organic[name] >= own[name])),
                "threshold_at_1pct_fpr": float(same_run[name]),
                "recall_at_threshold": recall_own[name],
                "recall_at_1pct_fpr": recall_fpr[name],
                "control_at_threshold": control_rates[name][0],
                "control_at_1pct_fpr": control_rates[name][1],
            }
            for name in own
        },
    }


__all__ = [
    "DEFAULT_SHARES",
    "DETECTOR_NAME",
    "FPR",
    "dilution_curve",
    "mixed_simulation",
    "organic_simulation",
    "realised_shares",
]
