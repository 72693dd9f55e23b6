"""Per-event behavioural features, computed causally and incrementally.

What it knows: how to turn one account's time-ordered events (plus their prompt
embeddings) into a `(T, F)` matrix of features where row ``t`` depends only on events
``0..t``: timing (gaps, bursts, regularity, time of day), size (prompt length, requested
``max_tokens``), conversation structure, elicitation / grading / answer-format phrasing,
reuse of the account's own templates and near-duplicates, and topic coverage. Batch and
online scoring share one code path: :class:`FeatureState` carries everything needed to
extend the features by one event, so the cost of a new event does not grow with history.

What it does not know: labels, the network, or other accounts.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import operator
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from model.events import AccountEvents
from model.lexicon import (
    CODE,
    ELICITATION,
    FORMAT,
    MATH,
    RUBRIC,
    SCRIPT_AGENT_RE,
    LexiconSet,
    scan_text,
)
from model.state_codec import StateFormatError, pack, unpack
from model.threads import one_thread

FEATURE_NAMES: tuple[str, ...] = (
    "is_first",
    "log_gap",
    "log_chars",
    "log_max_tokens",
    "max_tokens_missing",
    "conv_turn",
    "has_conversation",
    "elicitation",
    "rubric",
    "answer_format",
    "code",
    "math",
    "long_document",
    "has_system",
    "script_agent",
    "max_sim_prev",
    "mean_sim_prev",
    "template_reused",
    "share_template_reused",
    "share_elicitation",
    "share_rubric",
    "share_answer_format",
    "topic_new",
    "topics_covered",
    "topic_entropy",
    "burst_60s",
    "burst_1h",
    "gap_regularity",
    "hour_concentration",
    "log_position",
    "hour_sin",
    "hour_cos",
    "mean_log_max_tokens",
    "same_conversation",
    "near_duplicate",
    "share_near_duplicate",
    # context reuse (FeatureConfig.context_reuse; last, so that models without them read
    # the leading columns)
    "context_reused",
    "log_context_reused",
    "share_context_resent",
    "log_context_sources",
)
N_FEATURES = len(FEATURE_NAMES)
#: The features of :attr:`FeatureConfig.context_reuse`, the last columns of FEATURE_NAMES.
CONTEXT_FEATURES: tuple[str, ...] = FEATURE_NAMES[-4:]
_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}

LONG_DOC_CHARS = 3_000
MAX_WRAPPER_KEYS = 8_192  # per account; bounds the state of very long streams
#: Passages of a prompt that context reuse compares: the runs of text between sentence
#: marks (. ! ?) and line ends, of at least this many characters, in prompts of at least
#: CONTEXT_MIN_PROMPT characters.
CONTEXT_MIN_PASSAGE = 40
CONTEXT_MIN_PROMPT = 200
#: Characters of earlier-sent passages that make a prompt count as re-sending a document.
CONTEXT_RESENT_CHARS = 1_000
MAX_CONTEXT_KEYS = 16_384  # passages remembered per account (the oldest are forgotten)
MAX_CONTEXT_SOURCES = 4_096  # conversations counted as sources of re-sent context
_PASSAGE_SPLIT_RE = re.compile(r"[.!?\n]\s*")  # a third of the time of a sentence lookbehind
# Words, numbers and single symbols. The letters are what ``[a-z]`` matches with IGNORECASE
# (the tests check it), spelled out because a case-folding scan is slower.
_LETTERS = "a-zA-Z\u0130\u0131\u017f\u212a"
_WORD_RE = re.compile(rf"[{_LETTERS}]+|\d+|[^\s{_LETTERS}\d]")
_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")
_SPACE_RE = re.compile(r"\s")


@dataclass(frozen=True)
class FeatureConfig:
    """How much history the incremental features keep."""

    window: int = 64  # earlier prompts compared for similarity / near duplicates
    skeleton_words: int = 8  # words at each end of a prompt that form its wrapper key
    near_duplicate_sim: float = 0.92
    gap_window: int = 16
    #: Compute the context-reuse features (CONTEXT_FEATURES): how much of a prompt repeats
    #: passages the account already sent in another conversation. Off by default: the
    #: held-out protocol scored the recipe with them below the shipped model's
    #: (``model/default/HISTORY.md``, "Context reuse"). Model directories from before they
    #: existed read as False.
    context_reuse: bool = False
    #: Re-sent characters below this count as none (a fixed instruction or wrapper sentence
    #: repeated in every prompt is template reuse, not a document sent again). 500 over 0 on
    #: development data (``model/default/HISTORY.md``, "Context reuse").
    context_min_chars: int = 500

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 4096:
            raise ValueError(f"FeatureConfig.window must be in [1, 4096], got {self.window}")
        if not 2 <= self.skeleton_words <= 64:
            raise ValueError("FeatureConfig.skeleton_words must be in [2, 64]")
        if not 0.0 < self.near_duplicate_sim <= 1.0:
            raise ValueError("FeatureConfig.near_duplicate_sim must be in (0, 1]")
        if self.gap_window < 2:
            raise ValueError("FeatureConfig.gap_window must be >= 2")
        m = self.context_min_chars
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= 1_000_000:
            raise ValueError(
                f"FeatureConfig.context_min_chars must be in [0, 1000000], got "
                f"{self.context_min_chars!r}"
            )
        if not isinstance(self.context_reuse, bool):
            raise ValueError(
                f"FeatureConfig.context_reuse must be true or false, got {self.context_reuse!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # flat: no deep copy

    @property
    def names(self) -> tuple[str, ...]:
        """The features this configuration computes, in column order."""
        return FEATURE_NAMES if self.context_reuse else FEATURE_NAMES[: -len(CONTEXT_FEATURES)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        return cls(**{"context_reuse": False, **d})  # saved before context reuse existed


def stable_hash(words: tuple[str, ...]) -> int:
    """A 63-bit hash that is the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def wrapper_keys(text: str, n_words: int = 8) -> tuple[int, int] | None:
    """Hashes of the first and last ``n_words`` words, numbers masked; None for short prompts.

    Two prompts that put different content into the same wrapper share a head or tail key.
    """
    return _scanned_wrapper_keys(scan_text(text), n_words)


