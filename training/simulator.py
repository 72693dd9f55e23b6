"""Simulated API traffic: organic accounts and capability-harvesting (distillation) accounts.

What it knows: the account kinds and what each sends (prompts drawn from the corpora and
wrapped with ``phrasing``), how each is timed (human sessions on a diurnal cycle in the
account's own time zone with think time between turns; scripts at steady or bursty rates,
nightly cron jobs, one-off benchmark bursts), which client fields each sets (conversation
ids, model, max_tokens, IP, user agent, system prompt), how operators reuse wrappers,
addresses and user agents across the accounts of one campaign, and how to write the result
as contract ``events.jsonl`` and ``labels.jsonl``.

Organic kinds (label 0): ``organic_casual``, ``organic_developer``, ``organic_student``,
``organic_writer``, ``organic_power_user``, ``organic_batch_pipeline`` (one fixed template
over many documents at a script rate), ``organic_eval_team`` (one public benchmark, once,
in a burst), ``organic_viral`` (many unrelated people asking the same viral question).
Harvesting kinds (label 1): ``cot_harvest``, ``capability_sweep``, ``longctx_sweep``,
``slow_drip`` (organic-looking, 5-10 % harvesting prompts), ``hydra_fleet`` (one campaign
spread over 20-200 small accounts).

What it does not know: anything about the detector's features or model; it must not be
tuned to them. The same seed, config and corpora give byte-identical files.

Example::

    sim = simulate(SimConfig(n_accounts=300, seed=7), Corpora.load())
    write_simulation(sim, Path("out"))
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from tqdm.auto import tqdm

from training import phrasing as ph
from training.corpora import Corpora, Record
from training.labels import prompt_digest

# --------------------------------------------------------------------------- kinds and config

OrganicKind = Literal[
    "organic_casual",
    "organic_developer",
    "organic_student",
    "organic_writer",
    "organic_power_user",
    "organic_batch_pipeline",
    "organic_eval_team",
    "organic_viral",
]
HarvestKind = Literal[
    "cot_harvest", "capability_sweep", "longctx_sweep", "slow_drip", "hydra_fleet"
]

ORGANIC_KINDS: tuple[str, ...] = (
    "organic_casual",
    "organic_developer",
    "organic_student",
    "organic_writer",
    "organic_power_user",
    "organic_batch_pipeline",
    "organic_eval_team",
    "organic_viral",
)
HARVEST_KINDS: tuple[str, ...] = (
    "cot_harvest",
    "capability_sweep",
    "longctx_sweep",
    "slow_drip",
    "hydra_fleet",
)
KINDS: tuple[str, ...] = ORGANIC_KINDS + HARVEST_KINDS
#: Kinds placed by ``kind_mix``; hydra fleet accounts are placed by ``hydra_share``.
MIX_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != "hydra_fleet")

#: Share of the non-fleet accounts per kind (weights; normalized).
DEFAULT_KIND_MIX: dict[str, float] = {
    "organic_casual": 0.22,
    "organic_developer": 0.13,
    "organic_student": 0.10,
    "organic_writer": 0.06,
    "organic_power_user": 0.06,
    "organic_batch_pipeline": 0.04,
    "organic_eval_team": 0.04,
    "organic_viral": 0.05,
    "cot_harvest": 0.10,
    "capability_sweep": 0.08,
    "longctx_sweep": 0.05,
    "slow_drip": 0.07,
}

#: Prompts per account (inclusive range) before ``volume_scale``. An eval team sends a
#: whole benchmark when it has fewer rows than the upper bound, else a slice in range.
DEFAULT_PROMPTS: dict[str, tuple[int, int]] = {
    "organic_casual": (2, 20),
    "organic_developer": (6, 40),
    "organic_student": (4, 30),
    "organic_writer": (2, 14),
    "organic_power_user": (50, 180),
    "organic_batch_pipeline": (50, 180),
    "organic_eval_team": (60, 250),
    "organic_viral": (1, 6),
    "cot_harvest": (30, 120),
    "capability_sweep": (30, 120),
    "longctx_sweep": (8, 28),
    "slow_drip": (40, 140),
}

MODELS: tuple[str, ...] = ("atlas-pro", "atlas-mini", "atlas-think")
TsPrecision = Literal["s", "ms"]


def _check_range(
    name: str, value: Any, lo: float, hi: float, *, integer: bool = False
) -> tuple[Any, Any]:
    """A (low, high) pair within [lo, hi] with low <= high, or a ValueError naming the field."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"SimConfig.{name}: expected a (low, high) pair, got {value!r}")
    a, b = value
    kinds = (int,) if integer else (int, float)
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, kinds) or not math.isfinite(v):
            what = "integers" if integer else "numbers"
            raise ValueError(f"SimConfig.{name}: expected {what}, got {value!r}")
    if not lo <= a <= b <= hi:
        raise ValueError(f"SimConfig.{name}: need {lo} <= low <= high <= {hi}, got {value!r}")
    return (a, b)


def _check_prob(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"SimConfig.{name}: expected a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class SimConfig:
    """Every knob of a simulation; validated on construction.

    ``kind_mix`` replaces the default mix (kinds left out get weight 0);
    ``prompts_per_account`` is merged over :data:`DEFAULT_PROMPTS`.

    Example::

        SimConfig(n_accounts=50, seed=1, hydra_fleets=1, hydra_fleet_size=(20, 25))
    """

    n_accounts: int = 300
    seed: int = 0
    #: First instant of the simulated span (RFC 3339, UTC) and its length in days.
    start: str = "2026-03-02T00:00:00Z"
    days: float = 28.0
    kind_mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_MIX))
    prompts_per_account: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: dict(DEFAULT_PROMPTS)
    )
    #: Multiplies every prompt count (not whole-benchmark eval runs, not fleet accounts).
    volume_scale: float = 1.0
    #: Share of all accounts that belong to hydra fleets (used when ``hydra_fleets`` is None).
    hydra_share: float = 0.12
    #: Exact number of fleets; None = as many as ``hydra_share`` of the accounts fill.
    hydra_fleets: int | None = None
    hydra_fleet_size: tuple[int, int] = (20, 200)
    hydra_prompts: tuple[int, int] = (5, 30)
    #: Share of a slow-drip account's prompts that are harvesting prompts.
    slow_drip_share: tuple[float, float] = (0.05, 0.10)
    #: Probability that a harvesting operator mixes organic cover prompts in, and how many.
    dilution_prob: float = 0.35
    dilution_share: tuple[float, float] = (0.05, 0.30)
    #: Probability that a harvesting operator uses human timing and a browser user agent.
    humanlike_attacker_prob: float = 0.3
    #: Probability that a new harvesting account joins an existing campaign of its kind.
    campaign_reuse_prob: float = 0.25
    #: Probability that a student's homework prompt asks for a step-by-step explanation.
    student_step_by_step_prob: float = 0.25
    #: Mean gap between script requests is drawn log-uniformly in this range (seconds).
    script_gap_s: tuple[float, float] = (0.4, 90.0)
    #: Median human think time between turns is drawn per account in this range (seconds).
    human_think_s: tuple[float, float] = (15.0, 150.0)
    #: Pasted documents and long contexts are cut (at a line or word) to this many chars.
    max_doc_chars: int = 10_000
    ts_precision: TsPrecision = "s"

    def __post_init__(self) -> None:
        def bad(name: str, expected: str, value: Any) -> ValueError:
            return ValueError(f"SimConfig.{name}: expected {expected}, got {value!r}")

        if isinstance(self.n_accounts, bool) or not isinstance(self.n_accounts, int):
            raise bad("n_accounts", "an integer", self.n_accounts)
        if self.n_accounts < 1:
            raise bad("n_accounts", "at least 1", self.n_accounts)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "a non-negative integer", self.seed)
        try:
            _parse_start(self.start)
        except ValueError:
            raise bad(
                "start", "an RFC 3339 UTC time like 2026-03-02T00:00:00Z", self.start
            ) from None
        if not isinstance(self.days, int | float) or not 0.5 <= self.days <= 3660:
            raise bad("days", "a number of days in [0.5, 3660]", self.days)
        mix = dict(self.kind_mix)
        unknown = sorted(set(mix) - set(MIX_KINDS))
        if unknown:
            hint = " (fleets are set by hydra_share / hydra_fleets)" if "hydra_fleet" in mix else ""
            raise ValueError(
                f"SimConfig.kind_mix: unknown kinds {unknown}{hint}; expected some of {MIX_KINDS}"
            )
        for k, w in mix.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
                raise bad(f"kind_mix[{k!r}]", "a finite number", w)
            if w < 0:
                raise bad(f"kind_mix[{k!r}]", "a weight >= 0", w)
        object.__setattr__(self, "kind_mix", {k: float(mix.get(k, 0.0)) for k in MIX_KINDS})
        prompts = dict(DEFAULT_PROMPTS)
        for k, v in dict(self.prompts_per_account).items():
            if k not in DEFAULT_PROMPTS:
                raise ValueError(
                    f"SimConfig.prompts_per_account: unknown kind {k!r}; expected some of "
                    f"{tuple(DEFAULT_PROMPTS)} (fleet accounts use hydra_prompts)"
                )
            prompts[k] = _check_range(f"prompts_per_account[{k!r}]", v, 1, 100_000, integer=True)
        object.__setattr__(self, "prompts_per_account", prompts)
        if not isinstance(self.volume_scale, int | float) or not 0 < self.volume_scale <= 100:
            raise bad("volume_scale", "a number in (0, 100]", self.volume_scale)
        if not isinstance(self.hydra_share, int | float) or not 0 <= self.hydra_share < 1:
            raise bad("hydra_share", "a share in [0, 1)", self.hydra_share)
        size = _check_range("hydra_fleet_size", self.hydra_fleet_size, 2, 100_000, integer=True)
        object.__setattr__(self, "hydra_fleet_size", size)
        hp = _check_range("hydra_prompts", self.hydra_prompts, 1, 10_000, integer=True)
        object.__setattr__(self, "hydra_prompts", hp)
        if self.hydra_fleets is not None:
            if isinstance(self.hydra_fleets, bool) or not isinstance(self.hydra_fleets, int):
                raise bad("hydra_fleets", "an integer or None", self.hydra_fleets)
            if self.hydra_fleets < 0:
                raise bad("hydra_fleets", "an integer >= 0 or None", self.hydra_fleets)
            if self.hydra_fleets * size[0] > self.n_accounts:
                raise ValueError(
                    f"SimConfig.hydra_fleets: {self.hydra_fleets} fleets of at least {size[0]} "
                    f"accounts do not fit in n_accounts={self.n_accounts}"
                )
        sd = _check_range("slow_drip_share", self.slow_drip_share, 0.0, 1.0)
        if sd[0] <= 0 or sd[1] >= 1:
            raise bad("slow_drip_share", "a (low, high) pair with 0 < low <= high < 1", sd)
        object.__setattr__(self, "slow_drip_share", sd)
        for name in (
            "dilution_prob",
            "humanlike_attacker_prob",
            "campaign_reuse_prob",
            "student_step_by_step_prob",
        ):
            _check_prob(name, getattr(self, name))
        dil = _check_range("dilution_share", self.dilution_share, 0.0, 0.9)
        object.__setattr__(self, "dilution_share", dil)
        gap = _check_range("script_gap_s", self.script_gap_s, 0.01, 86_400.0)
        object.__setattr__(self, "script_gap_s", gap)
        think = _check_range("human_think_s", self.human_think_s, 1.0, 86_400.0)
        object.__setattr__(self, "human_think_s", think)
        if isinstance(self.max_doc_chars, bool) or not isinstance(self.max_doc_chars, int):
            raise bad("max_doc_chars", "an integer", self.max_doc_chars)
        if self.max_doc_chars < 500:
            raise bad("max_doc_chars", "at least 500", self.max_doc_chars)
        if self.ts_precision not in ("s", "ms"):
            raise bad("ts_precision", "'s' or 'ms'", self.ts_precision)
        n_fleet = self.n_hydra_accounts_max()
        if sum(self.kind_mix.values()) <= 0 and n_fleet < self.n_accounts:
            raise ValueError(
                "SimConfig.kind_mix: every weight is 0, but "
                f"{self.n_accounts - n_fleet} accounts are not in fleets and need a kind"
            )

    def n_hydra_accounts_max(self) -> int:
        """Upper bound on fleet accounts (exact when ``hydra_fleets`` is None)."""
        if self.hydra_fleets is not None:
            return min(self.n_accounts, self.hydra_fleets * self.hydra_fleet_size[1])
        lo = self.hydra_fleet_size[0]
        budget = round(self.hydra_share * self.n_accounts)
        if budget < lo <= 2 * budget and self.n_accounts >= 4 * lo:
            budget = lo  # round up to one smallest fleet rather than none
        return budget if budget >= lo else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)


