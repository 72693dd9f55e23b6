"""The held-out evaluation protocol behind the model card: unseen seed, kind and corpora.

What it knows: which simulations the card's held-out figures come from (sizes, seeds,
event caps, which corpus sources each leaves out), the three experiments run on them, where
their files go, and how the card's held-out sections are laid out.

- **(a) unseen seed** (``pool``): train on the ``train`` simulation and ``trainL`` (longer,
  full-volume streams), judge on ``test``, a simulation from another seed.
- **(b) leave one harvesting kind out** (``loko_<kind>``): train on a seeded random subset
  of ``train`` + ``trainL`` without any account of that kind, judge on ``test``; what matters is the
  held-out kind's recall at 1 % FPR (threshold set on ``test``'s own organic accounts) and at
  the model's stored threshold.
- **(c) unseen corpora** (``foldA``, ``foldB``): the probe sources are split into two
  disjoint folds; train on a simulation without fold A (``trainA``), judge on one whose
  probes come only from fold A (``testA``, which leaves fold B out); then the other way.

What it does not know: how a detector is trained (``training.train``), scored and
summarised (``training.evaluate``), or how traffic is simulated (``training.simulator``).

Files, under the output directory::

    sims/<sim>/        events.jsonl, labels.jsonl and spec.json (simulated once, reused
                       while the spec and the corpora directory stay the same)
    models/<name>/     the model directory each experiment trained
    results/<name>.json  one per experiment: its figures on the held-out simulation (under
                       that simulation's name, e.g. "test"), validation figures, what it
                       trained on, timings and the protocol
    card.md            the card's held-out sections, from every result in results/

Every simulation is cut to the first ``cap`` events of each account when read. Texts are
embedded by one embedder (with a persistent cache) shared by every experiment, so no text
is embedded twice.

Run::

    python -m training.heldout --corpora ../shared/corpora --out runs/heldout \
        [--only a b c | --only pool loko_slow_drip foldA] [--cache FILE] \
        [--network-seed N | --network-seeds N [N ...]] [--ensemble N] [--development]

``--development`` runs the same experiments on the development copies
(``Protocol.development``), where recipes are chosen without touching the held-out sets.

Example::

    from model.embedder import HashingEmbedder
    fake = HashingEmbedder()
    results = run_heldout("data_samples/corpora", "heldout", fake,
                          {"kind": "hashing", **fake.to_dict()},
                          protocol=Protocol.tiny(), only=["a"])
    print(render_card_sections(results))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from model.embedder import TextEncoder, offline_hub
from model.events import EventError, EventTable, read_events
from model.scorer import Detector
from training.corpora import Corpora, source_matches
from training.evaluate import _json_default, evaluate_rows, score_labelled
from training.labels import Label, read_labels
from training.simulator import DEFAULT_KIND_MIX, HARVEST_KINDS, MIX_KINDS, run_simulate
from training.train import TrainConfig, train

#: The two disjoint halves of the benchmark, long-context and long-document sources (c).
FOLD_A: tuple[str, ...] = (
    "gsm8k",
    "humaneval",
    "mbpp",
    "bbh",
    "lost_in_the_middle",
    "writingbench",
)
FOLD_B: tuple[str, ...] = (
    "math",
    "qwen25_math",
    "leetcode_contest",
    "cruxeval",
    "flan_cot",
    "garak_snowball",
    "longchat_longeval",
    "paul_graham_essays",
)
#: Folds of :meth:`Protocol.tiny`: sources present in the committed ``data_samples/corpora``
#: whose removal leaves every family the simulator needs non-empty.
TINY_FOLD_A: tuple[str, ...] = ("gsm8k", "humaneval", "bbh")
TINY_FOLD_B: tuple[str, ...] = ("math", "cruxeval", "flan_cot")

Group = Literal["a", "b", "c"]
GROUPS: dict[Group, str] = {
    "a": "unseen seed",
    "b": "leave one harvesting kind out",
    "c": "unseen corpora",
}
EXIT_BAD_INPUT = 2


def _check_int(owner: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}.{name} must be an integer >= {low}, got {value!r}")


def _check_sources(owner: str, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(s, str) and s for s in value):
        raise ValueError(f"{owner}.{name} must be a sequence of source names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class SimSpec:
    """One simulation of the protocol: ``run_simulate`` arguments and the per-account cap."""

    name: str
    accounts: int
    seed: int
    cap: int
    volume_scale: float = 1.0
    exclude_sources: tuple[str, ...] = ()
    #: ``(kind, weight)`` pairs replacing the simulator's kind mix (``SimConfig.kind_mix``);
    #: empty: the simulator's default mix.
    kind_mix: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"SimSpec.name must be an identifier-like name, got {self.name!r}")
        owner = f"SimSpec({self.name})"
        _check_int(owner, "accounts", self.accounts, 1)
        _check_int(owner, "seed", self.seed, 0)
        _check_int(owner, "cap", self.cap, 1)
        sources = _check_sources(owner, "exclude_sources", self.exclude_sources)
        object.__setattr__(self, "exclude_sources", sources)
        mix = dict(self.kind_mix.items() if isinstance(self.kind_mix, Mapping) else self.kind_mix)
        unknown = sorted(set(mix) - set(MIX_KINDS))
        bad = [k for k, w in mix.items() if not isinstance(w, int | float) or not w >= 0]
        if unknown or bad or (mix and not sum(mix.values()) > 0):
            raise ValueError(
                f"{owner}.kind_mix must give kinds of {', '.join(MIX_KINDS)} weights >= 0, "
                f"not all 0; got {self.kind_mix!r}"
            )
        object.__setattr__(self, "kind_mix", tuple((k, float(w)) for k, w in sorted(mix.items())))

    def to_dict(self) -> dict[str, Any]:
        d = {**dataclasses.asdict(self), "exclude_sources": list(self.exclude_sources)}
        if self.kind_mix:
            d["kind_mix"] = dict(self.kind_mix)
        else:
            del d["kind_mix"]  # the simulator's default: earlier runs' files stay valid
        return d

    def stamp(self, corpora_dir: Path) -> dict[str, Any]:
        """What decides the simulated files (the cap is applied when they are read)."""
        d = self.to_dict()
        del d["name"], d["cap"]
        return {**d, "corpora": str(corpora_dir.resolve())}


#: The kind mix of the (b) probe simulation: the default organic mix, and the four mixed
#: harvesting kinds at equal weight, so that each kind left out is judged on about four times
#: as many accounts as the ``test`` simulation holds of it.
PROBE_KIND_MIX: dict[str, float] = {
    **{k: w for k, w in DEFAULT_KIND_MIX.items() if k not in HARVEST_KINDS},
    **{k: 0.075 for k in HARVEST_KINDS if k in MIX_KINDS},
}


@dataclass(frozen=True)
class Experiment:
    """One training run and the held-out simulation it is judged on."""

    name: str
    group: Group
    train: SimSpec
    test: SimSpec
    config: TrainConfig
    #: More simulations trained on beside ``train`` (their accounts added to it).
    extra_train: tuple[SimSpec, ...] = ()
    #: More simulations judged on beside ``test``: the model is also judged on ``test`` and
    #: these together (their accounts added to it).
    extra_test: tuple[SimSpec, ...] = ()
    held_out_kind: str | None = None
    #: Train on a seeded random subset of this many accounts of ``train`` (None: all).
    subset_accounts: int | None = None
    subset_seed: int = 0
    held_out_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protocol:
    """Sizes and seeds of every simulation and training run; the defaults are the card's
    latest protocol (the model card says which recipe each of its held-out figures is of).

    Simulations: ``train`` / ``test``; ``trainA`` leaves ``fold_a`` out and ``testA`` leaves
    ``fold_b`` out (so its probes come from fold A only), ``trainB`` / ``testB`` the other
    way; ``fold_a_seeds`` and ``fold_b_seeds`` are (train, test). Every simulation has its
    own seed, so no training traffic reappears in a held-out set. Training simulations are
    drawn at ``train_volume_scale`` times the usual prompts per account.

    Example::

        Protocol(train_accounts=600, loko_accounts=400)   # a quicker, coarser run
    """

    train_accounts: int = 1200
    train_seed: int = 11
    train_cap: int = 120
    train_volume_scale: float = 0.5
    #: A second training simulation of longer streams (full volume, ``train_long_cap``
    #: events per account) added to ``train`` in (a), so the model has seen organic
    #: accounts of hundreds of events; 0 accounts leaves it out.
    train_long_accounts: int = 1200
    train_long_seed: int = 13
    train_long_cap: int = 300
    test_accounts: int = 500
    test_seed: int = 22
    test_cap: int = 150
    fold_a: tuple[str, ...] = FOLD_A
    fold_b: tuple[str, ...] = FOLD_B
    #: As many accounts as ``train``: with 600, the development copies of (c) scored 0.22
    #: (dev-A) and 0.09 (dev-B) lower at 1 % FPR (mean of training seeds 1 and 2),
    #: confounding "unseen corpora" with "less data".
    fold_train_accounts: int = 1200
    #: 900 over 300: with 300 (185 organic accounts) the 1 % FPR threshold was the second
    #: highest organic score, so two evaluation teams decided a fold's figure and two training
    #: seeds of one recipe differed by 0.4; 900 (about 550 organic) puts five under it.
    fold_test_accounts: int = 900
    fold_train_cap: int = 100
    fold_test_cap: int = 120
    fold_a_seeds: tuple[int, int] = (31, 32)
    fold_b_seeds: tuple[int, int] = (41, 42)
    loko_kinds: tuple[str, ...] = HARVEST_KINDS
    #: Accounts of train + trainL each (b) run draws before dropping its kind (all of them
    #: by default: a smaller training set would confound "unseen kind" with "less data").
    loko_accounts: int = 2400
    loko_subset_seed: int = 0
    loko_max_epochs: int = 15
    #: A second held-out simulation for (a) and (b) (``testK``, ``PROBE_KIND_MIX``, first
    #: ``test_cap`` events): ``test`` holds about 22 long-context sweeps and 31 slow-drip
    #: accounts, so one account moves a kind's recall by 0.03-0.05 and its 95 % interval is
    #: about ±0.2. The (a) and (b) models are judged on ``test`` and on ``test`` +
    #: ``testK``; 0 accounts leaves it out.
    loko_probe_accounts: int = 1600
    loko_probe_seed: int = 23
    #: Training of (a) and (c); (b) uses it with ``max_epochs=loko_max_epochs``. Seed 1
    #: was chosen over seed 0, and dilution augmentation 0.5 over none, on a separate
    #: development simulation (seed 55) and dilution run (seed 1); content dropout 0.6 over
    #: 0, 0.3 and 0.8 on development simulations (seed 55, and seed 33 with fold-A probes
    #: only); an ensemble of 3 over one network on the development copies of (c) (seeds 33
    #: and 43); the no-content view at 0.5 over 0 and 0.25 on those, seed 55 and its
    #: leave-one-kind-out copies; never on the held-out sets (``model/default/HISTORY.md``).
    #: Chaining augmentation (``chain_augment``, 40 per organic kind) was tried and is off:
    #: it cost the kinds left out of training in (b); chaining evaluation teams alone cost
    #: long-context sweeps left out on four seeds of the development copies
    #: (``model/default/HISTORY.md``, "Chaining augmentation").
    train_config: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            seed=1,
            max_epochs=25,
            patience=4,
            dilution_augment=0.5,
            content_dropout=0.6,
            ensemble=3,
            content_view_weight=0.5,
        )
    )

    def __post_init__(self) -> None:
        for name in (
            "train_accounts",
            "train_cap",
            "test_accounts",
            "test_cap",
            "fold_train_accounts",
            "fold_test_accounts",
            "fold_train_cap",
            "fold_test_cap",
            "loko_accounts",
            "loko_max_epochs",
        ):
            _check_int("Protocol", name, getattr(self, name), 1)
        _check_int("Protocol", "train_long_accounts", self.train_long_accounts, 0)
        _check_int("Protocol", "loko_probe_accounts", self.loko_probe_accounts, 0)
        _check_int("Protocol", "train_long_cap", self.train_long_cap, 1)
        for name in (
            "train_seed",
            "train_long_seed",
            "test_seed",
            "loko_subset_seed",
            "loko_probe_seed",
        ):
            _check_int("Protocol", name, getattr(self, name), 0)
        for name in ("fold_a_seeds", "fold_b_seeds"):
            seeds = getattr(self, name)
            if isinstance(seeds, str | bytes) or len(seeds) != 2:
                raise ValueError(f"Protocol.{name} must be a (train, test) pair, got {seeds!r}")
            for s in seeds:
                _check_int("Protocol", name, s, 0)
            object.__setattr__(self, name, tuple(seeds))
        scale = self.train_volume_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 100:
            raise ValueError(f"Protocol.train_volume_scale must be in (0, 100], got {scale!r}")
        for name in ("fold_a", "fold_b"):
            sources = _check_sources("Protocol", name, getattr(self, name))
            if not sources:
                raise ValueError(f"Protocol.{name} must name at least one corpus source")
            object.__setattr__(self, name, sources)
        shared = sorted(
            a
            for a in self.fold_a
            if any(source_matches(a, [b]) or source_matches(b, [a]) for b in self.fold_b)
        )
        if shared:
            raise ValueError(f"Protocol.fold_a and fold_b must be disjoint; both cover {shared}")
        kinds = tuple(self.loko_kinds)
        unknown = sorted(set(kinds) - set(HARVEST_KINDS))
        if unknown or len(set(kinds)) != len(kinds):
            raise ValueError(
                f"Protocol.loko_kinds must be distinct harvesting kinds ({', '.join(HARVEST_KINDS)}),"
                f" got {list(kinds)}"
            )
        object.__setattr__(self, "loko_kinds", kinds)
        if self.loko_accounts > self.train_accounts + self.train_long_accounts:
            raise ValueError(
                f"Protocol.loko_accounts ({self.loko_accounts}) must not exceed "
                f"train_accounts + train_long_accounts "
                f"({self.train_accounts + self.train_long_accounts})"
            )
        if not isinstance(self.train_config, TrainConfig):
            raise ValueError(
                f"Protocol.train_config must be a TrainConfig, got {self.train_config!r}"
            )
        by_seed: dict[int, list[str]] = {}
        for spec in self.sims().values():
            by_seed.setdefault(spec.seed, []).append(spec.name)
        clash = "; ".join(
            f"{' and '.join(n)} share seed {s}" for s, n in by_seed.items() if len(n) > 1
        )
        if clash:
            raise ValueError(
                "Protocol: every simulation needs its own seed, so that no held-out set replays "
                f"training traffic; {clash}"
            )

    @classmethod
    def tiny(cls, **overrides: Any) -> Protocol:
        """A protocol of a few dozen accounts on ``data_samples/corpora`` (tests, smoke runs)."""
        base: dict[str, Any] = {
            "train_accounts": 60,
            "train_cap": 30,
            "train_long_accounts": 20,
            "train_long_cap": 40,
            "test_accounts": 40,
            "test_cap": 30,
            "fold_a": TINY_FOLD_A,
            "fold_b": TINY_FOLD_B,
            "fold_train_accounts": 40,
            "fold_test_accounts": 30,
            "fold_train_cap": 20,
            "fold_test_cap": 20,
            "loko_accounts": 50,
            "loko_max_epochs": 2,
            "loko_probe_accounts": 30,
            "train_config": TrainConfig(seed=0, max_epochs=2, patience=1, n_topics=8),
        }
        return cls(**{**base, **overrides})

    @classmethod
    def development(cls, **overrides: Any) -> Protocol:
        """The development copies on which recipes are chosen, never the held-out sets.

        The card's protocol with every test simulation drawn from another seed: ``test``
        from seed 55 (600 accounts, first 150 events), ``testK`` from 56, ``testA`` from 33
        and ``testB`` from 43. The training simulations are the card's, so a recipe judged
        here trains on the same accounts as in the held-out runs, and nothing it is judged
        on reappears there.
        """
        base: dict[str, Any] = {
            "test_seed": 55,
            "loko_probe_seed": 56,
            "test_accounts": 600,
            "test_cap": 150,
            "fold_a_seeds": (31, 33),
            "fold_b_seeds": (41, 43),
        }
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sims(self) -> dict[str, SimSpec]:
        """The simulations by name (six, and ``trainL`` when ``train_long_accounts``)."""
        scale = self.train_volume_scale
        folds = {
            "A": (self.fold_a, self.fold_b, self.fold_a_seeds),
            "B": (self.fold_b, self.fold_a, self.fold_b_seeds),
        }
        out = {
            "train": SimSpec("train", self.train_accounts, self.train_seed, self.train_cap, scale),
            "test": SimSpec("test", self.test_accounts, self.test_seed, self.test_cap),
        }
        if self.train_long_accounts:
            out["trainL"] = SimSpec(
                "trainL", self.train_long_accounts, self.train_long_seed, self.train_long_cap
            )
        if self.loko_probe_accounts:
            out["testK"] = SimSpec(
                "testK",
                self.loko_probe_accounts,
                self.loko_probe_seed,
                self.test_cap,
                kind_mix=tuple(PROBE_KIND_MIX.items()),
            )
        for fold, (held_out, other, (train_seed, test_seed)) in folds.items():
            out[f"train{fold}"] = SimSpec(
                f"train{fold}",
                self.fold_train_accounts,
                train_seed,
                self.fold_train_cap,
                scale,
                exclude_sources=held_out,
            )
            out[f"test{fold}"] = SimSpec(
                f"test{fold}",
                self.fold_test_accounts,
                test_seed,
                self.fold_test_cap,
                exclude_sources=other,
            )
        return out

    def experiments(self) -> list[Experiment]:
        """Every experiment, in card order: ``pool``, ``loko_<kind>``…, ``foldA``, ``foldB``."""
        sims = self.sims()
        loko_config = dataclasses.replace(self.train_config, max_epochs=self.loko_max_epochs)
        extra = (sims["trainL"],) if "trainL" in sims else ()
        probe = (sims["testK"],) if "testK" in sims else ()
        out = [
            Experiment(
                "pool",
                "a",
                sims["train"],
                sims["test"],
                self.train_config,
                extra_train=extra,
                extra_test=probe,
            )
        ]
        out += [
            Experiment(
                f"loko_{kind}",
                "b",
                sims["train"],
                sims["test"],
                loko_config,
                extra_train=extra,
                extra_test=probe,
                held_out_kind=kind,
                subset_accounts=self.loko_accounts,
                subset_seed=self.loko_subset_seed,
            )
            for kind in self.loko_kinds
        ]
        for fold, sources in (("A", self.fold_a), ("B", self.fold_b)):
            out.append(
                Experiment(
                    f"fold{fold}",
                    "c",
                    sims[f"train{fold}"],
                    sims[f"test{fold}"],
                    self.train_config,
                    held_out_sources=sources,
                )
            )
        return out


def select_experiments(protocol: Protocol, only: Sequence[str] | None = None) -> list[Experiment]:
    """The experiments named by ``only`` (groups ``a``/``b``/``c`` or experiment names), in order."""
    experiments = protocol.experiments()
    if only is None:
        return experiments
    names = {e.name for e in experiments}
    unknown = [x for x in only if x not in GROUPS and x not in names]
    if unknown:
        raise ValueError(
            f"unknown experiment {unknown[0]!r}; expected a, b, c or one of {', '.join(sorted(names))}"
        )
    wanted = set(only)
    return [e for e in experiments if e.group in wanted or e.name in wanted]


# --------------------------------------------------------------------------- data


def cap_events(table: EventTable, cap: int) -> EventTable:
    """The first ``cap`` events of every account."""
    return EventTable.from_events(e for acc in table.accounts() for e in acc.head(cap).events())


def load_simulation(
    spec: SimSpec, corpora_dir: str | Path, sims_dir: str | Path, *, progress: bool = False
) -> tuple[EventTable, dict[str, Label]]:
    """The events (first ``spec.cap`` per account) and labels of one protocol simulation.

    Simulated into ``sims_dir/<name>`` on first use; later calls read the files back while
    ``spec.json`` there matches the spec and the corpora directory, and simulate again
    otherwise (the simulator is deterministic, so this only costs time).
    """
    corpora = Path(corpora_dir)
    where = Path(sims_dir) / spec.name
    stamp_path = where / "spec.json"
    stamp = spec.stamp(corpora)
    if not stamp_path.is_file() or json.loads(stamp_path.read_text()) != stamp:
        t0 = time.perf_counter()
        stamp_path.unlink(missing_ok=True)
        options: dict[str, Any] = {"kind_mix": dict(spec.kind_mix)} if spec.kind_mix else {}
        run_simulate(
            spec.accounts,
            spec.seed,
            where,
            corpora_dir=corpora,
            exclude_sources=spec.exclude_sources,
            progress=False,
            volume_scale=spec.volume_scale,
            **options,
        )
        stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")  # written last: complete
        _say(
            progress,
            f"simulated {spec.name} ({spec.accounts} accounts, seed {spec.seed}) "
            f"in {time.perf_counter() - t0:.0f}s",
        )
    table = cap_events(read_events(where / "events.jsonl"), spec.cap)
    labels = read_labels(where / "labels.jsonl")[0]
    return table, labels


def merge_simulations(
    parts: Sequence[tuple[EventTable, Mapping[str, Label]]],
) -> tuple[EventTable, dict[str, Label]]:
    """One table and label set from several simulations; their account ids must be distinct
    (ValueError otherwise: two accounts' events would be merged into one stream)."""
    seen: set[str] = set()
    for t, _ in parts:
        ids = set(t.account_ids)
        shared = seen & ids
        if shared:
            raise ValueError(
                f"simulations to merge share {len(shared)} account ids (e.g. {min(shared)!r})"
            )
        seen |= ids
    table = EventTable.from_events(
        e for t, _ in parts for acc in t.accounts() for e in acc.events()
    )
    return table, {a: lab for _, labs in parts for a, lab in labs.items()}


def joined_name(exp: Experiment) -> str:
    """The results key of ``exp``'s test simulation joined with its ``extra_test`` ones."""
    return _joined(exp.test.name, [spec.name for spec in exp.extra_test])


def _joined(test: str, extra: Sequence[str]) -> str:
    return "+".join([test, *extra])


def pool_training_data(
    corpora_dir: str | Path, sims_dir: str | Path, protocol: Protocol | None = None
) -> tuple[EventTable, dict[str, Label]]:
    """The accounts the ``pool`` experiment trains on (``train`` and, when the protocol has
    it, ``trainL``, each capped as the protocol says): the shipped model's training data."""
    sims = (protocol or Protocol()).sims()
    specs = [sims["train"], *([sims["trainL"]] if "trainL" in sims else [])]
    return merge_simulations([load_simulation(spec, corpora_dir, sims_dir) for spec in specs])


def training_subset(
    table: EventTable,
    labels: Mapping[str, Label],
    *,
    n_accounts: int | None = None,
    seed: int = 0,
    drop_kinds: Sequence[str] = (),
) -> tuple[EventTable, dict[str, Label]]:
    """The labelled accounts one run trains on: ``n_accounts`` of them, minus ``drop_kinds``.

    The sample is the first ``n_accounts`` of the sorted account ids after
    ``random.Random(seed).shuffle``, so every process draws the same one; accounts of a
    dropped kind are removed after sampling (a leave-one-kind-out run trains on fewer).
    """
    ids = sorted(labels)
    if n_accounts is not None:
        random.Random(seed).shuffle(ids)
        ids = ids[:n_accounts]
    dropped = set(drop_kinds)
    keep = {a for a in ids if (labels[a].kind or "") not in dropped}
    events = [e for acc in table.accounts() if acc.account_id in keep for e in acc.events()]
    return EventTable.from_events(events), {a: labels[a] for a in sorted(keep)}


def fold_source_counts(corpora_dir: str | Path, protocol: Protocol) -> dict[str, dict[str, int]]:
    """Records per fold source in the corpora; a fold that matches no record is an error.

    A source that matches nothing makes its fold test less than it claims, so it is
    returned with 0 for the caller to report.
    """
    sources = Corpora.load(corpora_dir).sources()
    out: dict[str, dict[str, int]] = {}
    for fold, patterns in (("A", protocol.fold_a), ("B", protocol.fold_b)):
        counts = {p: sum(n for s, n in sources.items() if source_matches(s, [p])) for p in patterns}
        if not any(counts.values()):
            raise ValueError(
                f"fold {fold} sources {list(patterns)} match no record in {corpora_dir}; "
                "nothing would be held out"
            )
        out[fold] = counts
    return out


# --------------------------------------------------------------------------- running


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[heldout] {message}", file=sys.stderr, flush=True)


class _Simulations:
    """Protocol simulations read once per run, their texts embedded (and so cached) on read."""

    def __init__(
        self, corpora_dir: Path, sims_dir: Path, embedder: TextEncoder, progress: bool
    ) -> None:
        self.corpora_dir = corpora_dir
        self.sims_dir = sims_dir
        self.embedder = embedder
        self.progress = progress
        self._loaded: dict[str, tuple[EventTable, dict[str, Label]]] = {}

    def get(self, spec: SimSpec) -> tuple[EventTable, dict[str, Label]]:
        if spec.name not in self._loaded:
            table, labels = load_simulation(
                spec, self.corpora_dir, self.sims_dir, progress=self.progress
            )
            texts = table.unique_prompts()
            t0 = time.perf_counter()
            self.embedder.encode(texts, progress=self.progress)
            _say(
                self.progress,
                f"{spec.name}: {table.n_accounts} accounts, {len(table)} events (first "
                f"{spec.cap} each), {len(texts)} distinct prompts embedded in "
                f"{time.perf_counter() - t0:.0f}s",
            )
            self._loaded[spec.name] = (table, labels)
        return self._loaded[spec.name]


def _run_experiment(
    experiment: Experiment,
    sims: _Simulations,
    embedder: TextEncoder,
    embed_config: dict[str, Any],
    out: Path,
    protocol: Protocol,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one experiment's model, judge it on its held-out simulation, write its JSON."""
    exp = experiment
    table, labels = sims.get(exp.train)
    if exp.extra_train:
        table, labels = merge_simulations(
            [(table, labels), *(sims.get(spec) for spec in exp.extra_train)]
        )
    drop = [exp.held_out_kind] if exp.held_out_kind else []
    table, labels = training_subset(
        table, labels, n_accounts=exp.subset_accounts, seed=exp.subset_seed, drop_kinds=drop
    )
    _say(progress, f"{exp.name}: training on {len(labels)} accounts of {exp.train.name}")
    t0 = time.perf_counter()
    detector, report = train(
        table, labels, embedder, embed_config, exp.config, out / "models" / exp.name, progress=False
    )
    train_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "name": exp.name,
        "experiment": exp.group,
        "description": GROUPS[exp.group],
        "drop": drop,
        "held_out_kind": exp.held_out_kind,
        "held_out_sources": list(exp.held_out_sources),
        "subset_accounts": exp.subset_accounts,
        "train_sim": exp.train.to_dict(),
        "extra_train_sims": [spec.to_dict() for spec in exp.extra_train],
        "train_s": train_s,
        "training": report["training"],
        "validation": report["validation"],
        **_judge(detector, exp, sims),
        "protocol": protocol.to_dict(),
    }
    path = _write_result(out, result)
    _say(progress, f"{summary_line(result)} (train {train_s:.0f}s) -> {path}")
    return result


def _judge(detector: Detector, exp: Experiment, sims: _Simulations) -> dict[str, Any]:
    """``exp``'s figures on its test simulation and, when it has ``extra_test`` ones, on
    them joined with it (scored once: the test figures are a subset of the rows)."""
    test_table, test_labels = sims.get(exp.test)
    t0 = time.perf_counter()
    table, labels = test_table, test_labels
    if exp.extra_test:
        table, labels = merge_simulations(
            [(test_table, test_labels), *(sims.get(spec) for spec in exp.extra_test)]
        )
    rows = score_labelled(detector, table, labels)
    out: dict[str, Any] = {
        exp.test.name: evaluate_rows(rows.subset(test_labels), detector.threshold),
        "test_sim": exp.test.to_dict(),
        "extra_test_sims": [spec.to_dict() for spec in exp.extra_test],
    }
    if exp.extra_test:
        out[joined_name(exp)] = evaluate_rows(rows, detector.threshold)
    out["eval_s"] = time.perf_counter() - t0
    return out


def _write_result(out: Path, result: Mapping[str, Any]) -> Path:
    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    tmp.replace(path)  # a run stopped halfway leaves the previous result whole
    return path


def _rejudge_experiment(
    experiment: Experiment, sims: _Simulations, out: Path, progress: bool = False
) -> dict[str, Any]:
    """Judge the model an earlier run trained for ``experiment`` (``out/models/<name>``) on
    the protocol's test simulations again, without training; its result file is updated
    (training figures kept, test figures replaced)."""
    from model.model_dir import load_model

    exp = experiment
    path = out / "results" / f"{exp.name}.json"
    model_dir = out / "models" / exp.name
    if not path.is_file() or not (model_dir / "metrics.json").is_file():
        raise FileNotFoundError(
            f"{exp.name}: no earlier run to judge again (need {path} and {model_dir}); "
            "run it without --judge-only first"
        )
    result = json.loads(path.read_text())
    if result.get("test_sim") not in (None, exp.test.to_dict()):
        raise ValueError(
            f"{exp.name}: the earlier run was judged on {result['test_sim']}, this protocol's "
            f"test simulation is {exp.test.to_dict()}; judging again would mix protocols"
        )
    for key in ((result.get("test_sim") or {}).get("name", "test"), _joined_key(result)):
        if key is not None:
            result.pop(key, None)
    detector = load_model(model_dir, fleets=False)
    result.update(_judge(detector, exp, sims))
    result["judged_again"] = datetime.now(UTC).isoformat(timespec="seconds")
    written = _write_result(out, result)
    _say(progress, f"{summary_line(result)} (judged again) -> {written}")
    return result


def _joined_key(result: Mapping[str, Any]) -> str | None:
    """The results key of a result's joined test simulations (None without extra ones)."""
    extra = [spec["name"] for spec in result.get("extra_test_sims") or []]
    return _joined((result.get("test_sim") or {}).get("name", "test"), extra) if extra else None


def run_heldout(
    corpora_dir: str | Path,
    out: str | Path,
    embedder: TextEncoder,
    embed_config: dict[str, Any],
    *,
    protocol: Protocol | None = None,
    only: Sequence[str] | None = None,
    progress: bool = True,
    sims_dir: str | Path | None = None,
    judge_only: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run the selected experiments; returns their results by name and writes ``card.md``.

    ``judge_only``: train nothing; judge the models an earlier run left in ``out/models``
    on this protocol's test simulations (with their ``extra_test`` ones) and update their
    results (for instance after the protocol gained a test simulation).

    ``embedder`` should carry a persistent cache: every simulation is embedded through it
    once and every later use hits the cache. ``card.md`` is rendered from every result in
    ``out/results``, earlier runs' included, so experiments may be run one at a time.
    The simulations go to ``sims_dir`` (default ``out/sims``), so runs that differ only in
    training (such as :func:`run_seeds`) can share them.
    """
    protocol = protocol or Protocol()
    experiments = select_experiments(protocol, only)
    corpora = Path(corpora_dir)
    if not corpora.is_dir():
        raise FileNotFoundError(f"corpora directory not found: {corpora}")
    out = Path(out)
    if any(e.group == "c" for e in experiments):
        for fold, counts in fold_source_counts(corpora, protocol).items():
            missing = [s for s, n in counts.items() if n == 0]
            if missing:
                _say(progress, f"warning: fold {fold} sources {missing} are not in {corpora}")
    sims = _Simulations(corpora, Path(sims_dir) if sims_dir else out / "sims", embedder, progress)
    results = {}
    for i, exp in enumerate(experiments, start=1):
        _say(progress, f"experiment {i}/{len(experiments)}: {exp.name} ({GROUPS[exp.group]})")
        if judge_only:
            results[exp.name] = _rejudge_experiment(exp, sims, out, progress)
            continue
        results[exp.name] = _run_experiment(
            exp, sims, embedder, embed_config, out, protocol, progress
        )
    card = out / "card.md"
    card.write_text(render_card_sections(load_results(out)) + "\n")
    _say(progress, f"wrote {card}")
    return results


def load_results(out: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``out/results/<name>.json`` by name."""
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((Path(out) / "results").glob("*.json"))
    }


SEED_DIR_PREFIX = "seed-"


def seed_protocol(protocol: Protocol, seed: int) -> Protocol:
    """``protocol`` with its networks trained from base seed ``seed`` (simulations unchanged)."""
    return dataclasses.replace(
        protocol, train_config=dataclasses.replace(protocol.train_config, seed=seed)
    )


def run_seeds(
    corpora_dir: str | Path,
    out: str | Path,
    embedder: TextEncoder,
    embed_config: dict[str, Any],
    seeds: Sequence[int],
    *,
    protocol: Protocol | None = None,
    only: Sequence[str] | None = None,
    progress: bool = True,
    judge_only: bool = False,
) -> dict[int, dict[str, dict[str, Any]]]:
    """The selected experiments once per training seed; writes ``spread.md``.
    (``judge_only``: as in :func:`run_heldout`, for each seed's directory.)

    Seed ``s`` trains into ``out/seed-<s>/`` (models, results, card.md, as :func:`run_heldout`
    writes them); every seed reads the same simulations from ``out/sims``, so only the
    networks' initialisation, batch order and dropout differ. ``spread.md`` tabulates every
    seed directory under ``out`` (earlier runs' included): each figure per seed, its mean
    and its range.
    """
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"run_seeds: seeds must be distinct, got {list(seeds)}")
    for s in seeds:
        _check_int("run_seeds", "seed", s, 0)
    protocol = protocol or Protocol()
    out = Path(out)
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for s in seeds:
        _say(progress, f"{'judging' if judge_only else 'training'} seed {s}")
        results[s] = run_heldout(
            corpora_dir,
            out / f"{SEED_DIR_PREFIX}{s}",
            embedder,
            embed_config,
            protocol=seed_protocol(protocol, s),
            only=only,
            progress=progress,
            sims_dir=out / "sims",
            judge_only=judge_only,
        )
    spread = out / "spread.md"
    spread.write_text(render_seed_spread(load_seed_results(out)) + "\n")
    _say(progress, f"wrote {spread}")
    return results