def _words(scanned: str) -> list[str]:
    return _WORD_RE.findall(_NUM_RE.sub("0", scanned))


def _scanned_wrapper_keys(scanned: str, n_words: int) -> tuple[int, int] | None:
    """:func:`wrapper_keys` of a :func:`scan_text` result.

    Long texts are split into words only near their ends: a cut at a whitespace character
    changes no word and no masked number, since neither contains whitespace. The answer is
    the same as splitting the whole text (the tests compare both).
    """
    head_chars, tail_chars = 18 * n_words, 8 * n_words  # room for 3n and n words
    if len(scanned) > head_chars + tail_chars + 4 * n_words:
        cut = _SPACE_RE.search(scanned, head_chars)
        start = _SPACE_RE.search(scanned, len(scanned) - tail_chars)
        if cut is not None and start is not None:
            head = _words(scanned[: cut.start()])
            tail = _words(scanned[start.start() :])
            if len(head) >= 3 * n_words and len(tail) >= n_words:
                return _keys(head, tail, n_words)
    words = _words(scanned)
    if len(words) < 3 * n_words:
        return None
    return _keys(words, words, n_words)


def _keys(head: list[str], tail: list[str], n_words: int) -> tuple[int, int]:
    return stable_hash(("h", *head[:n_words])), stable_hash(("t", *tail[-n_words:]))