def _parse_start(text: str) -> float:
    if not isinstance(text, str):
        raise ValueError("start must be a string")
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        raise ValueError("start needs a UTC offset")
    return dt.timestamp()


# --------------------------------------------------------------------------- result


@dataclass
class Simulation:
    """Contract event and label records; ``harvest_flags[i]`` says whether event i is a
    harvesting prompt (ground truth for per-event evaluation; on disk, a harvesting
    account's label lists the digests of its harvesting prompts, ``harvest_prompts``)."""

    config: SimConfig
    events: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    harvest_flags: list[bool]

    def kind_counts(self) -> dict[str, int]:
        """Accounts per kind, in :data:`KINDS` order."""
        counts = dict.fromkeys(KINDS, 0)
        for lab in self.labels:
            counts[lab["kind"]] += 1
        return {k: v for k, v in counts.items() if v}

    def event_counts(self) -> dict[str, int]:
        """Events per kind, in :data:`KINDS` order."""
        kind_of = {lab["account_id"]: lab["kind"] for lab in self.labels}
        counts = dict.fromkeys(KINDS, 0)
        for ev in self.events:
            counts[kind_of[ev["account_id"]]] += 1
        return {k: v for k, v in counts.items() if v}

    def summary(self) -> str:
        """One line per kind: accounts and events."""
        ev = self.event_counts()
        n_h = sum(lab["label"] for lab in self.labels)
        lines = [
            f"{len(self.labels)} accounts ({n_h} harvesting), {len(self.events)} events",
            *(
                f"  {k:24s} {n:5d} accounts {ev.get(k, 0):7d} events"
                for k, n in self.kind_counts().items()
            ),
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- identities

_BROWSER_UAS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
)
_APP_UAS: tuple[str, ...] = (
    "ChatBox/1.{v}.2 (Mac OS X)",
    "TypingMind/2026.{v}",
    "Raycast/1.{v}.0",
    "obsidian-copilot/2.{v}.1",
    "Msty/1.{v}.0",
)
_SDK_UAS: tuple[str, ...] = (
    "OpenAI/Python 1.{v}.0",
    "AsyncOpenAI/Python 1.{v}.2",
    "anthropic-python/0.{v}.0",
    "python-httpx/0.27.{m}",
    "python-requests/2.31.0",
    "python-requests/2.32.{m}",
    "axios/1.6.{m}",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "curl/8.{m}.0",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "langchain-openai/0.1.{v}",
    "litellm/1.{v}.3",
    "Java-http-client/17.0.{m}",
)
_IDE_UAS: tuple[str, ...] = (
    "vscode-continue/0.8.{m}",
    "JetBrains-AI/2024.{m}",
    "aider/0.{v}.1",
    "cursor-agent/0.{v}",
)
_BATCH_UAS: tuple[str, ...] = (
    "python-requests/2.31.0",
    "python-httpx/0.27.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.9)",
    "axios/1.6.7",
    "Go-http-client/1.1",
)
#: First octets of plausible public IPv4 space (no private, loopback, link-local,
#: carrier-grade NAT or documentation ranges).
_PUBLIC_A: tuple[int, ...] = tuple(
    a for a in range(23, 224) if a not in (100, 127, 169, 172, 192, 198, 203)
)
# fmt: off
#: (UTC offset in hours, weight): where simulated people live.
_TIME_ZONES: tuple[tuple[float, float], ...] = (
    (-8, 0.12), (-7, 0.04), (-6, 0.06), (-5, 0.14), (-3, 0.05), (0, 0.08), (1, 0.12),
    (2, 0.06), (3, 0.04), (5.5, 0.08), (7, 0.03), (8, 0.10), (9, 0.05), (10, 0.03),
)
# fmt: on
_TZ_VALUES = np.array([tz for tz, _ in _TIME_ZONES])
_TZ_P = np.array([w for _, w in _TIME_ZONES]) / sum(w for _, w in _TIME_ZONES)


def _norm(weights: Sequence[float]) -> np.ndarray:
    a = np.asarray(weights, dtype=float)
    return a / a.sum()