def load_seed_results(out: str | Path) -> dict[int, dict[str, dict[str, Any]]]:
    """Results of every ``out/seed-<s>/`` directory by seed (ascending)."""
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for d in Path(out).glob(f"{SEED_DIR_PREFIX}*"):
        tail = d.name[len(SEED_DIR_PREFIX) :]
        if d.is_dir() and tail.isdigit():
            results = load_results(d)
            if results:
                found[int(tail)] = results
    return dict(sorted(found.items()))


def _spread_rows(result: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """The figures of one result that the seed spread compares, as (label, value)."""
    m = heldout_metrics(result)
    kind = result.get("held_out_kind")
    if kind:
        pk = m["per_kind"].get(kind, {})
        out = [
            (f"{kind} recall at 1 % FPR", pk.get("recall_at_1pct_fpr")),
            (f"{kind} recall at threshold", pk.get("recall_at_threshold")),
        ]
        joined, key = joined_metrics(result), _joined_key(result)
        if joined:
            jk = joined["per_kind"].get(kind, {})
            out += [
                (f"{kind} recall at 1 % FPR, {key}", jk.get("recall_at_1pct_fpr")),
                (f"{kind} recall at threshold, {key}", jk.get("recall_at_threshold")),
            ]
        return out
    rows: list[tuple[str, float | None]] = [
        ("AUROC", m["auroc"]),
        ("recall at 1 % FPR", m["recall_at_1pct_fpr"]),
        ("recall at 0.1 % FPR", m["recall_at_0.1pct_fpr"]),
        ("recall at threshold", m["recall_at_threshold"]),
        ("FPR at threshold", m["fpr_at_threshold"]),
    ]
    for k, v in sorted(m["per_kind"].items()):
        if v["label"]:
            rows.append((f"{k} recall at 1 % FPR", v.get("recall_at_1pct_fpr")))
        else:
            rows.append((f"{k} FPR at threshold", v.get("fpr_at_threshold")))
    return rows


def render_seed_spread(by_seed: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> str:
    """Markdown: every experiment's figures per training seed, with their mean and range.

    An experiment appears when at least one seed ran it; a seed that did not reads "–" and
    is left out of the mean. Experiments come in card order (``pool``, ``loko_<kind>``,
    ``foldA``, ``foldB``), then any others by name.
    """
    seeds = list(by_seed)
    order = [e.name for e in Protocol().experiments()]
    names = {n for results in by_seed.values() for n in results}
    ranked = sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
    head = " | ".join(f"seed {s}" for s in seeds)
    out = [
        "Each figure from models trained from different base seeds on the same simulations "
        "(`python -m training.heldout ... --network-seeds ...`).\n",
        f"| experiment | figure | {head} | mean | range |",
        "|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for name in ranked:
        table: dict[str, dict[int, float | None]] = {}
        for s in seeds:
            result = by_seed[s].get(name)
            for label, value in _spread_rows(result) if result else []:
                table.setdefault(label, {})[s] = value
        for label, values in table.items():
            got = [v for v in values.values() if v is not None]
            cells = " | ".join(_fmt(values.get(s)) for s in seeds)
            mean = _fmt(sum(got) / len(got)) if got else "–"
            span = f"{min(got):.3f}-{max(got):.3f}" if got else "–"
            out.append(f"| {name} | {label} | {cells} | {mean} | {span} |")
    return "\n".join(out)


def heldout_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """An experiment's figures on its held-out simulation."""
    name = (result.get("test_sim") or {}).get("name")
    if name is None:  # results written before test_sim was recorded: the default protocol's
        defaults = {e.name: e.test.name for e in Protocol().experiments()}
        name = defaults.get(result.get("name", ""), "test")
    metrics: dict[str, Any] = result[name]
    return metrics


def joined_metrics(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """An experiment's figures on its held-out simulation joined with its ``extra_test``
    ones (None when it has none)."""
    key = _joined_key(result)
    metrics: dict[str, Any] | None = result.get(key) if key else None
    return metrics


def summary_line(result: Mapping[str, Any]) -> str:
    m = heldout_metrics(result)
    line = (
        f"{result['name']}: auroc {_fmt(m['auroc'])} recall@1%FPR {_fmt(m['recall_at_1pct_fpr'])}"
        f" recall@thr {_fmt(m['recall_at_threshold'])} fpr@thr {_fmt(m['fpr_at_threshold'])}"
    )
    joined, kind = joined_metrics(result), result.get("held_out_kind")
    if joined and kind and kind in joined["per_kind"]:
        pk = joined["per_kind"][kind]
        line += (
            f"; with {'+'.join(s['name'] for s in result['extra_test_sims'])}: {kind} "
            f"recall@1%FPR {_fmt(pk.get('recall_at_1pct_fpr'))} "
            f"({_interval(pk) or 'nan-nan'}, {pk['n']} accounts)"
        )
    return line


# --------------------------------------------------------------------------- model card


def _fmt(x: Any) -> str:
    return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def _interval(per_kind: Mapping[str, Any]) -> str:
    """A kind's 95 % interval of recall at 1 % FPR as "0.66-0.84" ("" when it has none)."""
    ci = per_kind.get("recall_at_1pct_fpr_ci95")
    return f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else ""


def _allowed(n_organic: int, fpr: float) -> str:
    k = math.floor(fpr * n_organic)
    return "none" if k == 0 else f"{k} of them"


def _test_seeds(
    protocol: Mapping[str, Any], like: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The seeds of a protocol's test simulations (what tells the held-out protocol from the
    development copies and from any other). With ``like``, only the keys that protocol
    records: results of earlier versions know fewer test simulations."""
    known = like if like is not None else protocol
    keys = [
        k for k in ("test_seed", "fold_a_seeds", "fold_b_seeds", "loko_probe_seed") if k in known
    ]
    return {k: protocol[k][1] if k.endswith("_seeds") else protocol[k] for k in keys}


def render_card_sections(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The model card's "Held-out evaluation" markdown from results by experiment name.

    A section appears when one of its experiments has a result; a leave-one-kind-out or
    fold row without one reads "not run". Sizes and fold sources in the text come from the
    protocol the results record (results that record none, such as those of the scripts
    this module replaced, are read as the default protocol's).
    """
    found = [r["protocol"] for r in results.values() if r.get("protocol")]
    protocol: Mapping[str, Any] = found[0] if found else Protocol().to_dict()
    seeds = _test_seeds(protocol)
    development = seeds == _test_seeds(Protocol.development().to_dict(), like=protocol)
    custom = not development and seeds != _test_seeds(Protocol().to_dict(), like=protocol)
    out = [
        "## Development copies (not the held-out evaluation)\n"
        if development
        else "## Evaluation on other test seeds (not the card's held-out sets)\n"
        if custom
        else "## Held-out evaluation\n"
    ]
    out.append(
        "All figures below come from accounts the model never saw, built from a simulation seed "
        'that was not used for training, thresholds for "recall at x % FPR" set on that set\'s '
        'own organic accounts, "at threshold" using the model\'s stored threshold. Reproduce '
        "them with `python -m training.heldout --corpora ../shared/corpora --out runs/heldout"
        + (" --development" if development else "")
        + "` (`training/heldout.py`).\n"
    )
    if development:
        out.append(
            "These are the development copies (`Protocol.development`: test simulations from "
            "seeds the held-out sets do not use), for choosing a recipe; they are not the "
            "model card's held-out figures.\n"
        )
    pool = results.get("pool")
    if pool:
        m = heldout_metrics(pool)
        sim = pool.get("test_sim") or Protocol().sims()["test"].to_dict()
        n_org = m["n_organic"]
        out.append("### (a) Unseen seed\n")
        out.append(
            f"Simulation `--accounts {sim['accounts']} --seed {sim['seed']}` (first {sim['cap']} "
            f"events per account; {m['n_accounts']} accounts, {m['n_harvesting']} harvesting, "
            f"{n_org} organic). With {n_org} organic accounts, 1 % FPR allows "
            f"{_allowed(n_org, 0.01)} and 0.1 % allows {_allowed(n_org, 0.001)}, so those two "
            "figures are coarse.\n"
        )
        out.append("| metric | value |\n|---|---|")
        for k in (
            "auroc",
            "pr_auc",
            "recall_at_1pct_fpr",
            "recall_at_0.1pct_fpr",
            "recall_at_threshold",
            "fpr_at_threshold",
        ):
            out.append(f"| {k} | {_fmt(m[k])} |")
        ff = m.get("first_flag_event") or {}
        out.append(
            f"| first_flag_event median / p90 | {_fmt(ff.get('median'))} / {_fmt(ff.get('p90'))} |\n"
        )
        out.append("| kind | n | recall at 1 % FPR / FPR at threshold |\n|---|---|---|")
        for k, v in sorted(m["per_kind"].items()):
            val = v.get("recall_at_1pct_fpr") if v["label"] else v.get("fpr_at_threshold")
            out.append(f"| {k} | {v['n']} | {'recall ' if v['label'] else 'FPR '}{_fmt(val)} |")
        out.append("")
        jm = joined_metrics(pool)
        if jm:
            extra = pool["extra_test_sims"]
            n_org_j = jm["n_organic"]
            out.append(
                f"The same model on this set together with "
                f"`{' + '.join(spec['name'] for spec in extra)}` "
                f"({sum(spec['accounts'] for spec in extra)} more accounts from a seed of its "
                f"own, each harvesting kind about four times as often): {jm['n_accounts']} "
                f"accounts, {n_org_j} organic (1 % FPR allows {_allowed(n_org_j, 0.01)}); AUROC "
                f"{_fmt(jm['auroc'])}, recall at 1 % FPR {_fmt(jm['recall_at_1pct_fpr'])}, at "
                f"0.1 % FPR {_fmt(jm['recall_at_0.1pct_fpr'])}, at threshold "
                f"{_fmt(jm['recall_at_threshold'])} (FPR {_fmt(jm['fpr_at_threshold'])}). In "
                "brackets a bootstrap 95 % interval.\n"
            )
            out.append(
                "| kind | n | recall at 1 % FPR (95 % interval) / at threshold, or FPR at "
                "threshold |\n|---|---|---|"
            )
            for k, v in sorted(jm["per_kind"].items()):
                if v["label"]:
                    band = f" ({iv})" if (iv := _interval(v)) else ""
                    cell = (
                        f"recall {_fmt(v.get('recall_at_1pct_fpr'))}{band} / "
                        f"{_fmt(v.get('recall_at_threshold'))}"
                    )
                else:
                    cell = f"FPR {_fmt(v.get('fpr_at_threshold'))}"
                out.append(f"| {k} | {v['n']} | {cell} |")
            out.append("")
    loko = [(k, results.get(f"loko_{k}")) for k in HARVEST_KINDS]
    done = [r for _, r in loko if r]
    if done:
        own = done[0].get("protocol") or protocol  # the protocol these runs recorded
        n_sub, epochs = own["loko_accounts"], own["loko_max_epochs"]
        out.append("### (b) Leave one harvesting kind out\n")
        out.append(
            f"Each row: a model trained on {n_sub} accounts of the training simulations with "
            f"that kind removed ({epochs} epochs at most), tested on the unseen-seed set above. "
            "The held-out kind's recall is the one that matters; the other columns show what "
            "losing that kind costs overall.\n"
        )
        out.append(
            "| held-out kind | its recall at 1 % FPR | its recall at threshold | AUROC (all) "
            "| recall at 1 % FPR (all) | FPR at threshold |\n|---|---|---|---|---|---|"
        )
        for k, r in loko:
            if not r:
                out.append(f"| {k} | not run | | | | |")
                continue
            t = heldout_metrics(r)
            pk = t["per_kind"].get(k, {})
            out.append(
                f"| {k} | {_fmt(pk.get('recall_at_1pct_fpr'))} | "
                f"{_fmt(pk.get('recall_at_threshold'))} | {_fmt(t['auroc'])} | "
                f"{_fmt(t['recall_at_1pct_fpr'])} | {_fmt(t['fpr_at_threshold'])} |"
            )
        out.append("")
        joined = [(k, r, jm) for k, r in loko if r and (jm := joined_metrics(r))]
        if joined:
            names = joined[0][1]["extra_test_sims"]
            n_extra = sum(spec["accounts"] for spec in names)
            extra_names = " + ".join(spec["name"] for spec in names)
            out.append(
                f"The same models judged on the unseen-seed set together with `{extra_names}` "
                f"({n_extra} more accounts, each harvesting kind about four times as often, "
                "from a seed of its own), so that a kind's recall rests on about a hundred "
                "accounts; in brackets a bootstrap 95 % interval (accounts and the organic "
                "tail that sets the threshold both resampled).\n"
            )
            out.append(
                "| held-out kind | its accounts | its recall at 1 % FPR (95 % interval) | its "
                "recall at threshold | AUROC (all) | FPR at threshold |\n|---|---|---|---|---|---|"
            )
            for k, _, jm in joined:
                pk = jm["per_kind"].get(k, {})
                band = f" ({iv})" if (iv := _interval(pk)) else ""
                out.append(
                    f"| {k} | {pk.get('n', 0)} | {_fmt(pk.get('recall_at_1pct_fpr'))}{band} | "
                    f"{_fmt(pk.get('recall_at_threshold'))} | {_fmt(jm['auroc'])} | "
                    f"{_fmt(jm['fpr_at_threshold'])} |"
                )
            out.append("")
    folds = [(n, results.get(n)) for n in ("foldA", "foldB")]
    if any(r for _, r in folds):
        fold_a, fold_b = protocol["fold_a"], protocol["fold_b"]
        out.append("### (c) Unseen corpora\n")
        out.append(
            "Probe sources split into two disjoint halves. "
            f"A = {', '.join(fold_a)}; B = {', '.join(fold_b)}. Model trained without A, "
            "tested on a simulation whose probes come only from A (and vice versa); organic "
            "chat sources are shared.\n"
        )
        out.append(
            "| held-out sources | AUROC | recall at 1 % FPR | recall at threshold | FPR at "
            "threshold | per harvesting kind, recall at 1 % FPR |\n|---|---|---|---|---|---|"
        )
        for n, r in folds:
            if not r:
                out.append(f"| {n[-1]} | not run | | | | |")
                continue
            t = heldout_metrics(r)
            pk = ", ".join(
                f"{k} {_fmt(v.get('recall_at_1pct_fpr'))}"
                for k, v in sorted(t["per_kind"].items())
                if v["label"]
            )
            out.append(
                f"| {n[-1]} | {_fmt(t['auroc'])} | {_fmt(t['recall_at_1pct_fpr'])} | "
                f"{_fmt(t['recall_at_threshold'])} | {_fmt(t['fpr_at_threshold'])} | {pk} |"
            )
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.heldout",
        description="Run the model card's held-out evaluations (unseen seed, unseen harvesting "
        "kind, unseen corpora) with MiniLM embeddings and write results/*.json and card.md.",
    )
    parser.add_argument("--corpora", type=Path, required=True, help="prompt corpora directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="experiments to run: a (pool), b (loko_<kind>), c (foldA, foldB) or single "
        "names such as loko_slow_drip (default: all)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="embedding cache file (default: $DISTILLWATCH_CACHE_DIR or ~/.cache/distillwatch)",
    )
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--network-seed",
        type=int,
        default=None,
        metavar="N",
        help="base seed of the networks' training (TrainConfig.seed) in every experiment, "
        "instead of the protocol's; the simulations stay the same",
    )
    seeds.add_argument(
        "--network-seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run the experiments once per base seed, into OUT/seed-N/ with shared "
        "simulations, and write OUT/spread.md: each figure per seed, its mean and range",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=None,
        metavar="N",
        help="networks per trained model, instead of the protocol's (1: one network)",
    )
    parser.add_argument(
        "--content-view-weight",
        type=float,
        default=None,
        metavar="W",
        help="weight of the no-content view in every trained model (TrainConfig."
        "content_view_weight), instead of the protocol's (0: content alone)",
    )
    parser.add_argument(
        "--chain-augment",
        type=int,
        default=None,
        metavar="N",
        help="chained organic training accounts per organic kind in every trained model "
        "(TrainConfig.chain_augment), instead of the protocol's (0: none)",
    )
    parser.add_argument(
        "--chain-kinds",
        nargs="+",
        default=None,
        metavar="KIND",
        help="chain only organic accounts of these kinds (TrainConfig.chain_kinds), instead "
        "of the protocol's (empty: every organic kind)",
    )
    parser.add_argument(
        "--length-dropout",
        type=float,
        default=None,
        metavar="P",
        help="probability that a training stream's length features are zeroed for a step "
        "(TrainConfig.length_dropout), instead of the protocol's (0: off)",
    )
    parser.add_argument(
        "--splice-cover-client",
        action="store_const",
        const=True,
        default=None,
        help="spliced training accounts' inserted prompts take the cover account's system "
        "prompt and model (TrainConfig.splice_cover_client), instead of the protocol's (off)",
    )
    parser.add_argument(
        "--development",
        action="store_true",
        help="judge on the development copies (Protocol.development: test simulations of "
        "seeds 55, 33 and 43, the same training simulations), for choosing a recipe without "
        "touching the held-out sets",
    )
    parser.add_argument(
        "--judge-only",
        action="store_true",
        help="train nothing: judge the models an earlier run left in OUT/models (or "
        "OUT/seed-N/models) on the protocol's test simulations again and update their "
        "results, e.g. on the (b) probe simulation testK that earlier runs lacked",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The default protocol (or `--development` copies) with the command line's training overrides."""
    protocol = Protocol.development() if args.development else Protocol()
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("seed", args.network_seed),
            ("ensemble", args.ensemble),
            ("content_view_weight", args.content_view_weight),
            ("chain_augment", args.chain_augment),
            ("chain_kinds", None if args.chain_kinds is None else tuple(args.chain_kinds)),
            ("length_dropout", args.length_dropout),
            ("splice_cover_client", args.splice_cover_client),
        )
        if value is not None
    }
    train_config = dataclasses.replace(protocol.train_config, **changes)
    return dataclasses.replace(protocol, train_config=train_config)


def main(argv: Sequence[str] | None = None) -> int:
    offline_hub()
    args = build_parser().parse_args(argv)
    from model.embedder import EmbedConfig
    from model.model_dir import build_embedder

    embed_config: dict[str, Any] = {"kind": "sentence-transformers", **EmbedConfig().to_dict()}
    try:
        protocol = protocol_from_args(args)
        embedder = build_embedder(embed_config, cache_path=args.cache)
        if args.network_seeds is not None:
            by_seed = run_seeds(
                args.corpora,
                args.out,
                embedder,
                embed_config,
                args.network_seeds,
                protocol=protocol,
                only=args.only,
                progress=not args.quiet,
                judge_only=args.judge_only,
            )
            results = {f"{n} (seed {s})": r for s, rs in by_seed.items() for n, r in rs.items()}
        else:
            results = run_heldout(
                args.corpora,
                args.out,
                embedder,
                embed_config,
                protocol=protocol,
                only=args.only,
                progress=not args.quiet,
                judge_only=args.judge_only,
            )
    except (EventError, ValueError, FileNotFoundError) as exc:
        print(f"heldout: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for label, result in results.items():
        line = summary_line(result)
        print(line.replace(result["name"], label, 1))
    if args.network_seeds is not None:
        print(f"wrote {args.out}/seed-*/ and {args.out / 'spread.md'}")
    else:
        print(f"wrote {args.out / 'results'} and {args.out / 'card.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "FOLD_A",
    "FOLD_B",
    "TINY_FOLD_A",
    "TINY_FOLD_B",
    "Experiment",
    "Protocol",
    "SimSpec",
    "build_parser",
    "cap_events",
    "fold_source_counts",
    "heldout_metrics",
    "load_results",
    "load_seed_results",
    "load_simulation",
    "main",
    "merge_simulations",
    "pool_training_data",
    "protocol_from_args",
    "render_card_sections",
    "render_seed_spread",
    "run_heldout",
    "run_seeds",
    "seed_protocol",
    "select_experiments",
    "summary_line",
    "training_subset",
]