def passage_keys(scanned: str) -> tuple[tuple[int, int], ...]:
    """``(hash, characters)`` of the passages of a :func:`scan_text` result that context
    reuse compares (CONTEXT_MIN_PASSAGE; none for a prompt under CONTEXT_MIN_PROMPT).
    The same document pasted around a different question gives the same keys, wherever
    the question goes."""
    if len(scanned) < CONTEXT_MIN_PROMPT:
        return ()
    out = []
    for part in _PASSAGE_SPLIT_RE.split(scanned):
        if len(part) >= CONTEXT_MIN_PASSAGE:
            digest = hashlib.blake2b(part.encode(), digest_size=8).digest()
            out.append((int.from_bytes(digest, "big") >> 1, len(part)))
    return tuple(out)


@dataclass
class TextFlags:
    """Lexical facts of one prompt (cheap; no embedding needed)."""

    elicitation: bool
    rubric: bool
    answer_format: bool
    code: bool
    math: bool

    @classmethod
    def of(cls, text: str) -> TextFlags:
        return cls(*_LEXICONS.search(scan_text(text)))


# the flags' lexicons in field order, asked together (one pre-check for all: faster)
_LEXICONS = LexiconSet((ELICITATION, RUBRIC, FORMAT, CODE, MATH))


class TextFacts(NamedTuple):
    """What the features read from a prompt's text alone (no embedding, no history)."""

    chars: int
    elicitation: bool
    rubric: bool
    answer_format: bool
    code: bool
    math: bool
    wrapper: tuple[int, int] | None  # (head, tail) keys of :func:`wrapper_keys`
    passages: tuple[tuple[int, int], ...] = ()  # :func:`passage_keys`, when asked for

    @classmethod
    def of(cls, text: str, n_words: int = 8, passages: bool = False) -> TextFacts:
        scanned = scan_text(text)  # lower-cased once for the lexicons and the wrapper keys
        elicitation, rubric, answer_format, code, math_ = _LEXICONS.search(scanned)
        wrapper = _scanned_wrapper_keys(scanned, n_words)
        keys = passage_keys(scanned) if passages else ()
        return cls(len(text), elicitation, rubric, answer_format, code, math_, wrapper, keys)


