"""Prompt corpora for the traffic simulator: loading, families and source filtering.

What it knows: the corpus layout (one gzip JSON Lines file per family, records
``{"text", "source", "license", "group", ...}``, optional ``turn`` and extra keys), where the
committed permissive subset lives (``data_samples/corpora``), how to hold whole source
families out (``exclude_sources=("gsm8k", "bbh")`` drops ``gsm8k:train``, ``bbh:navigate``…)
and how to regroup multi-turn conversations by ``group`` / ``turn``.

What it does not know: how prompts are wrapped, timed or labelled (see ``phrasing`` and
``simulator``), nor anything about the detector.

Example::

    corpora = Corpora.load("../shared/corpora", exclude_sources=("gsm8k", "bbh"))
    print(corpora.counts())            # {"organic_chat": 27125, "probe_math": 14909, ...}
    for turns in corpora.conversations("organic_chat")[:3]:
        print([r.text[:40] for r in turns])
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

Family = Literal[
    "organic_chat",
    "organic_longdoc",
    "probe_math",
    "probe_code",
    "probe_reasoning",
    "cot_templates",
    "longctx",
]

#: Every prompt family, in the order the corpus README lists them.
FAMILIES: tuple[Family, ...] = (
    "organic_chat",
    "organic_longdoc",
    "probe_math",
    "probe_code",
    "probe_reasoning",
    "cot_templates",
    "longctx",
)

_CORE_KEYS = frozenset({"text", "source", "license", "group", "turn"})


def default_corpora_dir() -> Path:
    """The committed permissive subset, ``<repo>/data_samples/corpora``."""
    return Path(__file__).resolve().parents[1] / "data_samples" / "corpora"


@dataclass(frozen=True, slots=True)
class Record:
    """One corpus text with its provenance; ``extra`` holds source-specific keys (``id``…)."""

    text: str
    source: str
    license: str
    group: str | None = None
    turn: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source_family(self) -> str:
        """The part of ``source`` before the first ``:`` (``gsm8k:train`` → ``gsm8k``)."""
        return self.source.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        """The record as the corpus files store it (core keys first, then extras)."""
        out: dict[str, Any] = {
            "text": self.text,
            "source": self.source,
            "license": self.license,
            "group": self.group,
        }
        if self.turn is not None:
            out["turn"] = self.turn
        out.update(self.extra)
        return out


def source_matches(source: str, patterns: Iterable[str]) -> bool:
    """True if ``source`` is one of ``patterns`` or lies under one (``bbh`` covers ``bbh:x``)."""
    return any(source == p or source.startswith(p + ":") for p in patterns)


def _parse_record(raw: Any, path: Path, line_no: int) -> Record:
    where = f"{path}:{line_no}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    for key in ("text", "source"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"{where}: field '{key}' must be a string")
    license_ = raw.get("license", "")
    if not isinstance(license_, str):
        raise ValueError(f"{where}: field 'license' must be a string")
    group = raw.get("group")
    if group is not None and not isinstance(group, str):
        raise ValueError(f"{where}: field 'group' must be a string or null")
    turn = raw.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int)):
        raise ValueError(f"{where}: field 'turn' must be an integer")
    extra = {k: v for k, v in raw.items() if k not in _CORE_KEYS}
    return Record(raw["text"], raw["source"], license_, group, turn, extra)


def read_family_file(path: Path) -> list[Record]:
    """Read one family file (``.jsonl.gz`` or ``.jsonl``); errors name the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    records: list[Record] = []
    with opener(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc})") from None
            records.append(_parse_record(raw, path, line_no))
    return records


class Corpora:
    """Prompt records by family. Build with :meth:`load` or :meth:`from_records`.

    Missing families are empty, not errors: the simulator says which kinds need which
    family when one it needs is empty.
    """

    def __init__(self, families: Mapping[str, Sequence[Record]], root: Path | None = None):
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown corpus families {unknown}; expected some of {FAMILIES}")
        self._families: dict[str, list[Record]] = {f: list(families.get(f, ())) for f in FAMILIES}
        self.root = root

    @classmethod
    def load(
        cls,
        directory: str | Path | None = None,
        *,
        include_sources: Iterable[str] | None = None,
        exclude_sources: Iterable[str] = (),
        families: Iterable[Family] = FAMILIES,
    ) -> Corpora:
        """Load ``<directory>/<family>.jsonl.gz`` (default: the committed subset).

        ``include_sources`` keeps only matching sources, ``exclude_sources`` then drops
        matching ones; a pattern matches a source or its ``:``-children.
        """
        root = Path(directory) if directory is not None else default_corpora_dir()
        if not root.is_dir():
            raise FileNotFoundError(f"corpora directory not found: {root}")
        wanted = list(families)
        bad = [f for f in wanted if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown corpus families {bad}; expected some of {FAMILIES}")
        loaded: dict[str, list[Record]] = {}
        for fam in wanted:
            for name in (f"{fam}.jsonl.gz", f"{fam}.jsonl"):
                path = root / name
                if path.is_file():
                    loaded[fam] = read_family_file(path)
                    break
        if not loaded:
            raise FileNotFoundError(
                f"no corpus files in {root}; expected files like {FAMILIES[0]}.jsonl.gz"
            )
        return cls(loaded, root).filter(include_sources, exclude_sources)

    @classmethod
    def from_records(cls, families: Mapping[str, Iterable[Record]]) -> Corpora:
        """Build in memory (tests, notebooks)."""
        return cls({k: list(v) for k, v in families.items()})

    def filter(
        self,
        include_sources: Iterable[str] | None = None,
        exclude_sources: Iterable[str] = (),
    ) -> Corpora:
        """A copy keeping sources that match ``include_sources`` (all if None) minus excludes."""
        inc = None if include_sources is None else tuple(include_sources)
        exc = tuple(exclude_sources)
        if inc is None and not exc:
            return self
        kept: dict[str, list[Record]] = {}
        for fam, records in self._families.items():
            kept[fam] = [
                r
                for r in records
                if (inc is None or source_matches(r.source, inc))
                and not source_matches(r.source, exc)
            ]
        return Corpora(kept, self.root)

    def family(self, name: Family) -> list[Record]:
        """All records of one family (empty if the family was not loaded)."""
        if name not in self._families:
            raise KeyError(f"unknown corpus family {name!r}; expected one of {FAMILIES}")
        return self._families[name]

    __getitem__ = family

    def counts(self) -> dict[str, int]:
        """Number of records per family."""
        return {f: len(r) for f, r in self._families.items()}

    def sources(self, name: Family | None = None) -> dict[str, int]:
        """Number of records per ``source`` (in one family, or all), in first-seen order."""
        out: dict[str, int] = {}
        fams = [name] if name is not None else list(FAMILIES)
        for fam in fams:
            for r in self.family(fam):
                out[r.source] = out.get(r.source, 0) + 1
        return out

    def conversations(self, name: Family = "organic_chat") -> list[list[Record]]:
        """Records regrouped into conversations (ordered by ``turn``); ungrouped ones alone.

        Conversations come in order of their first record in the file.
        """
        by_group: dict[str, list[Record]] = {}
        order: list[list[Record]] = []
        for r in self.family(name):
            if r.group is None:
                order.append([r])
                continue
            turns = by_group.get(r.group)
            if turns is None:
                turns = by_group[r.group] = []
                order.append(turns)
            turns.append(r)
        for turns in by_group.values():
            turns.sort(key=lambda r: -1 if r.turn is None else r.turn)
        return order

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items() if v)
        return f"Corpora({counts}, root={self.root})"
