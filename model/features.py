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
import json
import math
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from model.events import AccountEvents
from model.lexicon import CODE, ELICITATION, FORMAT, MATH, RUBRIC, SCRIPT_AGENT_RE, scan_text

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
)
N_FEATURES = len(FEATURE_NAMES)
_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}

LONG_DOC_CHARS = 3_000
MAX_WRAPPER_KEYS = 8_192  # per account; bounds the state of very long streams
_WORD_RE = re.compile(r"[a-z]+|\d+|[^\sa-z\d]", re.IGNORECASE)
_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class FeatureConfig:
    """How much history the incremental features keep."""

    window: int = 64  # earlier prompts compared for similarity / near duplicates
    skeleton_words: int = 8  # words at each end of a prompt that form its wrapper key
    near_duplicate_sim: float = 0.92
    gap_window: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 4096:
            raise ValueError(f"FeatureConfig.window must be in [1, 4096], got {self.window}")
        if not 2 <= self.skeleton_words <= 64:
            raise ValueError("FeatureConfig.skeleton_words must be in [2, 64]")
        if not 0.0 < self.near_duplicate_sim <= 1.0:
            raise ValueError("FeatureConfig.near_duplicate_sim must be in (0, 1]")
        if self.gap_window < 2:
            raise ValueError("FeatureConfig.gap_window must be >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        return cls(**d)


def stable_hash(words: tuple[str, ...]) -> int:
    """A 63-bit hash that is the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def wrapper_keys(text: str, n_words: int = 8) -> tuple[int, int] | None:
    """Hashes of the first and last ``n_words`` words, numbers masked; None for short prompts.

    Two prompts that put different content into the same wrapper share a head or tail key.
    """
    words = _WORD_RE.findall(_NUM_RE.sub("0", scan_text(text)))
    if len(words) < 3 * n_words:
        return None
    return stable_hash(("h", *words[:n_words])), stable_hash(("t", *words[-n_words:]))


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
        s = scan_text(text)
        return cls(
            elicitation=ELICITATION.search(s),
            rubric=RUBRIC.search(s),
            answer_format=FORMAT.search(s),
            code=CODE.search(s),
            math=MATH.search(s),
        )


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
        ):
            self.counts.setdefault(key, 0.0)

    def to_bytes(self) -> bytes:
        """A compact, pickle-free serialization (for the service's account store)."""
        meta = {
            "config": self.config.to_dict(),
            "n_topics": self.n_topics,
            "dim": self.dim,
            "n": self.n,
            "last_ts": self.last_ts,
            "first_ts": self.first_ts,
            "last_conversation": self.last_conversation,
            "n_emb": self.n_emb,
            "conv_turns": self.conv_turns,
            "counts": self.counts,
            "hour_cos": self.hour_cos,
            "hour_sin": self.hour_sin,
            "ua_script": self.ua_script,
        }
        buf = io.BytesIO()
        np.savez(
            buf,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            recent_ts=np.asarray(self.recent_ts, dtype=np.float64),
            recent_log_gaps=np.asarray(self.recent_log_gaps, dtype=np.float64),
            recent_emb=self.recent_emb[: min(self.n_emb, self.config.window)].astype(np.float16),
            head_keys=np.array(list(self.head_keys.items()), dtype=np.int64).reshape(-1, 2),
            tail_keys=np.array(list(self.tail_keys.items()), dtype=np.int64).reshape(-1, 2),
            topic_counts=self.topic_counts,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureState:
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

    def new_state(self) -> FeatureState:
        return FeatureState(config=self.config, n_topics=self.n_topics, dim=self.dim)

    def transform(
        self, account: AccountEvents, embeddings: np.ndarray, state: FeatureState | None = None
    ) -> tuple[np.ndarray, FeatureState]:
        """Features for every event of ``account`` (continuing ``state`` if given).

        Returns the `(T, F)` float32 matrix and the state after the last event.
        """
        if len(account) != len(embeddings):
            raise ValueError(f"{len(account)} events but {len(embeddings)} embeddings")
        state = state if state is not None else self.new_state()
        out = np.zeros((len(account), N_FEATURES), dtype=np.float32)
        topics = self._topics(embeddings)
        for t in range(len(account)):
            self._step(state, account, t, embeddings[t], int(topics[t]), out[t])
        return out, state

    def _topics(self, embeddings: np.ndarray) -> np.ndarray:
        if len(embeddings) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.argmax(embeddings @ self.topic_centroids.T, axis=1)  # (T,)

    def _step(
        self,
        s: FeatureState,
        acc: AccountEvents,
        t: int,
        emb: np.ndarray,
        topic: int,
        row: np.ndarray,
    ) -> None:
        cfg = self.config
        ts = float(acc.ts[t])
        text = acc.prompts[t]
        flags = TextFlags.of(text)
        c = s.counts
        n_prev = s.n
        row[_IDX["is_first"]] = 1.0 if n_prev == 0 else 0.0
        if n_prev:
            gap = max(ts - s.last_ts, 0.0)
            lg = math.log1p(gap)
            row[_IDX["log_gap"]] = lg / 12.0
            s.recent_log_gaps.append(lg)
        else:
            s.first_ts = ts
        chars = len(text)
        row[_IDX["log_chars"]] = math.log1p(chars) / 10.0
        mt = acc.max_tokens[t]
        if math.isnan(mt):
            row[_IDX["max_tokens_missing"]] = 1.0
        else:
            lmt = math.log1p(max(mt, 0.0))
            row[_IDX["log_max_tokens"]] = lmt / 9.0
            c["log_max_tokens"] += lmt
            c["n_max_tokens"] += 1
            c["max_tokens_sum"] += mt
        if c["n_max_tokens"]:
            row[_IDX["mean_log_max_tokens"]] = c["log_max_tokens"] / c["n_max_tokens"] / 9.0
        conv = acc.conversation_id[t]
        if conv is not None:
            turn = s.conv_turns.get(conv, 0)
            row[_IDX["conv_turn"]] = math.log1p(turn) / 3.0
            row[_IDX["has_conversation"]] = 1.0
            row[_IDX["same_conversation"]] = 1.0 if conv == s.last_conversation else 0.0
            if len(s.conv_turns) >= 1024 and conv not in s.conv_turns:
                s.conv_turns.pop(next(iter(s.conv_turns)))
            s.conv_turns[conv] = turn + 1
        s.last_conversation = conv
        row[_IDX["elicitation"]] = flags.elicitation
        row[_IDX["rubric"]] = flags.rubric
        row[_IDX["answer_format"]] = flags.answer_format
        row[_IDX["code"]] = flags.code
        row[_IDX["math"]] = flags.math
        row[_IDX["long_document"]] = chars > LONG_DOC_CHARS
        row[_IDX["has_system"]] = 1.0 if acc.system[t] else 0.0
        ua = acc.user_agent[t]
        row[_IDX["script_agent"]] = 1.0 if ua and SCRIPT_AGENT_RE.search(ua) else 0.0
        c["elicitation"] += flags.elicitation
        c["rubric"] += flags.rubric
        c["answer_format"] += flags.answer_format
        c["code"] += flags.code
        c["math"] += flags.math
        c["long"] += chars > LONG_DOC_CHARS
        s.ua_script += int(row[_IDX["script_agent"]])

        # similarity to the account's own recent prompts
        k = min(s.n_emb, cfg.window)
        near_dup = False
        if k:
            sims = s.recent_emb[:k] @ emb  # (k,)
            mx = float(sims.max())
            row[_IDX["max_sim_prev"]] = mx
            row[_IDX["mean_sim_prev"]] = float(sims.sum()) / k
            near_dup = mx >= cfg.near_duplicate_sim
        row[_IDX["near_duplicate"]] = near_dup
        c["near_dup"] += near_dup
        s.recent_emb[s.n_emb % cfg.window] = emb
        s.n_emb += 1

        keys = wrapper_keys(text, cfg.skeleton_words)
        reused = False
        if keys is not None:
            head, tail = keys
            reused = head in s.head_keys or tail in s.tail_keys
            for keymap, key in ((s.head_keys, head), (s.tail_keys, tail)):
                if key in keymap or len(keymap) < MAX_WRAPPER_KEYS:
                    keymap[key] = keymap.get(key, 0) + 1
        row[_IDX["template_reused"]] = reused
        c["template"] += reused

        # topics
        ct = float(s.topic_counts[topic])
        if ct == 0:
            row[_IDX["topic_new"]] = 1.0
            c["topics_covered"] += 1
        s.topic_counts[topic] = ct + 1
        # entropy of topic counts, kept as sum(c log c): H = log N - sum(c log c) / N
        c["topic_clogc"] += (ct + 1) * math.log(ct + 1) - (ct * math.log(ct) if ct else 0.0)
        row[_IDX["topics_covered"]] = math.log1p(c["topics_covered"]) / math.log1p(self.n_topics)
        total = n_prev + 1
        entropy = max(math.log(total) - c["topic_clogc"] / total, 0.0)
        row[_IDX["topic_entropy"]] = entropy / math.log(self.n_topics)

        # timing
        s.recent_ts.append(ts)
        row[_IDX["burst_60s"]] = math.log1p(_n_within(s.recent_ts, ts, 60.0)) / 5.0
        row[_IDX["burst_1h"]] = math.log1p(_n_within(s.recent_ts, ts, 3600.0)) / 6.0
        g = s.recent_log_gaps
        if len(g) >= 3:
            mean = sum(g) / len(g)
            std = math.sqrt(max(sum(x * x for x in g) / len(g) - mean * mean, 0.0))
            row[_IDX["gap_regularity"]] = min(std / (abs(mean) + 1e-3), 3.0) / 3.0
        hour = (ts % 86400.0) / 3600.0
        ang = 2.0 * math.pi * hour / 24.0
        row[_IDX["hour_sin"]] = math.sin(ang)
        row[_IDX["hour_cos"]] = math.cos(ang)
        s.hour_cos += math.cos(ang)
        s.hour_sin += math.sin(ang)

        s.n = n_prev + 1
        n = s.n
        row[_IDX["hour_concentration"]] = math.hypot(s.hour_cos, s.hour_sin) / n
        row[_IDX["share_template_reused"]] = c["template"] / n
        row[_IDX["share_elicitation"]] = c["elicitation"] / n
        row[_IDX["share_rubric"]] = c["rubric"] / n
        row[_IDX["share_answer_format"]] = c["answer_format"] / n
        row[_IDX["share_near_duplicate"]] = c["near_dup"] / n
        row[_IDX["log_position"]] = math.log1p(n) / math.log1p(10_000)
        s.last_ts = ts


def _n_within(recent: deque[float], ts: float, seconds: float) -> int:
    """How many earlier events (of the bounded recent ones) lie within ``seconds`` of ``ts``."""
    n = 0
    for x in reversed(recent):
        if ts - x > seconds:
            break
        n += 1
    return n - 1  # the event itself is already in ``recent``


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