@dataclass
class FeatureState:
    """Everything needed to extend an account's features by one event (bounded size)."""

    config: FeatureConfig
    n_topics: int
    dim: int
    n: int = 0
    last_ts: float = math.nan
    last_conversation: str | None = None
    recent_ts: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    recent_log_gaps: deque[float] = field(default_factory=deque)
    recent_emb: Any = None  # (W, D) ring of recent embeddings
    n_emb: int = 0
    head_keys: dict[int, int] = field(default_factory=dict)  # wrapper key → prompts using it
    tail_keys: dict[int, int] = field(default_factory=dict)
    #: passage key → the conversation that first sent it (insertion order: oldest first)
    context_keys: dict[int, int] = field(default_factory=dict)
    #: conversations whose passages a later conversation re-sent (a fixed preamble sent in
    #: every prompt has one source; a sweep re-sending document after document, many)
    context_sources: dict[int, None] = field(default_factory=dict)
    conv_turns: dict[str, int] = field(default_factory=dict)
    topic_counts: Any = None  # (K,) prompts per topic
    counts: dict[str, float] = field(default_factory=dict)
    hour_cos: float = 0.0
    hour_sin: float = 0.0
    first_ts: float = math.nan
    ua_script: int = 0

    def __post_init__(self) -> None:
        if self.recent_emb is None:
            self.recent_emb = np.zeros((self.config.window, self.dim), dtype=np.float32)
        if self.topic_counts is None:
            self.topic_counts = np.zeros(self.n_topics, dtype=np.float64)
        self.recent_log_gaps = deque(self.recent_log_gaps, maxlen=self.config.gap_window)
        for key in (
            "elicitation",
            "rubric",
            "answer_format",
            "template",
            "near_dup",
            "log_max_tokens",
            "n_max_tokens",
            "long",
            "code",
            "math",
            "max_tokens_sum",
            "topics_covered",
            "topic_clogc",
            "context_resent",
        ):
            self.counts.setdefault(key, 0.0)

    # -- storage (the service's account store) ------------------------------------------------

    def to_bytes(self, *, ring: bool = True) -> bytes:
        """The state as bytes (layout in ``model/state_codec.py``; exact: nothing is rounded).

        ``ring=False`` leaves the embeddings ring out (most of the bytes: up to ``window``
        float32 vectors): the caller stores it slot by slot (:meth:`ring_rows`), writing
        only the slots an update changed, and hands it back to :meth:`from_bytes`.
        """
        meta = {
            "config": self.config.to_dict(),
            "n_topics": self.n_topics,
            "dim": self.dim,
            "n": self.n,
            "last_ts": self.last_ts,
            "first_ts": self.first_ts,
            "last_conversation": self.last_conversation,
            "n_emb": self.n_emb,
            "conv_turns": list(self.conv_turns.items()),  # insertion order decides eviction
            "counts": self.counts,
            "hour_cos": self.hour_cos,
            "hour_sin": self.hour_sin,
            "ua_script": self.ua_script,
            "ring": "inline" if ring else "external",
        }
        arrays = {
            "recent_ts": np.fromiter(self.recent_ts, dtype="<f8", count=len(self.recent_ts)),
            "recent_log_gaps": np.fromiter(
                self.recent_log_gaps, dtype="<f8", count=len(self.recent_log_gaps)
            ),
            "recent_emb": self.recent_emb[: min(self.n_emb, self.config.window) if ring else 0],
            "head_keys": _key_counts(self.head_keys),
            "tail_keys": _key_counts(self.tail_keys),
            "context_keys": _key_counts(self.context_keys),
            "context_sources": np.fromiter(self.context_sources, dtype="<i8"),
            "topic_counts": self.topic_counts,
        }
        return pack(_STATE_MAGIC, _STATE_VERSION, meta, arrays)

    def ring_rows(self, since_n_emb: int = 0) -> list[tuple[int, bytes]]:
        """``(slot, float32 bytes)`` of the ring slots written since the state had
        ``since_n_emb`` embeddings (0: every filled slot), for a ``to_bytes(ring=False)``."""
        window = self.config.window
        first = max(since_n_emb, self.n_emb - window, 0)
        rows = []
        for k in range(first, self.n_emb):
            slot = k % window
            rows.append((slot, self.recent_emb[slot].astype("<f4", copy=False).tobytes()))
        return rows

    @staticmethod
    def ring_is_external(data: bytes) -> bool:
        """Whether a stored state was written with ``to_bytes(ring=False)``."""
        if data[:4] == b"PK\x03\x04":
            return False
        _, meta, _ = unpack(data, _STATE_MAGIC, (_STATE_VERSION,), "feature state")
        return meta.get("ring") == "external"

    @classmethod
    def from_bytes(
        cls, data: bytes, ring: Sequence[tuple[int, bytes]] | None = None
    ) -> FeatureState:
        """Rebuild a state from :meth:`to_bytes` (or from the version-1 ``np.savez`` layout).

        A state written with ``ring=False`` needs its ring rows (``(slot, bytes)`` as
        :meth:`ring_rows` gave them, any order); every filled slot must be there.
        """
        if data[:4] == b"PK\x03\x04":  # version 1 (a zip file); read so stored accounts live on
            return cls._from_npz(data)
        _, meta, z = unpack(data, _STATE_MAGIC, (_STATE_VERSION,), "feature state")
        try:
            config = FeatureConfig.from_dict(meta.pop("config"))
            emb = np.zeros((config.window, meta["dim"]), dtype=np.float32)
            if meta.pop("ring", "inline") == "external":
                _fill_ring(emb, ring, min(int(meta["n_emb"]), config.window))
            else:
                emb[: len(z["recent_emb"])] = z["recent_emb"]
            return cls(
                config=config,
                recent_ts=deque(z["recent_ts"].tolist(), maxlen=256),
                recent_log_gaps=deque(z["recent_log_gaps"].tolist()),
                recent_emb=emb,
                head_keys=dict(z["head_keys"].tolist()),
                tail_keys=dict(z["tail_keys"].tolist()),
                context_keys=dict(z["context_keys"].tolist()) if "context_keys" in z else {},
                context_sources=dict.fromkeys(z["context_sources"].tolist())
                if "context_sources" in z
                else {},
                topic_counts=z["topic_counts"].astype(np.float64),
                conv_turns=dict(meta.pop("conv_turns")),
                **meta,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"feature state: inconsistent fields ({exc!r})") from exc

    @classmethod
    def _from_npz(cls, data: bytes) -> FeatureState:
        """The version-1 layout (``np.savez``, embeddings ring in float16)."""
        import json

        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            meta = json.loads(z["meta"].tobytes().decode())
            config = FeatureConfig.from_dict(meta.pop("config"))
            emb = np.zeros((config.window, meta["dim"]), dtype=np.float32)
            stored = z["recent_emb"].astype(np.float32)
            emb[: len(stored)] = stored
            return cls(
                config=config,
                recent_ts=deque(z["recent_ts"].tolist(), maxlen=256),
                recent_log_gaps=deque(z["recent_log_gaps"].tolist()),
                recent_emb=emb,
                head_keys={int(k): int(v) for k, v in z["head_keys"]},
                tail_keys={int(k): int(v) for k, v in z["tail_keys"]},
                topic_counts=z["topic_counts"].astype(np.float64),
                **meta,
            )
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"feature state: unreadable version-1 state ({exc!r})") from exc