# fmt: off
#: Activity by local hour (0-23) for people with different habits.
_DIURNAL: dict[str, np.ndarray] = {
    "general": _norm([0.3, 0.15, 0.08, 0.05, 0.05, 0.1, 0.3, 0.7, 1.0, 1.3, 1.5, 1.5,
                      1.3, 1.4, 1.5, 1.5, 1.4, 1.2, 1.1, 1.2, 1.3, 1.2, 0.9, 0.6]),
    "work": _norm([0.05, 0.03, 0.02, 0.02, 0.02, 0.05, 0.2, 0.7, 1.5, 2.0, 2.0, 1.8,
                   1.2, 1.8, 2.0, 2.0, 1.8, 1.2, 0.6, 0.4, 0.4, 0.4, 0.3, 0.1]),
    "evening": _norm([0.6, 0.3, 0.1, 0.05, 0.03, 0.03, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8,
                      0.9, 1.0, 1.1, 1.2, 1.5, 1.8, 2.0, 2.2, 2.4, 2.2, 1.8, 1.2]),
    "flat": _norm([1.0] * 24),
}
# fmt: on


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _ua(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return ph.fill(
        _pick(rng, pool), v=str(int(rng.integers(20, 130))), m=str(int(rng.integers(0, 10)))
    )


def _random_ip(rng: np.random.Generator) -> str:
    a = _pick(rng, _PUBLIC_A)
    b, c, d = (int(x) for x in rng.integers(1, 255, size=3))
    return f"{a}.{b}.{c}.{d}"


def _prefix24(rng: np.random.Generator) -> str:
    return _random_ip(rng).rsplit(".", 1)[0]


def _host_in(rng: np.random.Generator, prefix: str) -> str:
    """An address in a /24 (``a.b.c``) or /16 (``a.b``) prefix."""
    parts = prefix.count(".")
    tail = rng.integers(1, 255, size=3 - parts)
    return prefix + "".join(f".{int(x)}" for x in tail)


def _hex_id(rng: np.random.Generator, prefix: str, digits: int) -> str:
    return f"{prefix}{int(rng.integers(16**digits)):0{digits}x}"


# --------------------------------------------------------------------------- per-account plans


@dataclass
class _Turn:
    prompt: str
    harvest: bool = False


Conv = list[_Turn]


@dataclass
class _Client:
    """What an account's client puts around each prompt; drawn once per conversation."""

    ips: tuple[str, ...]
    uas: tuple[str, ...]
    models: tuple[str, ...] = ()
    max_tokens: tuple[int, ...] = ()
    max_tokens_omit: float = 0.0
    harvest_max_tokens: tuple[int, ...] | None = None
    system: str | None = None
    system_p: float = 1.0
    conv_ids: bool = True
    sticky: float = 0.85

    def fields(self, rng: np.random.Generator, harvest: bool) -> dict[str, Any]:
        def sticky_pick(pool: Sequence[Any]) -> Any:
            if len(pool) == 1 or rng.random() < self.sticky:
                return pool[0]
            return _pick(rng, pool[1:])

        out: dict[str, Any] = {}
        if self.models:
            out["model"] = sticky_pick(self.models)
        values = self.max_tokens
        if harvest and self.harvest_max_tokens is not None and rng.random() < 0.6:
            values = self.harvest_max_tokens
        if values and rng.random() >= self.max_tokens_omit:
            out["max_tokens"] = sticky_pick(values)
        out["ip"] = sticky_pick(self.ips)
        out["user_agent"] = sticky_pick(self.uas)
        if self.system is not None and rng.random() < self.system_p:
            out["system"] = self.system
        return out


TimingStyle = Literal["human", "steady", "bursty", "cron", "webhook"]


@dataclass
class _Timing:
    style: TimingStyle
    window: tuple[float, float]
    tz: float = 0.0
    diurnal: str = "general"
    weekend: float = 0.8  # relative activity on Saturdays and Sundays
    think: float = 60.0  # median seconds between turns (human) or mean gap (scripts)
    typing: bool = True  # humans also need time to type what they send
    session_convs: tuple[int, int] = (1, 3)


@dataclass
class _Operator:
    """The person or group behind one harvesting campaign; its accounts share these habits."""

    campaign: str
    kind: str
    wrapper: ph.Wrapper
    domains: tuple[str, ...]
    domain_p: np.ndarray
    rotate_block: int  # capability sweeps: prompts per domain before rotating (0 = random)
    rubric_p: float
    fewshot_p: float
    humanlike: bool
    style: TimingStyle
    gap: float
    tz: float
    uas: tuple[str, ...]
    ip_prefixes: tuple[str, ...]
    models: tuple[str, ...]
    max_tokens: tuple[int, ...]
    max_tokens_omit: float
    system: str | None
    dilution: float
    sweep_phrasings: dict[str, tuple[ph.Phrasing, ...]]
    window: tuple[float, float] = (0.0, 0.0)
    n_accounts: int = 0


@dataclass
class _Plan:
    kind: str
    account_id: str = ""
    campaign: str | None = None
    operator: _Operator | None = None
    viral: tuple[ph.Phrasing, float] | None = None
    company: int | None = None  # batch pipelines of one company share a template


# --------------------------------------------------------------------------- corpus pools

# fmt: off
_CODE_WORDS = frozenset((
    "def", "function", "python", "javascript", "typescript", "sql", "code", "error", "bug",
    "api", "java", "c++", "react", "docker", "regex", "script",
))
# fmt: on
_WORD = re.compile(r"[a-z+]+")


def _looks_like_code(text: str) -> bool:
    """A cheap test for programming questions (looks at the first 2,000 chars only)."""
    head = text[:2000]
    return "```" in head or not _CODE_WORDS.isdisjoint(_WORD.findall(head.lower()))


_STUDENT_MATH_EXCLUDE = ("qwen25_math:olympiadbench", "qwen25_math:aime24", "qwen25_math:amc23")
_NOT_BENCHMARKS = ("flan_cot",)
_PROBE_KINDS = (
    "organic_student",
    "organic_eval_team",
    "cot_harvest",
    "capability_sweep",
    "slow_drip",
    "hydra_fleet",
)


def _code_phrasing_fits(key: str, code: str) -> bool:
    """Output prediction only for ``== ??`` items, completion only for function stubs."""
    if key == "sweep.code.predict":
        return "== ??" in code
    if key == "sweep.code.complete":
        return code.lstrip().startswith(("def ", "from ", "import ")) and "== ??" not in code
    return "== ??" not in code


def _strip_assert(code: str) -> str:
    """CRUXEval items end in ``assert f(...) == ??``; a developer's own code would not."""
    return "\n".join(ln for ln in code.splitlines() if "== ??" not in ln).rstrip()


def _cap(text: str, limit: int) -> str:
    """Cut to at most ``limit`` chars at a line break or space, like a paste that was trimmed."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", limit // 2, limit)
    if cut < 0:
        cut = text.rfind(" ", limit // 2, limit)
    return text[: cut if cut > 0 else limit]


class _Pools:
    """Corpus texts sorted into what each kind of account draws from."""

    def __init__(self, corpora: Corpora):
        self.chat_convs = [[r.text for r in conv] for conv in corpora.conversations("organic_chat")]
        self.multi_convs = [c for c in self.chat_convs if len(c) > 1]
        chat = [r.text for r in corpora.family("organic_chat") if not r.extra.get("dup")]
        self.chat = chat
        self.short_chat = [t for t in chat if len(t) <= 600] or chat
        self.code_chat = [t for t in chat if _looks_like_code(t)] or chat
        self.longdocs = [r.text for r in corpora.family("organic_longdoc")]
        self.math = corpora.family("probe_math")
        self.student_math = [
            r for r in self.math if not any(r.source == s for s in _STUDENT_MATH_EXCLUDE)
        ] or self.math
        self.reasoning = corpora.family("probe_reasoning")
        self.code = corpora.family("probe_code")
        self.code_snippets = [_strip_assert(r.text) for r in self.code if "def " in r.text] or [
            _strip_assert(r.text) for r in self.code
        ]
        self.mbpp_tasks = [
            self._task_from_mbpp(r.text) for r in self.code if r.source.startswith("mbpp")
        ]
        self.longctx = corpora.family("longctx")
        self.cot_by_task: dict[str, str] = {}
        for r in corpora.family("cot_templates"):
            tasks = r.extra.get("tasks") or [r.source.split(":", 1)[-1]]
            for t in tasks:
                self.cot_by_task[str(t)] = r.text
        self.benchmarks: dict[str, list[Record]] = {}
        for fam in ("probe_code", "probe_math", "probe_reasoning"):
            for r in corpora.family(fam):  # type: ignore[arg-type]
                if r.source_family in _NOT_BENCHMARKS:
                    continue
                self.benchmarks.setdefault(r.source, []).append(r)
        self.benchmarks = {k: v for k, v in self.benchmarks.items() if len(v) >= 20}

    @staticmethod
    def _task_from_mbpp(text: str) -> str:
        first = text.split("\n", 1)[0].strip().rstrip(".")
        first = re.sub(
            r"^(write|create|implement) (a )?(python )?(function|program) (to|that) ",
            "",
            first,
            flags=re.I,
        )
        return first[:1].lower() + first[1:]

    def missing_for(self, kinds: Iterable[str]) -> list[str]:
        """What the corpora lack for these kinds, as "family (needed by kinds)" strings."""
        wanted = list(kinds)
        probes = bool(self.math or self.reasoning or self.code)
        needs = (
            ("organic_chat", bool(self.chat), [k for k in wanted if k != "organic_eval_team"]),
            (
                "probe_math, probe_reasoning or probe_code",
                probes,
                [k for k in wanted if k in _PROBE_KINDS],
            ),
            (
                "longctx or organic_longdoc",
                bool(self.longctx or self.longdocs),
                [k for k in wanted if k in ("longctx_sweep", "organic_writer")],
            ),
        )
        return [
            f"{fam} (needed by {', '.join(users)})" for fam, ok, users in needs if users and not ok
        ]


# --------------------------------------------------------------------------- scheduling


def _human_starts(
    rng: np.random.Generator, n: int, timing: _Timing, bounds: tuple[float, float]
) -> list[float]:
    """Session start times on local waking hours, spread over the account's window."""
    w0, w1 = timing.window
    p = _DIURNAL[timing.diurnal]
    out = []
    for _ in range(n):
        t = w0
        for _attempt in range(20):
            local_day = math.floor((rng.uniform(w0, w1) + timing.tz * 3600) / 86_400)
            weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
            if weekday >= 5 and rng.random() > timing.weekend:
                continue
            hour = int(rng.choice(24, p=p))
            t = local_day * 86_400 + hour * 3600 + rng.uniform(0, 3600) - timing.tz * 3600
            if bounds[0] <= t <= bounds[1] - 3600:
                break
        out.append(min(max(t, bounds[0]), bounds[1] - 3600))
    return sorted(out)


def _schedule(
    rng: np.random.Generator, convs: Sequence[Conv], timing: _Timing, bounds: tuple[float, float]
) -> list[list[float]]:
    """A time for every turn of every conversation, strictly increasing."""
    n_turns = sum(len(c) for c in convs)
    times: list[list[float]] = []
    if timing.style == "human":
        lo, hi = timing.session_convs
        sessions: list[list[Conv]] = []
        i = 0
        while i < len(convs):
            k = int(rng.integers(lo, hi + 1))
            sessions.append(list(convs[i : i + k]))
            i += k
        starts = _human_starts(rng, len(sessions), timing, bounds)
        t_end = -math.inf
        for start, session in zip(starts, sessions, strict=True):
            t = max(start, t_end + rng.uniform(600, 5400))
            for ci, conv in enumerate(session):
                if ci:
                    t += timing.think * float(rng.lognormal(0.8, 0.7))
                conv_times = []
                for ti, turn in enumerate(conv):
                    if ti:
                        t += timing.think * float(rng.lognormal(0.0, 0.6))
                    if timing.typing:
                        t += min(len(turn.prompt), 300) / rng.uniform(3.0, 7.0)
                    conv_times.append(t)
                times.append(conv_times)
            t_end = t
        return times
    w0, w1 = timing.window
    span = max(w1 - w0, 60.0)
    if timing.style == "steady":
        gap = min(timing.think, 0.9 * span / max(n_turns, 1))
        t = rng.uniform(w0, max(w0, w1 - gap * n_turns * 1.2))
        flat = []
        for _ in range(n_turns):
            flat.append(t)
            t += gap * float(np.clip(1 + 0.15 * rng.standard_normal(), 0.3, 2.0))
    elif timing.style == "bursty":
        flat = []
        burst_sizes = []
        left = n_turns
        while left > 0:
            b = min(left, int(rng.integers(8, 61)))
            burst_sizes.append(b)
            left -= b
        gap = timing.think
        busy = gap * n_turns
        pause_mean = max((span - busy) / max(len(burst_sizes), 1), 60.0)
        t = rng.uniform(w0, w0 + 0.5 * pause_mean)
        for b in burst_sizes:
            for _ in range(b):
                flat.append(t)
                t += gap * float(rng.lognormal(0.0, 0.5))
            t += pause_mean * float(rng.uniform(0.2, 1.6))
    elif timing.style == "cron":
        n_days = max(1, int(span // 86_400))
        run_days = [d for d in range(n_days) if rng.random() < 0.9] or [0]
        per_run = np.array_split(np.arange(n_turns), len(run_days))
        hour = rng.uniform(0, 24)
        flat = []
        for day, chunk in zip(run_days, per_run, strict=True):
            t = w0 + day * 86_400 + hour * 3600 + rng.uniform(0, 90)
            for _ in chunk:
                flat.append(t)
                t += timing.think * float(np.clip(1 + 0.05 * rng.standard_normal(), 0.5, 1.5))
    else:  # webhook: arrivals follow the company's working hours
        sub = dataclasses.replace(timing, diurnal="work", weekend=0.2)
        flat = _human_starts(rng, n_turns, sub, bounds)
    flat.sort()
    for i in range(1, len(flat)):  # keep strict order; requests cannot share an instant
        flat[i] = max(flat[i], flat[i - 1] + 0.05)
    it = iter(flat)
    return [[next(it) for _ in conv] for conv in convs]


# --------------------------------------------------------------------------- the builder


class _Builder:
    """Turns account plans into events; one instance per simulation."""

    def __init__(self, config: SimConfig, pools: _Pools, t0: float):
        self.cfg = config
        self.pools = pools
        self.t0 = t0
        self.t1 = t0 + config.days * 86_400
        self.bounds = (self.t0, self.t1)
        self.campus_prefixes: list[str] = []
        self.company_templates: dict[int, tuple[str, str, str, int, str, str]] = {}
        self.company_preambles: dict[int, str] = {}

    # ---------------------------------------------------------------- small helpers

    def n_prompts(self, rng: np.random.Generator, kind: str) -> int:
        lo, hi = self.cfg.prompts_per_account[kind]
        return max(1, round(int(rng.integers(lo, hi + 1)) * self.cfg.volume_scale))

    def window(
        self, rng: np.random.Generator, min_frac: float, max_frac: float
    ) -> tuple[float, float]:
        span = self.t1 - self.t0
        length = span * float(rng.uniform(min_frac, max_frac))
        start = self.t0 + float(rng.uniform(0, span - length))
        return (start, start + length)

    def doc(self, text: str, share: float = 1.0) -> str:
        return _cap(text, max(500, int(self.cfg.max_doc_chars * share)))

    def tz(self, rng: np.random.Generator) -> float:
        return float(rng.choice(_TZ_VALUES, p=_TZ_P))

    def think(self, rng: np.random.Generator) -> float:
        lo, hi = self.cfg.human_think_s
        return float(np.exp(rng.uniform(math.log(lo), math.log(hi))))

    def script_gap(self, rng: np.random.Generator) -> float:
        lo, hi = self.cfg.script_gap_s
        return float(np.exp(rng.uniform(math.log(lo), math.log(hi))))

    def organic_client(
        self,
        rng: np.random.Generator,
        ua_pools: Sequence[tuple[Sequence[str], float]],
        max_tokens: Sequence[int],
        omit: float,
        system_p: float = 0.1,
        system_key: str = "sys.o.helpful",
    ) -> _Client:
        pools = [p for p, _ in ua_pools]
        weights = _norm([w for _, w in ua_pools])
        n_ua = 1 + int(rng.random() < 0.2) + int(rng.random() < 0.05)
        uas = tuple(_ua(rng, pools[int(rng.choice(len(pools), p=weights))]) for _ in range(n_ua))
        n_ip = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
        ips = tuple(_random_ip(rng) for _ in range(n_ip))
        models: tuple[str, ...] = ()
        if rng.random() > 0.12:
            first = str(rng.choice(MODELS, p=[0.45, 0.4, 0.15]))
            models = (first, *[m for m in MODELS if m != first])
        n_mt = int(rng.integers(1, 3))
        values = tuple(int(v) for v in rng.choice(np.asarray(max_tokens), size=n_mt))
        system = ph.get(system_key).template if rng.random() < system_p else None
        return _Client(
            ips=ips,
            uas=uas,
            models=models,
            max_tokens=values,
            max_tokens_omit=omit,
            system=system,
            system_p=float(rng.uniform(0.6, 1.0)),
            conv_ids=rng.random() < 0.8,
            sticky=float(rng.uniform(0.7, 0.95)),
        )

    # ---------------------------------------------------------------- organic content

    def casual_convs(self, rng: np.random.Generator, n: int) -> list[Conv]:
        p = self.pools
        convs: list[Conv] = []
        left = n
        while left > 0:
            if p.multi_convs and rng.random() < 0.4:
                texts = list(_pick(rng, p.multi_convs))[:left]
                conv = [_Turn(self.doc(t)) for t in texts]
            else:
                conv = [_Turn(self.doc(_pick(rng, p.chat)))]
                k = int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1]))
                for _ in range(min(k, left - 1)):
                    f = ph.choose(rng, ph.by_family("casual_followup"))
                    conv.append(_Turn(f.render(rng, 0.25)))
            convs.append(conv)
            left -= len(conv)
        return convs

    def developer_convs(self, rng: np.random.Generator, n: int) -> list[Conv]:
        p = self.pools
        convs: list[Conv] = []
        left = n
        while left > 0:
            u = rng.random()
            code = _pick(rng, p.code_snippets) if p.code_snippets else ""
            if u < 0.35 or not code:
                first = self.doc(_pick(rng, p.code_chat))
            elif u < 0.65:
                first = ph.compose_error_report(code, rng)
            else:
                q = ph.choose(rng, ph.by_family("dev_question"))
                task = _pick(rng, p.mbpp_tasks) if p.mbpp_tasks else "parse a csv file"
                first = q.render(rng, 0.25, task=task, code=code.strip())
            conv = [_Turn(first)]
            k = int(rng.choice(4, p=[0.35, 0.3, 0.2, 0.15]))
            names = re.findall(r"\b([a-z_]{3,})\s*=", code) or ["result"]
            for _ in range(min(k, left - 1)):
                f = ph.choose(rng, ph.by_family("dev_followup"))
                error = ph.compose_error(code or "x = 1", rng)
                conv.append(_Turn(f.render(rng, 0.25, error=error, name=_pick(rng, names))))
            convs.append(conv)
            left -= len(conv)
        return convs

    def student_convs(self, rng: np.random.Generator, n: int) -> list[Conv]:
        p = self.pools
        pool = p.student_math or p.reasoning
        course = _pick(rng, ("algebra", "math", "stats", "precalc", "physics", "calc"))
        plain = [x for x in ph.by_family("student") if not x.says_step_by_step]
        sbs = [x for x in ph.by_family("student") if x.says_step_by_step]
        favourite = ph.choose(rng, plain)
        convs: list[Conv] = []
        left = n
        while left > 0:
            # A homework set: a few consecutive problems of one source.
            start = int(rng.integers(len(pool)))
            n_problems = min(left, int(rng.integers(1, 6)))
            conv: Conv = []
            for j in range(n_problems):
                q = pool[(start + j) % len(pool)].text
                a, b = (str(int(x)) for x in rng.integers(2, 300, size=2))
                if rng.random() < self.cfg.student_step_by_step_prob and sbs:
                    tpl = ph.choose(rng, sbs)
                elif rng.random() < 0.5:
                    tpl = favourite
                else:
                    tpl = ph.choose(rng, plain)
                text = tpl.render(rng, 0.3, q=q, a=a, b=b, course=course)
                if j and rng.random() < 0.5 and conv:
                    nxt = ph.get("student.sf.next")
                    text = nxt.render(rng, 0.3, q=q)
                    conv.append(_Turn(text))
                else:
                    if conv:
                        convs.append(conv)
                    conv = [_Turn(text)]
                left -= 1
                if left > 0 and rng.random() < 0.35:
                    f = ph.choose(rng, ph.by_family("student_followup"))
                    conv.append(_Turn(f.render(rng, 0.35, q=q, a=a, b=b)))
                    left -= 1
            if conv:
                convs.append(conv)
        return convs

    def writer_convs(self, rng: np.random.Generator, n: int) -> list[Conv]:
        p = self.pools
        docs = p.longdocs or [r.text for r in p.longctx]
        convs: list[Conv] = []
        sent: list[str] = []
        reuse = float(rng.uniform(0.1, 0.8))  # some writers keep coming back to one draft
        left = n
        while left > 0:
            if sent and rng.random() < reuse:
                # back to a draft already sent, in a new conversation: pasted again as it
                # was or revised (a hard negative for context reuse)
                d = _pick(rng, sent)
                if rng.random() < 0.5:
                    d = self.revise(rng, d, self.doc(_pick(rng, docs), 0.6))
            else:
                d = self.doc(_pick(rng, docs), 0.6)
            sent.append(d)
            if rng.random() < 0.5:
                first = d
            else:
                first = ph.choose(rng, ph.by_family("writer")).render(rng, doc=d)
            conv = [_Turn(first)]
            k = int(rng.choice(4, p=[0.3, 0.3, 0.25, 0.15]))
            for _ in range(min(k, left - 1)):
                f = ph.choose(rng, ph.by_family("writer_followup"))
                conv.append(_Turn(f.render(rng, 0.2)))
            convs.append(conv)
            left -= len(conv)
        return convs

    @staticmethod
    def revise(rng: np.random.Generator, draft: str, other: str, share: float = 0.15) -> str:
        """``draft`` with about ``share`` of its sentences rewritten (taken from ``other``)."""
        sentences = re.split(r"(?<=[.!?])\s+", draft)
        fresh = re.split(r"(?<=[.!?])\s+", other)
        return " ".join(
            _pick(rng, fresh) if rng.random() < share else sentence for sentence in sentences
        )

    def power_user_convs(self, rng: np.random.Generator, n: int) -> list[Conv]:
        mix = _norm([0.4, 0.3, 0.08, 0.1, 0.12])
        convs: list[Conv] = []
        left = n
        while left > 0:
            which = int(rng.choice(5, p=mix))
            m = min(left, int(rng.integers(1, 5)))
            if which == 0:
                new = self.casual_convs(rng, m)
            elif which == 1:
                new = self.developer_convs(rng, m)
            elif which == 2:
                new = self.writer_convs(rng, m)
            elif which == 3:
                new = self.student_convs(rng, m)
            else:
                # Thoughtful people also ask for reasoning: an organic elicitation.
                q = self.doc(_pick(rng, self.pools.short_chat))
                el = ph.choose(rng, ph.by_family("cot"))
                new = [[_Turn(ph.wrap(el.render(rng, 0.25), q, rng))]]
            convs.extend(new)
            left -= sum(len(c) for c in new)
        return convs

    def organic_for(self, rng: np.random.Generator, persona: str, n: int) -> list[Conv]:
        if persona == "developer":
            return self.developer_convs(rng, n)
        if persona == "power_user":
            return self.power_user_convs(rng, n)
        return self.casual_convs(rng, n)

    # ---------------------------------------------------------------- harvesting content

    def problem(self, rng: np.random.Generator, domain: str) -> Record | None:
        p = self.pools
        pools = {"math": p.math, "reasoning": p.reasoning, "code": p.code}
        pool = pools.get(domain) or p.math or p.reasoning or p.code
        return _pick(rng, pool) if pool else None

    def fake_answer(self, rng: np.random.Generator, text: str) -> str:
        """A plausible (often wrong) candidate answer for a grading request."""
        if "== ??" in text:
            return _pick(rng, ("'abc'", "[1, 2, 3]", "True", "0", "''", "'hello world'", "{}"))
        if "Options:" in text or re.search(r"\(A\)", text):
            return f"({'ABCDE'[int(rng.integers(5))]})"
        if "def " in text:
            return "return sorted(set(x))"
        return str(int(rng.integers(1, 500)))

    def cot_prompt(self, rng: np.random.Generator, op: _Operator) -> str:
        domain = op.domains[int(rng.choice(len(op.domains), p=op.domain_p))]
        rec = self.problem(rng, domain)
        if rec is None:
            return op.wrapper.apply(_pick(rng, self.pools.short_chat), rng)
        q = rec.text
        task = rec.source.split(":", 1)[-1]
        if (
            rec.source.startswith("bbh:")
            and task in self.pools.cot_by_task
            and rng.random() < op.fewshot_p
        ):
            return f"{self.pools.cot_by_task[task]}\n\nQ: {q}\nA: Let's think step by step."
        if rng.random() < op.rubric_p:
            tpl = ph.choose(rng, ph.by_family("rubric"))
            a, b = self.fake_answer(rng, q), self.fake_answer(rng, q)
            return tpl.render(rng, op.wrapper.noise, q=q, a=a, b=b)
        return op.wrapper.apply(q, rng)

    def sweep_prompt(self, rng: np.random.Generator, op: _Operator, domain: str) -> str:
        p = self.pools
        options = op.sweep_phrasings[domain]
        rec = self.problem(rng, domain) if domain in ("math", "reasoning", "code") else None
        if rec is not None and domain == "code":
            fits = [x for x in options if _code_phrasing_fits(x.key, rec.text)]
            options = tuple(fits) or tuple(
                x for x in ph.by_family("sweep_code") if _code_phrasing_fits(x.key, rec.text)
            )
        tpl = ph.choose(rng, options)
        if domain == "longdoc":
            docs = p.longdocs or [r.text for r in p.longctx] or p.chat
            text = tpl.render(rng, op.wrapper.noise, doc=self.doc(_pick(rng, docs), 0.35))
        elif domain == "agentic":
            text = tpl.render(rng, op.wrapper.noise, q=ph.compose_agentic_task(rng))
        else:
            text = tpl.render(
                rng, op.wrapper.noise, q=rec.text if rec else _pick(rng, p.short_chat)
            )
        if domain in ("math", "reasoning", "code") and rng.random() < 0.35:
            el = ph.choose(rng, op.wrapper.phrasings)
            if not el.has_payload_slot:
                text = ph.wrap(ph.realize(el.template, rng), text, rng, "suffix")
        return text

    def longctx_prompts(self, rng: np.random.Generator, op: _Operator, n: int) -> list[str]:
        p = self.pools
        ctx: list[tuple[str, Record | None]] = [(r.text, r) for r in p.longctx]
        long_docs: list[tuple[str, Record | None]] = [
            (t, None) for t in p.longdocs if len(t) > 3000
        ]
        if not ctx and not long_docs:
            long_docs = [(t, None) for t in p.longdocs] or [(t, None) for t in p.chat]
        prefer_ctx = float(rng.uniform(0.4, 0.9)) if ctx and long_docs else float(bool(ctx))
        out: list[str] = []
        while len(out) < n:
            text, rec = _pick(rng, ctx if rng.random() < prefer_ctx else long_docs)
            k = min(n - len(out), int(rng.integers(3, 11)))
            out.extend(self.questions_on_doc(rng, text, rec, k))
        return out

    def questions_on_doc(
        self, rng: np.random.Generator, text: str, rec: Record | None, k: int
    ) -> list[str]:
        """``k`` prompts that each carry the same document and ask about a different place."""
        budget = self.cfg.max_doc_chars
        source = rec.source if rec is not None else ""
        positions = (
            np.sort(rng.uniform(0, 1, size=k)) if rng.random() < 0.5 else rng.uniform(0, 1, size=k)
        )
        where = _pick(rng, ("after", "after", "before", "both"))
        prompts = []
        if source.startswith("longchat_longeval:lines"):
            body = text.split("\n\nNow the record is over.", 1)[0]
            lines = body.split("\n")
            head = [ln for ln in lines if not ln.startswith("line ")]
            recs = [ln for ln in lines if ln.startswith("line ")]
            keep = (
                max(1, (budget - sum(len(h) + 1 for h in head)) // max(1, len(recs[0]) + 1))
                if recs
                else 0
            )
            recs = recs[:keep]
            doc = "\n".join([*head, *recs])
            keys = [ln.split(":", 1)[0][5:] for ln in recs] or ["unknown"]
            for pos in positions:
                key = keys[min(int(pos * len(keys)), len(keys) - 1)]
                q = ph.choose(rng, (ph.get("longctx.line"), ph.get("longctx.line_alt"))).render(
                    rng, key=key
                )
                prompts.append(self._place(rng, doc + "\n\nNow the record is over.", q, where))
            return prompts
        if source.startswith("longchat_longeval:topics"):
            body = text.split(" Now the record ends.", 1)[0]
            topics = re.findall(r"I would like to discuss the topic of (.+?)\.\s", body)
            doc = _cap(body, budget)
            topics = [t for t in topics if t in doc] or ["the first topic"]
            ordinals = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
            for pos in positions:
                i = min(int(pos * len(topics)), len(topics) - 1)
                if i + 1 < len(topics) and rng.random() < 0.4:
                    q = ph.get("longctx.topic_after").render(rng, topic=topics[i])
                else:
                    q = ph.get("longctx.topic_nth").render(rng, ordinal=ordinals[min(i, 7)])
                prompts.append(self._place(rng, doc + " Now the record ends.", q, where))
            return prompts
        if rec is not None and "question" in rec.extra and "document" in rec.extra:
            # Lost-in-the-middle style: many short passages, one question per passage.
            others = [r for r in self.pools.longctx if "document" in r.extra]
            m = int(rng.integers(10, 31))
            chosen = [_pick(rng, others) for _ in range(m)]
            for pos in positions:
                gold = _pick(rng, others)
                slot = min(int(pos * m), m - 1)
                passages = [*chosen[:slot], gold, *chosen[slot + 1 :]]
                doc = "\n\n".join(
                    f"Document [{j + 1}](Title: {r.extra.get('title', '')}) {r.extra['document']}"
                    for j, r in enumerate(passages)
                )
                q = ph.get("longctx.only_doc").render(rng, question=str(gold.extra["question"]))
                prompts.append(self._place(rng, _cap(doc, budget), q, where))
            return prompts
        doc = _cap(text, budget)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", doc) if len(s.split()) >= 6]
        generic = ph.by_family("longctx_question")
        generic = tuple(g for g in generic if "{snippet}" in g.template)
        for pos in positions:
            if sentences:
                s = sentences[min(int(pos * len(sentences)), len(sentences) - 1)].split()
                j = int(rng.integers(0, max(1, len(s) - 6)))
                snippet = " ".join(s[j : j + int(rng.integers(4, 8))])
            else:
                snippet = doc[int(pos * max(1, len(doc) - 40)) :][:40]
            q = ph.choose(rng, generic).render(rng, snippet=snippet)
            prompts.append(self._place(rng, doc, q, where))
        return prompts

    @staticmethod
    def _place(rng: np.random.Generator, doc: str, question: str, where: str) -> str:
        if where == "before":
            return f"{question}\n\n{doc}"
        if where == "both":
            return f"Read the document and answer: {question}\n\n{doc}\n\nQuestion: {question}"
        return f"{doc}\n\n{question}"

    # ---------------------------------------------------------------- dilution

    def dilute(self, rng: np.random.Generator, convs: list[Conv], share: float) -> list[Conv]:
        """Mix organic cover conversations in so that about ``share`` of turns are organic."""
        if share <= 0:
            return convs
        n_harvest = sum(len(c) for c in convs)
        n_cover = max(1, round(n_harvest * share / (1 - share)))
        cover = self.casual_convs(rng, n_cover)
        merged = convs + cover
        order = rng.permutation(len(merged))
        return [merged[int(i)] for i in order]

    # ---------------------------------------------------------------- kinds

    def build(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], list[list[float]], _Client]:
        """Conversations, a time for every turn, and the client of one planned account."""
        convs, timing, client = getattr(self, "_" + plan.kind)(plan, rng)
        if isinstance(timing, _Timing):
            timing = _schedule(rng, convs, timing, self.bounds)
        return convs, timing, client

    def _human_timing(
        self, rng: np.random.Generator, window: tuple[float, float], diurnal: str, **kw: Any
    ) -> _Timing:
        return _Timing(
            "human", window, tz=self.tz(rng), diurnal=diurnal, think=self.think(rng), **kw
        )

    def _organic_casual(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        convs = self.casual_convs(rng, self.n_prompts(rng, plan.kind))
        timing = self._human_timing(rng, self.window(rng, 0.1, 1.0), "general", weekend=1.2)
        client = self.organic_client(
            rng,
            [(_BROWSER_UAS, 0.5), (_APP_UAS, 0.25), (_SDK_UAS, 0.25)],
            (512, 1024, 2048, 4096),
            0.65,
        )
        return convs, timing, client

    def _organic_developer(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        convs = self.developer_convs(rng, self.n_prompts(rng, plan.kind))
        timing = self._human_timing(rng, self.window(rng, 0.3, 1.0), "work", weekend=0.25)
        client = self.organic_client(
            rng,
            [(_SDK_UAS, 0.5), (_IDE_UAS, 0.3), (_BROWSER_UAS, 0.2)],
            (1024, 2048, 4096, 8192),
            0.4,
            system_p=0.35,
            system_key="sys.o.coder",
        )
        return convs, timing, client

    def _organic_student(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        convs = self.student_convs(rng, self.n_prompts(rng, plan.kind))
        timing = self._human_timing(rng, self.window(rng, 0.3, 1.0), "evening", weekend=1.0)
        client = self.organic_client(
            rng,
            [(_BROWSER_UAS, 0.7), (_APP_UAS, 0.2), (_SDK_UAS, 0.1)],
            (512, 1024, 2048),
            0.7,
            system_p=0.1,
            system_key="sys.o.tutor",
        )
        if self.campus_prefixes and rng.random() < 0.4:
            # Students of one university share its address block (a hard negative for fleets).
            prefix = _pick(rng, self.campus_prefixes)
            client.ips = (_host_in(rng, prefix), *client.ips[1:])
        return convs, timing, client

    def _organic_writer(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        convs = self.writer_convs(rng, self.n_prompts(rng, plan.kind))
        timing = self._human_timing(rng, self.window(rng, 0.2, 1.0), "general", weekend=0.7)
        timing.think *= 2
        client = self.organic_client(
            rng,
            [(_BROWSER_UAS, 0.5), (_APP_UAS, 0.3), (_SDK_UAS, 0.2)],
            (4096, 8192, 2048),
            0.5,
            system_p=0.2,
            system_key="sys.o.editor",
        )
        return convs, timing, client

    def _organic_power_user(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        convs = self.power_user_convs(rng, self.n_prompts(rng, plan.kind))
        timing = self._human_timing(
            rng, self.window(rng, 0.75, 1.0), "general", weekend=0.8, session_convs=(2, 8)
        )
        client = self.organic_client(
            rng,
            [(_SDK_UAS, 0.4), (_APP_UAS, 0.3), (_BROWSER_UAS, 0.3)],
            (1024, 4096, 8192, 16384),
            0.3,
            system_p=0.3,
        )
        client.uas = (*client.uas, _ua(rng, _IDE_UAS))
        return convs, timing, client

    def _organic_batch_pipeline(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        company = plan.company if plan.company is not None else -1
        if company not in self.company_templates:
            tpl = ph.choose(rng, ph.by_family("batch"))
            self.company_templates[company] = (
                tpl.key,
                ph.realize(tpl.template, rng),
                _pick(rng, _BATCH_UAS),
                int(_pick(rng, (150, 200, 256, 300, 500, 800))),
                str(_pick(rng, MODELS[:2])),
                _random_ip(rng),
            )
        key, template, ua, max_tokens, model, ip = self.company_templates[company]
        doc_kind = ph.BATCH_DOC_KIND[key]
        if company not in self.company_preambles:
            # Some pipelines send a fixed few-shot block before every input: the same long
            # context in every request, from every account of the company (a hard negative
            # for context reuse).
            preamble = ""
            if rng.random() < 0.4:
                shots = [self.batch_doc(rng, doc_kind) for _ in range(int(rng.integers(2, 5)))]
                preamble = (
                    "Examples of inputs and the expected output:\n\n"
                    + "\n\n".join(
                        f"Input:\n{d}\nExpected output: {' '.join(d.split()[:12])}" for d in shots
                    )
                    + "\n\nNow the real input.\n\n"
                )
            self.company_preambles[company] = preamble
        preamble = self.company_preambles[company]
        n = self.n_prompts(rng, plan.kind)
        convs: list[Conv] = []
        for _ in range(n):
            d = self.batch_doc(rng, doc_kind)
            convs.append([_Turn(preamble + ph.fill(template, doc=d))])
        # An engineer now and then pokes the endpoint by hand: < 3 % of traffic.
        for _ in range(int(rng.binomial(n // 40, 0.5))):
            i = int(rng.integers(len(convs) + 1))
            convs.insert(i, [_Turn(_pick(rng, ("test", "hello", "ping", "Say OK.")))])
        style: TimingStyle = "cron" if rng.random() < 0.7 else "webhook"
        gap = float(rng.uniform(0.5, 4.0))
        timing = _Timing(style, self.window(rng, 0.5, 1.0), tz=self.tz(rng), think=gap)
        ips = (ip, _host_in(rng, ip.rsplit(".", 1)[0]))
        client = _Client(
            ips=ips,
            uas=(ua,),
            models=(model,),
            max_tokens=(max_tokens,),
            system=ph.get("sys.o.batch").template if rng.random() < 0.5 else None,
            conv_ids=False,
            sticky=0.97,
        )
        return convs, timing, client

    def batch_doc(self, rng: np.random.Generator, doc_kind: str) -> str:
        """One input of a batch pipeline whose template takes ``doc_kind`` documents."""
        p = self.pools
        if doc_kind == "invoice":
            d = ph.compose_invoice(rng)
        elif doc_kind == "code":
            d = _pick(rng, p.code_snippets) if p.code_snippets else _pick(rng, p.short_chat)
        elif doc_kind == "document":
            src = _pick(rng, p.longdocs) if p.longdocs else _pick(rng, p.chat)
            start = int(rng.integers(0, max(1, len(src) - 1500)))
            d = _cap(src[start:], int(rng.integers(400, 2500)))
        else:
            d = _pick(rng, p.short_chat)
        return d.strip()

    def _organic_eval_team(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], list[list[float]], _Client]:
        p = self.pools
        names = list(p.benchmarks)
        if not names:
            raise ValueError("organic_eval_team needs a benchmark with >= 20 rows in the corpora")
        name = _pick(rng, names)
        rows = p.benchmarks[name]
        lo, hi = self.cfg.prompts_per_account[plan.kind]
        if len(rows) <= hi:
            chosen = rows  # the whole benchmark
        else:
            size = max(
                lo, min(len(rows), round(int(rng.integers(lo, hi + 1)) * self.cfg.volume_scale))
            )
            size = min(size, len(rows))
            first = int(rng.integers(0, len(rows) - size + 1))
            chosen = rows[first : first + size]
        plain = ph.by_family("eval_plain")
        if name.startswith("humaneval"):
            tpl = _pick(rng, [x for x in plain if x.key in ("eval.raw", "eval.complete")])
        else:
            tpl = _pick(rng, [x for x in plain if x.key != "eval.complete"])
        convs: list[Conv] = [[_Turn(tpl.render(rng, q=r.text))] for r in chosen]
        # An engineer starts the run in working hours, after a smoke test or two.
        tz = self.tz(rng)
        kickoff = _Timing("human", self.window(rng, 0.1, 1.0), tz=tz, diurnal="work", weekend=0.1)
        start = _human_starts(rng, 1, kickoff, self.bounds)[0]
        gap = float(rng.uniform(0.2, 3.0)) / int(rng.integers(1, 5))  # parallel workers
        offsets = np.cumsum(gap * rng.uniform(0.7, 1.3, size=len(convs))) - gap
        times = [[start + float(o)] for o in offsets]
        smoke_t = np.sort(start - rng.uniform(60, 1800, size=int(rng.integers(0, 3))))
        smoke = [[_Turn(_pick(rng, ("hello", "test", "Say hi")))] for _ in smoke_t]
        convs = smoke + convs
        times = [[float(t)] for t in smoke_t] + times
        for i in range(1, len(times)):  # keep strict order
            times[i][0] = max(times[i][0], times[i - 1][0] + 0.05)
        client = _Client(
            ips=(_random_ip(rng),),
            uas=(_ua(rng, _SDK_UAS),),
            models=(str(_pick(rng, MODELS)),),
            max_tokens=(int(_pick(rng, (512, 1024, 2048))),),
            max_tokens_omit=0.0 if rng.random() < 0.8 else 1.0,
            conv_ids=False,
            sticky=1.0,
        )
        return convs, times, client

    def _organic_viral(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], list[list[float]], _Client]:
        assert plan.viral is not None
        phrasing, moment = plan.viral
        job = _pick(
            rng, ("nurse", "software engineer", "teacher", "accountant", "barista", "PhD student")
        )
        question = phrasing.render(rng, 0.4, job=job)
        n = self.n_prompts(rng, plan.kind)
        others = self.casual_convs(rng, n - 1) if n > 1 else []
        convs = [[_Turn(question)], *others]
        # The viral question comes within two days of the moment; the rest is ordinary use.
        timing = self._human_timing(
            rng, (moment, min(self.t1, moment + 2 * 86_400)), "general", weekend=1.2
        )
        timing.session_convs = (1, 1)
        client = self.organic_client(
            rng, [(_BROWSER_UAS, 0.6), (_APP_UAS, 0.3), (_SDK_UAS, 0.1)], (512, 1024), 0.8
        )
        times = _schedule(rng, convs[:1], timing, self.bounds)
        if len(convs) > 1:
            rest = self._human_timing(rng, self.window(rng, 0.2, 1.0), "general")
            rest.tz = timing.tz
            times += _schedule(rng, convs[1:], rest, self.bounds)
        return convs, times, client

    # ---- harvesting kinds

    def _harvest_client(self, rng: np.random.Generator, op: _Operator) -> _Client:
        ips = tuple(
            _host_in(rng, _pick(rng, op.ip_prefixes)) for _ in range(int(rng.integers(1, 4)))
        )
        residential = 0.2 if op.kind == "hydra_fleet" else (0.8 if op.humanlike else 0.2)
        if rng.random() < residential:
            ips = (_random_ip(rng), *ips[1:])  # a residential proxy in front
        uas = tuple(_pick(rng, op.uas) for _ in range(int(rng.integers(1, 3))))
        return _Client(
            ips=ips,
            uas=uas,
            models=op.models,
            max_tokens=op.max_tokens,
            max_tokens_omit=op.max_tokens_omit,
            system=op.system,
            system_p=float(rng.uniform(0.7, 1.0)),
            conv_ids=op.humanlike and rng.random() < 0.6,
            sticky=float(rng.uniform(0.6, 0.95)),
        )

    def _harvest_timing(self, rng: np.random.Generator, op: _Operator) -> _Timing:
        window = self.window(rng, 0.1, 0.8)
        if op.humanlike:
            return _Timing(
                "human",
                window,
                tz=op.tz,
                diurnal="general",
                weekend=1.0,
                think=self.think(rng) * 0.5,
                typing=False,
                session_convs=(5, 25),
            )
        return _Timing(op.style, window, tz=op.tz, think=op.gap * float(rng.uniform(0.8, 1.25)))

    def _cot_harvest(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        op = plan.operator
        assert op is not None
        n = self.n_prompts(rng, plan.kind)
        convs: list[Conv] = [[_Turn(self.cot_prompt(rng, op), harvest=True)] for _ in range(n)]
        convs = self.dilute(rng, convs, op.dilution)
        return convs, self._harvest_timing(rng, op), self._harvest_client(rng, op)

    def _capability_sweep(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        op = plan.operator
        assert op is not None
        n = self.n_prompts(rng, plan.kind)
        order = list(rng.permutation(len(op.domains)))
        convs: list[Conv] = []
        for i in range(n):
            if op.rotate_block:
                d = op.domains[int(order[(i // op.rotate_block) % len(order)])]
            else:
                d = op.domains[int(rng.choice(len(op.domains), p=op.domain_p))]
            convs.append([_Turn(self.sweep_prompt(rng, op, d), harvest=True)])
        convs = self.dilute(rng, convs, op.dilution)
        return convs, self._harvest_timing(rng, op), self._harvest_client(rng, op)

    def _longctx_sweep(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        op = plan.operator
        assert op is not None
        n = self.n_prompts(rng, plan.kind)
        convs: list[Conv] = [[_Turn(t, harvest=True)] for t in self.longctx_prompts(rng, op, n)]
        convs = self.dilute(rng, convs, op.dilution)
        timing = self._harvest_timing(rng, op)
        timing.think = max(timing.think, 5.0)  # long prompts take a while to send
        return convs, timing, self._harvest_client(rng, op)

    def _slow_drip(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        op = plan.operator
        assert op is not None
        lo, hi = self.cfg.slow_drip_share
        n = self.n_prompts(rng, plan.kind)
        while math.ceil(lo * n) > math.floor(hi * n):
            n += 1  # too few prompts for any whole number of harvesting ones in range
        share = float(rng.uniform(lo, hi))
        n_h = min(max(round(share * n), math.ceil(lo * n), 1), math.floor(hi * n))
        persona = _pick(rng, ("casual", "developer", "power_user"))
        organic = self.organic_for(rng, persona, n - n_h)
        excess = sum(len(c) for c in organic) - (n - n_h)
        while excess > 0 and organic:  # generators may overshoot by a follow-up or two
            last = organic[-1]
            cut = min(excess, len(last))
            del last[len(last) - cut :]
            if not last:
                organic.pop()
            excess -= cut
        convs = list(organic)
        for _ in range(n_h):
            if rng.random() < 0.7:
                text = self.cot_prompt(rng, op)
            else:
                text = self.sweep_prompt(rng, op, _pick(rng, ("math", "code", "reasoning")))
            convs.insert(int(rng.integers(len(convs) + 1)), [_Turn(text, harvest=True)])
        timing = self._human_timing(
            rng, self.window(rng, 0.5, 1.0), "general", weekend=0.8, session_convs=(1, 5)
        )
        ua_pools = [(_SDK_UAS, 0.4), (_APP_UAS, 0.3), (_BROWSER_UAS, 0.3)]
        client = self.organic_client(rng, ua_pools, (1024, 2048, 4096), 0.5, system_p=0.15)
        if rng.random() < 0.5:
            client.harvest_max_tokens = op.max_tokens or (8192,)
        return convs, timing, client

    def _hydra_fleet(
        self, plan: _Plan, rng: np.random.Generator
    ) -> tuple[list[Conv], _Timing, _Client]:
        op = plan.operator
        assert op is not None
        lo, hi = self.cfg.hydra_prompts
        n = int(rng.integers(lo, hi + 1))
        convs: list[Conv] = [[_Turn(self.cot_prompt(rng, op), harvest=True)] for _ in range(n)]
        if op.dilution > 0:
            # A cover prompt or two, swapped in so the count stays within hydra_prompts.
            for _ in range(min(n - 1, int(rng.integers(1, 3)))):
                convs[int(rng.integers(n))] = [_Turn(self.doc(_pick(rng, self.pools.short_chat)))]
        w0, w1 = op.window
        start = float(rng.uniform(w0, w1))
        window = (start, min(self.t1, start + float(rng.uniform(0.5, 3.0)) * 3600 * max(1, n / 10)))
        timing = _Timing(
            "human",
            window,
            tz=op.tz,
            diurnal="flat",
            weekend=1.0,
            think=op.gap * float(rng.lognormal(0, 0.3)),
            typing=False,
            session_convs=(3, 15),
        )
        if not op.humanlike:
            timing = _Timing(op.style, window, think=op.gap)
        client = self._harvest_client(rng, op)
        client.uas = (_pick(rng, op.uas),)  # a few user agents shared across the fleet
        return convs, timing, client


# --------------------------------------------------------------------------- planning


def _allocate(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``total`` by weight; every positive kind gets one if it fits."""
    kinds = [k for k, w in weights.items() if w > 0]
    if total <= 0 or not kinds:
        return dict.fromkeys(weights, 0)
    w = _norm([weights[k] for k in kinds])
    raw = w * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - int(counts.sum())]:
        counts[i] += 1
    if total >= len(kinds):
        for i in range(len(kinds)):
            while counts[i] == 0:
                j = int(np.argmax(counts))
                counts[j] -= 1
                counts[i] += 1
    out = dict.fromkeys(weights, 0)
    out.update({k: int(c) for k, c in zip(kinds, counts, strict=True)})
    return out


def _fleet_sizes(config: SimConfig, rng: np.random.Generator) -> list[int]:
    lo, hi = config.hydra_fleet_size
    if config.hydra_fleets is not None:
        sizes = [
            int(np.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
            for _ in range(config.hydra_fleets)
        ]
        sizes = [min(max(s, lo), hi) for s in sizes]
        while sum(sizes) > config.n_accounts:  # shrink the largest until they fit
            i = int(np.argmax(sizes))
            sizes[i] -= 1
        return sizes
    budget = config.n_hydra_accounts_max()
    sizes = []
    while budget >= lo:
        s = int(np.exp(rng.uniform(math.log(lo), math.log(min(hi, budget) + 1))))
        s = min(max(s, lo), min(hi, budget))
        if budget - s < lo and budget <= hi:
            s = budget  # no room for another fleet: take the rest
        sizes.append(s)
        budget -= s
    return sizes


class _Planner:
    """Decides every account's kind, operator, campaign and id before any content is drawn."""

    def __init__(self, config: SimConfig, builder: _Builder, rng: np.random.Generator):
        self.cfg = config
        self.b = builder
        self.rng = rng
        self.n_campaigns = 0

    def operator(self, kind: str) -> _Operator:
        rng = self.rng
        cfg = self.cfg
        self.n_campaigns += 1
        humanlike = rng.random() < cfg.humanlike_attacker_prob
        structured_only = rng.random() < 0.3
        families: tuple[ph.PhrasingFamily, ...] = (
            ("structured",) if structured_only else ph.ELICITATION_FAMILIES
        )
        wrapper = ph.Wrapper.pick(
            rng,
            families,
            k=int(rng.integers(1, 6)),
            noise=0.15 if humanlike else 0.0,
            exclude_step_by_step=structured_only or rng.random() < 0.3,
        )
        if kind == "hydra_fleet" and rng.random() < 0.5:
            wrapper = wrapper.freeze(rng)  # one literal template per phrasing, shared by the fleet
        if kind == "capability_sweep":
            domains: tuple[str, ...] = ("math", "code", "reasoning", "longdoc", "agentic")
            if rng.random() < 0.3:
                keep = rng.choice(5, size=int(rng.integers(3, 5)), replace=False)
                domains = tuple(domains[int(i)] for i in sorted(keep))
        elif rng.random() < 0.3:
            domains = (str(_pick(rng, ("math", "reasoning", "code"))),)
        else:
            domains = ("math", "reasoning", "code")
        domain_p = rng.dirichlet(np.ones(len(domains)))
        sweep_phrasings = {
            d: tuple(
                x
                for x in ph.by_family(f"sweep_{d}")  # type: ignore[arg-type]
                if rng.random() < 0.7
            )
            or ph.by_family(f"sweep_{d}")  # type: ignore[arg-type]
            for d in ("math", "code", "reasoning", "longdoc", "agentic")
        }
        u = rng.random()
        if u < 0.5:
            max_tokens: tuple[int, ...] = (
                int(_pick(rng, (4096, 8000, 8192, 16000, 16384, 32000, 32768))),
            )
        elif u < 0.65:
            max_tokens = tuple(int(x) for x in rng.choice([4096, 8192, 16384, 32768], size=3))
        elif u < 0.8:
            max_tokens = (int(_pick(rng, (1024, 1500, 2048))),)
        else:
            max_tokens = ()  # omitted
        style: TimingStyle = "steady" if rng.random() < 0.5 else "bursty"
        if humanlike:
            uas = tuple(_ua(rng, _BROWSER_UAS) for _ in range(int(rng.integers(1, 3))))
        else:
            uas = tuple(_ua(rng, _SDK_UAS) for _ in range(int(rng.integers(1, 4))))
        model_pref = ("atlas-think", "atlas-pro") if rng.random() < 0.8 else MODELS
        models: tuple[str, ...] = () if rng.random() < 0.1 else tuple(model_pref)
        system = None
        if rng.random() < 0.35:
            system = ph.choose(rng, ph.by_family("system_harvest")).render(rng)
        dilution = 0.0
        if rng.random() < cfg.dilution_prob:
            dilution = float(rng.uniform(*cfg.dilution_share))
        span = self.b.t1 - self.b.t0
        w_len = span * float(rng.uniform(0.05, 0.25))
        w0 = self.b.t0 + float(rng.uniform(0, span - w_len))
        return _Operator(
            campaign=f"c-{self.n_campaigns}",
            kind=kind,
            wrapper=wrapper,
            domains=domains,
            domain_p=domain_p,
            rotate_block=0 if rng.random() < 0.3 else int(rng.integers(1, 6)),
            rubric_p=float(rng.choice([0.0, 0.1, 0.3], p=[0.4, 0.35, 0.25])),
            fewshot_p=float(rng.choice([0.0, 0.3], p=[0.6, 0.4])),
            humanlike=humanlike,
            style=style,
            gap=self.b.script_gap(rng),
            tz=self.b.tz(rng),
            uas=uas,
            ip_prefixes=tuple(_prefix24(rng) for _ in range(int(rng.integers(1, 4)))),
            models=models,
            max_tokens=max_tokens,
            max_tokens_omit=0.0 if rng.random() < 0.8 else 0.3,
            system=system,
            dilution=dilution,
            sweep_phrasings=sweep_phrasings,
            window=(w0, w0 + w_len),
        )

    def plans(self) -> list[_Plan]:
        cfg, rng = self.cfg, self.rng
        sizes = _fleet_sizes(cfg, rng)
        counts = _allocate(cfg.n_accounts - sum(sizes), cfg.kind_mix)
        plans = [_Plan(kind) for kind in MIX_KINDS for _ in range(counts[kind])]
        for size in sizes:
            plans += [_Plan("hydra_fleet", operator=None) for _ in range(size)]
        order = rng.permutation(len(plans))
        plans = [plans[int(i)] for i in order]
        fleet_ops = [self.operator("hydra_fleet") for _ in sizes]
        hydra = [p for p in plans if p.kind == "hydra_fleet"]  # already in shuffled order
        bounds = np.cumsum([0, *sizes])
        for j, p in enumerate(hydra):
            p.operator = fleet_ops[int(np.searchsorted(bounds, j, side="right")) - 1]
        open_ops: dict[str, _Operator] = {}
        n_viral = counts["organic_viral"]
        moments = self.viral_moments(max(1, n_viral // 8)) if n_viral else []
        n_companies = 0
        last_company: int | None = None
        seen: set[str] = set()
        vi = 0
        for p in plans:
            while True:
                aid = _hex_id(rng, "a-", 10)
                if aid not in seen:
                    seen.add(aid)
                    break
            p.account_id = aid
            if p.kind in ("cot_harvest", "capability_sweep", "longctx_sweep", "slow_drip"):
                op = open_ops.get(p.kind)
                if op is None or op.n_accounts >= 5 or rng.random() >= cfg.campaign_reuse_prob:
                    op = open_ops[p.kind] = self.operator(p.kind)
                p.operator = op
            if p.operator is not None:
                p.operator.n_accounts += 1
                p.campaign = p.operator.campaign
            if p.kind == "organic_viral":
                p.viral = moments[vi % len(moments)]
                vi += 1
            if p.kind == "organic_batch_pipeline":
                if last_company is not None and rng.random() < 0.25:
                    p.company = last_company  # a second account of the same company (staging)
                else:
                    n_companies += 1
                    p.company = last_company = n_companies
        return plans

    def viral_moments(self, n: int) -> list[tuple[ph.Phrasing, float]]:
        topics = ph.by_family("viral")
        idx = self.rng.choice(len(topics), size=min(n, len(topics)), replace=False)
        span = self.b.t1 - self.b.t0
        return [
            (topics[int(i)], self.b.t0 + float(self.rng.uniform(0, max(1.0, span - 2 * 86_400))))
            for i in idx
        ]


# --------------------------------------------------------------------------- public API


def _format_ts(t: float, precision: TsPrecision) -> str:
    if precision == "ms":
        ms = round(t * 1000)
        dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
        return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    return datetime.fromtimestamp(math.floor(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def simulate(config: SimConfig, corpora: Corpora, *, progress: bool = False) -> Simulation:
    """Simulate every account of ``config`` from ``corpora``; deterministic for a seed.

    Raises ValueError if the corpora lack a family that a kind with positive weight needs.
    """
    rng = np.random.default_rng(config.seed)
    t0 = _parse_start(config.start)
    pools = _Pools(corpora)
    used = [k for k, w in config.kind_mix.items() if w > 0]
    if config.n_hydra_accounts_max():
        used.append("hydra_fleet")
    missing = pools.missing_for(used)
    if missing:
        raise ValueError("the corpora lack " + "; ".join(missing))
    builder = _Builder(config, pools, t0)
    builder.campus_prefixes = [_random_ip(rng).rsplit(".", 2)[0] for _ in range(3)]
    plans = _Planner(config, builder, rng).plans()
    rngs = rng.spawn(len(plans))
    rows: list[tuple[float, int, int, dict[str, Any], bool]] = []
    labels: list[dict[str, Any]] = []
    for i, (plan, arng) in enumerate(
        tqdm(list(zip(plans, rngs, strict=True)), desc="simulating accounts", disable=not progress)
    ):
        convs, times, client = builder.build(plan, arng)
        seq = 0
        for conv, conv_times in zip(convs, times, strict=True):
            extra = client.fields(arng, any(t.harvest for t in conv))
            conv_id = _hex_id(arng, "conv-", 12) if client.conv_ids else None
            for turn, t in zip(conv, conv_times, strict=True):
                rec: dict[str, Any] = {
                    "account_id": plan.account_id,
                    "ts": "",
                    "prompt": turn.prompt,
                }
                if conv_id is not None:
                    rec["conversation_id"] = conv_id
                rec.update(extra)
                rows.append((t, i, seq, rec, turn.harvest))
                seq += 1
        labels.append(
            {
                "account_id": plan.account_id,
                "label": int(plan.kind in HARVEST_KINDS),
                "campaign": plan.campaign,
                "kind": plan.kind,
            }
        )
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    events, flags = [], []
    for t, _, _, rec, harvest in rows:
        rec["ts"] = _format_ts(t, config.ts_precision)
        events.append(rec)
        flags.append(harvest)
    harvest_prompts: dict[str, set[str]] = {}
    for rec, harvest in zip(events, flags, strict=True):
        if harvest:
            harvest_prompts.setdefault(rec["account_id"], set()).add(prompt_digest(rec["prompt"]))
    for lab in labels:
        if lab["label"] == 1:  # which of its prompts harvest: what training learns prompts from
            lab["harvest_prompts"] = sorted(harvest_prompts.get(lab["account_id"], ()))
    labels.sort(key=lambda lab: lab["account_id"])
    return Simulation(config, events, labels, flags)


#: Characters that JSON allows raw but that ``str.splitlines`` and some JSON Lines
#: readers treat as line breaks; written escaped so one record is always one line.
_LINE_BREAKS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def _json_line(record: dict[str, Any]) -> bytes:
    data = orjson.dumps(record)
    for raw, escaped in _LINE_BREAKS:
        data = data.replace(raw, escaped)
    return data + b"\n"


def write_simulation(sim: Simulation, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/events.jsonl`` and ``out_dir/labels.jsonl``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path, labels_path = out_dir / "events.jsonl", out_dir / "labels.jsonl"
    for path, records in ((events_path, sim.events), (labels_path, sim.labels)):
        with path.open("wb") as fh:
            for rec in records:
                fh.write(_json_line(rec))
    return events_path, labels_path


def run_simulate(
    accounts: int,
    seed: int,
    out: Path | str,
    corpora_dir: Path | str | None = None,
    *,
    include_sources: Sequence[str] | None = None,
    exclude_sources: Sequence[str] = (),
    progress: bool = True,
    **overrides: Any,
) -> Simulation:
    """Load corpora, simulate ``accounts`` accounts and write them to ``out``.

    ``overrides`` are :class:`SimConfig` fields. This is what ``distillwatch simulate``
    calls; errors are ValueError / FileNotFoundError with a one-line reason.

    Example::

        run_simulate(500, seed=1, out="sim", corpora_dir="../shared/corpora",
                     exclude_sources=("gsm8k", "bbh"))
    """
    known = {f.name for f in dataclasses.fields(SimConfig)} - {"n_accounts", "seed"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown simulation options {unknown}; expected some of {sorted(known)}")
    config = SimConfig(n_accounts=accounts, seed=seed, **overrides)
    corpora = Corpora.load(
        corpora_dir, include_sources=include_sources, exclude_sources=exclude_sources
    )
    sim = simulate(config, corpora, progress=progress)
    write_simulation(sim, Path(out))
    return sim


__all__ = [
    "DEFAULT_KIND_MIX",
    "DEFAULT_PROMPTS",
    "HARVEST_KINDS",
    "KINDS",
    "MIX_KINDS",
    "MODELS",
    "ORGANIC_KINDS",
    "SimConfig",
    "Simulation",
    "run_simulate",
    "simulate",
    "write_simulation",
]