_STATE_MAGIC = b"DWFS"
_STATE_VERSION = 2  # 1: np.savez with a float16 embeddings ring (still read)


def _fill_ring(emb: np.ndarray, rows: Sequence[tuple[int, bytes]] | None, n_filled: int) -> None:
    """Put stored ring rows into ``emb`` (W, D); every one of the ``n_filled`` slots needed."""
    if rows is None:
        raise StateFormatError("feature state: stored without its embeddings ring, none given")
    seen = set()
    for slot, blob in rows:
        if not 0 <= slot < len(emb) or len(blob) != 4 * emb.shape[1]:
            raise StateFormatError(
                f"feature state: ring slot {slot} of {len(blob)} bytes does not fit a "
                f"{emb.shape[0]} x {emb.shape[1]} ring"
            )
        emb[slot] = np.frombuffer(blob, dtype="<f4")
        seen.add(slot)
    if not seen.issuperset(range(n_filled)):
        missing = sorted(set(range(n_filled)) - seen)
        raise StateFormatError(f"feature state: ring slots {missing[:5]} are missing")


def _key_counts(keys: dict[int, int]) -> np.ndarray:
    """A wrapper-key map as an ``(n, 2)`` int64 array of (key, prompts) rows."""
    flat = np.fromiter(
        itertools.chain.from_iterable(keys.items()), dtype="<i8", count=2 * len(keys)
    )
    return flat.reshape(-1, 2)


class FeatureExtractor:
    """Turns events + embeddings into causal per-event features.

    ``topic_centroids`` (K, D) are the topic prototypes learned at training time (k-means
    over training embeddings); they let the features say how many distinct topics an
    account has covered.
    """

    def __init__(self, config: FeatureConfig, topic_centroids: np.ndarray):
        self.config = config
        self.topic_centroids = np.ascontiguousarray(topic_centroids, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.topic_centroids.shape[1])

    @property
    def n_topics(self) -> int:
        return int(self.topic_centroids.shape[0])

    @property
    def n_features(self) -> int:
        """Columns :meth:`transform` returns (:attr:`FeatureConfig.names`)."""
        return len(self.config.names)

    def new_state(self) -> FeatureState:
        return FeatureState(config=self.config, n_topics=self.n_topics, dim=self.dim)

    def transform(
        self, account: AccountEvents, embeddings: np.ndarray, state: FeatureState | None = None
    ) -> tuple[np.ndarray, FeatureState]:
        """Features for every event of ``account`` (continuing ``state`` if given).

        Returns the `(T, F)` float32 matrix and the state after the last event (``state``
        itself, extended in place, when one is given).
        """
        if len(account) != len(embeddings):
            raise ValueError(f"{len(account)} events but {len(embeddings)} embeddings")
        state = state if state is not None else self.new_state()
        n_words, passages = self.config.skeleton_words, self.config.context_reuse
        facts = [TextFacts.of(text, n_words, passages) for text in account.prompts]
        with one_thread():  # many tiny products: threads only add waiting
            topics = self._topics(embeddings)
            rows = self._extend(state, account, embeddings, topics, facts)
        return np.array(rows, dtype=np.float32).reshape(len(account), self.n_features), state

    def _topics(self, embeddings: np.ndarray) -> list[int]:
        if len(embeddings) == 0:
            return []
        return np.argmax(embeddings @ self.topic_centroids.T, axis=1).tolist()  # (T,)

    def _extend(
        self,
        s: FeatureState,
        acc: AccountEvents,
        embeddings: np.ndarray,
        topics: list[int],
        facts: list[TextFacts],
    ) -> list[list[float]]:
        """One row of features per event, extending ``s`` event by event.

        Row ``t`` reads only ``s`` (events before ``t``) and event ``t``. The topic counts
        are a list during the loop (numpy scalars are slow) and go back into ``s`` at the end.
        """
        cfg = self.config
        idx = _IDX
        window = cfg.window
        near_sim = cfg.near_duplicate_sim
        log_n_topics = math.log(self.n_topics)
        log1p_n_topics = math.log1p(self.n_topics)
        log1p_max_position = math.log1p(10_000)
        c = s.counts
        topic_counts = s.topic_counts.tolist()
        recent_emb = s.recent_emb
        recent_ts = s.recent_ts
        gaps = s.recent_log_gaps
        conv_turns = s.conv_turns
        head_keys, tail_keys = s.head_keys, s.tail_keys
        context_keys, context_sources = s.context_keys, s.context_sources
        context_reuse, context_min_chars = cfg.context_reuse, cfg.context_min_chars
        width = len(cfg.names)  # the context-reuse columns are the last ones
        ts_in_order = _is_sorted(recent_ts)
        max_tokens = acc.max_tokens.tolist()
        script_ua: dict[str, bool] = {}
        rows: list[list[float]] = []
        try:
            for t, ts in enumerate(acc.ts.astype(np.float64, copy=False).tolist()):
                fact = facts[t]
                emb = embeddings[t]
                row = [0.0] * width
                n_prev = s.n
                row[idx["is_first"]] = 1.0 if n_prev == 0 else 0.0
                if n_prev:
                    lg = math.log1p(max(ts - s.last_ts, 0.0))
                    row[idx["log_gap"]] = lg / 12.0
                    gaps.append(lg)
                else:
                    s.first_ts = ts
                chars = fact.chars
                row[idx["log_chars"]] = math.log1p(chars) / 10.0
                mt = max_tokens[t]
                if math.isnan(mt):
                    row[idx["max_tokens_missing"]] = 1.0
                else:
                    lmt = math.log1p(max(mt, 0.0))
                    row[idx["log_max_tokens"]] = lmt / 9.0
                    c["log_max_tokens"] += lmt
                    c["n_max_tokens"] += 1
                    c["max_tokens_sum"] += mt
                if c["n_max_tokens"]:
                    row[idx["mean_log_max_tokens"]] = c["log_max_tokens"] / c["n_max_tokens"] / 9.0
                conv = acc.conversation_id[t]
                if conv is not None:
                    turn = conv_turns.get(conv, 0)
                    row[idx["conv_turn"]] = math.log1p(turn) / 3.0
                    row[idx["has_conversation"]] = 1.0
                    row[idx["same_conversation"]] = 1.0 if conv == s.last_conversation else 0.0
                    if len(conv_turns) >= 1024 and conv not in conv_turns:
                        conv_turns.pop(next(iter(conv_turns)))
                    conv_turns[conv] = turn + 1
                s.last_conversation = conv
                row[idx["elicitation"]] = fact.elicitation
                row[idx["rubric"]] = fact.rubric
                row[idx["answer_format"]] = fact.answer_format
                row[idx["code"]] = fact.code
                row[idx["math"]] = fact.math
                long_doc = chars > LONG_DOC_CHARS
                row[idx["long_document"]] = long_doc
                row[idx["has_system"]] = 1.0 if acc.system[t] else 0.0
                ua = acc.user_agent[t]
                script = False
                if ua:
                    script = script_ua.get(ua)  # type: ignore[assignment]
                    if script is None:
                        script = script_ua[ua] = SCRIPT_AGENT_RE.search(ua) is not None
                row[idx["script_agent"]] = 1.0 if script else 0.0
                c["elicitation"] += fact.elicitation
                c["rubric"] += fact.rubric
                c["answer_format"] += fact.answer_format
                c["code"] += fact.code
                c["math"] += fact.math
                c["long"] += long_doc
                s.ua_script += int(script)

                # similarity to the account's own recent prompts
                k = min(s.n_emb, window)
                near_dup = False
                if k:
                    sims = recent_emb[:k] @ emb  # (k,)
                    mx = float(sims.max())
                    row[idx["max_sim_prev"]] = mx
                    row[idx["mean_sim_prev"]] = float(sims.sum()) / k
                    near_dup = mx >= near_sim
                row[idx["near_duplicate"]] = near_dup
                c["near_dup"] += near_dup
                recent_emb[s.n_emb % window] = emb
                s.n_emb += 1

                keys = fact.wrapper
                reused = False
                if keys is not None:
                    head, tail = keys
                    reused = head in head_keys or tail in tail_keys
                    for keymap, key in ((head_keys, head), (tail_keys, tail)):
                        if key in keymap or len(keymap) < MAX_WRAPPER_KEYS:
                            keymap[key] = keymap.get(key, 0) + 1
                row[idx["template_reused"]] = reused
                c["template"] += reused

                if context_reuse:  # passages this account already sent in another conversation
                    own = _conversation_key(conv, n_prev)
                    reused_chars = 0
                    origins = []
                    for key, length in fact.passages:  # against what came before this prompt
                        origin = context_keys.get(key, own)
                        if origin != own:
                            reused_chars += length
                            origins.append(origin)
                    for key, _ in fact.passages:
                        if key not in context_keys:
                            if len(context_keys) >= MAX_CONTEXT_KEYS:
                                del context_keys[next(iter(context_keys))]
                            context_keys[key] = own
                    if reused_chars < context_min_chars:
                        reused_chars = 0
                    elif reused_chars:
                        for origin in origins:
                            if origin not in context_sources:
                                if len(context_sources) >= MAX_CONTEXT_SOURCES:
                                    del context_sources[next(iter(context_sources))]
                                context_sources[origin] = None
                    row[idx["log_context_sources"]] = math.log1p(len(context_sources)) / 5.0
                    resent = reused_chars >= CONTEXT_RESENT_CHARS
                    row[idx["context_reused"]] = min(reused_chars / max(chars, 1), 1.0)
                    row[idx["log_context_reused"]] = math.log1p(reused_chars) / 10.0
                    c["context_resent"] += resent
                    row[idx["share_context_resent"]] = c["context_resent"] / (n_prev + 1)

                # topics
                topic = topics[t]
                ct = float(topic_counts[topic])
                if ct == 0:
                    row[idx["topic_new"]] = 1.0
                    c["topics_covered"] += 1
                topic_counts[topic] = ct + 1
                # entropy of topic counts, kept as sum(c log c): H = log N - sum(c log c) / N
                c["topic_clogc"] += (ct + 1) * math.log(ct + 1) - (ct * math.log(ct) if ct else 0.0)
                row[idx["topics_covered"]] = math.log1p(c["topics_covered"]) / log1p_n_topics
                total = n_prev + 1
                entropy = max(math.log(total) - c["topic_clogc"] / total, 0.0)
                row[idx["topic_entropy"]] = entropy / log_n_topics

                # timing
                if ts_in_order and recent_ts and ts < recent_ts[-1]:
                    ts_in_order = False  # a late event: count bursts the slow way from now on
                recent_ts.append(ts)
                n_within = _n_within_sorted if ts_in_order else _n_within
                row[idx["burst_60s"]] = math.log1p(n_within(recent_ts, ts, 60.0)) / 5.0
                row[idx["burst_1h"]] = math.log1p(n_within(recent_ts, ts, 3600.0)) / 6.0
                if len(gaps) >= 3:
                    mean = sum(gaps) / len(gaps)
                    std = math.sqrt(max(sum([x * x for x in gaps]) / len(gaps) - mean * mean, 0.0))
                    row[idx["gap_regularity"]] = min(std / (abs(mean) + 1e-3), 3.0) / 3.0
                hour = (ts % 86400.0) / 3600.0
                ang = 2.0 * math.pi * hour / 24.0
                sin, cos = math.sin(ang), math.cos(ang)
                row[idx["hour_sin"]] = sin
                row[idx["hour_cos"]] = cos
                s.hour_cos += cos
                s.hour_sin += sin

                s.n = n = n_prev + 1
                row[idx["hour_concentration"]] = math.hypot(s.hour_cos, s.hour_sin) / n
                row[idx["share_template_reused"]] = c["template"] / n
                row[idx["share_elicitation"]] = c["elicitation"] / n
                row[idx["share_rubric"]] = c["rubric"] / n
                row[idx["share_answer_format"]] = c["answer_format"] / n
                row[idx["share_near_duplicate"]] = c["near_dup"] / n
                row[idx["log_position"]] = math.log1p(n) / log1p_max_position
                s.last_ts = ts
                rows.append(row)
        finally:
            s.topic_counts[:] = topic_counts
        return rows


def _conversation_key(conversation: str | None, position: int) -> int:
    """A conversation as an int key; an event without one is a conversation of its own."""
    if conversation is None:
        return -1 - position
    return stable_hash(("c", conversation))


def _is_sorted(values: deque[float]) -> bool:
    return all(map(operator.le, values, itertools.islice(values, 1, None)))


def _n_within(recent: deque[float], ts: float, seconds: float) -> int:
    """How many earlier events (of the bounded recent ones) lie within ``seconds`` of ``ts``.

    Counts back from the newest until the first one older than that (late events included).
    """
    n = 0
    for x in reversed(recent):
        if ts - x > seconds:
            break
        n += 1
    return n - 1  # the event itself is already in ``recent``


def _n_within_sorted(recent: deque[float], ts: float, seconds: float) -> int:
    """:func:`_n_within` for time-ordered ``recent``: a binary search on the same test."""
    lo, hi = 0, len(recent)
    while lo < hi:
        mid = (lo + hi) // 2
        if ts - recent[mid] > seconds:
            lo = mid + 1
        else:
            hi = mid
    return len(recent) - lo - 1


def fit_topic_centroids(embeddings: np.ndarray, k: int = 32, seed: int = 0) -> np.ndarray:
    """Topic prototypes: spherical k-means over (a sample of) training embeddings. (K, D)."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"need at least {k} embeddings to fit {k} topics, got {len(x)}")
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    km.train(x)
    assert km.centroids is not None
    c = km.centroids.astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12)
