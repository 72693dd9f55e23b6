"""Fleets: coordinated accounts that harvest one model's skills together ("hydra" clusters).

What it knows: how to fingerprint the wrapper of a prompt (``template_signature``); how to
link accounts that send near-duplicate prompts, share distinctive wrappers or (as support
only) share an IP prefix and user agent (``FleetLinker`` / ``link_accounts``); how to cut
the account graph into fleets (``cluster_accounts``); what a fleet looks like as numbers
(``describe_fleets`` / ``fleet_features``); how to judge whether it harvests
(``FleetJudge``); how an account's own score takes its fleet's evidence into account
(``combine_account_score``); and the contract's fleet record (``Fleet``).

What it does not know: text reading, embedding, the sequence model or file I/O. Inputs are
arrays: per prompt ``account_idx`` (int), an L2-normalised embedding, ``template_key``
(int64, from ``template_signature``) and ``ts`` (seconds); per account optional
``ip_prefix`` / ``user_agent`` (most common value or None), the account's own score and its
share of reasoning-elicitation prompts.

Why these signals
-----------------
A hydra operator spreads one campaign over many small accounts, so no account alone looks
big. What the accounts cannot hide is that they send the *same wrapper* with *different
problems* in it, from shared infrastructure, on a schedule. Organic crowds also collide
(a viral question, a popular "Translate into French:" prefix, a company batch job over a
few accounts), so linking is deliberately generous and the *judge* decides, from what the
group sends and how, never from its size alone.

Example::

    result = link_accounts(account_idx, embeddings, template_key, ts,
                           ip_prefix=ips, user_agent=uas)
    evidence = describe_fleets(result, embeddings, own_score, reasoning_rate)
    judge = FleetJudge().fit(fleet_features(evidence), fleet_labels(evidence, labels))
    fleets = build_fleets(evidence, judge.predict_proba(fleet_features(evidence))[:, 1],
                          account_ids)
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from model.fleet_index import GrowableArray, IncidentIndex, PromptIndex

# --------------------------------------------------------------------------- templates

_MASK = "§"
_CODE_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_QUOTED = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|«[^»\n]*»|‘[^’\n]*’|(?<!\w)'[^'\n]*'(?!\w)")
_NUMBER = re.compile(r"[-+]?\d[\d,._:/]*")
_LONG_TOKEN = re.compile(r"\S{25,}")
_LABEL = re.compile(r"^\s*([^\W\d_][^:\n]{0,60}?)\s*:\s*\S.*$")
_TOKEN = re.compile(rf"{_MASK}|[^\W_]+")
_QUOTE_CHARS = re.compile("[\"“«‘']")
_DIGIT = re.compile(r"\d")
# (pattern, test that is true whenever the pattern can match), applied in this order
_MASKS = (
    (_CODE_FENCE, lambda t: "```" in t),
    (_INLINE_CODE, lambda t: "`" in t),
    (_URL, lambda t: "http" in t or "www." in t),
    (_EMAIL, lambda t: "@" in t),
    (_QUOTED, lambda t: _QUOTE_CHARS.search(t) is not None),
    (_NUMBER, lambda t: _DIGIT.search(t) is not None),
    (_LONG_TOKEN, lambda t: len(t) >= 25),
)


def template_signature(
    text: str,
    *,
    head_words: int = 8,
    tail_words: int = 8,
    label_max_words: int = 8,
    long_line_words: int = 40,
    min_wrapper_words: int = 3,
) -> int:
    """64-bit fingerprint of a prompt's wrapper; same wrapper, different slots -> same key.

    Slot contents are masked: fenced and inline code, URLs, e-mail addresses, quoted spans,
    numbers, very long tokens, whatever follows a short ``label:`` at the start of a line
    (``Problem: ...``, ``Translate into French: ...``) and whole lines longer than
    ``long_line_words`` words (pasted documents). Of what remains, the first ``head_words``
    and last ``tail_words`` words (after NFKC + lower-casing, runs of masks collapsed) are
    hashed. Returns 0, meaning "no wrapper", when fewer than ``min_wrapper_words`` words
    survive: bare questions or pasted code do not link accounts.

    Example::

        a = template_signature("Solve step by step.\\nProblem: 2x + 3 = 7\\nBox the answer.")
        b = template_signature("Solve step by step.\\nProblem: what is 17 * 3?\\nBox the answer.")
        assert a == b != 0
    """
    t = (text if text.isascii() else unicodedata.normalize("NFKC", text)).lower()

    def masked_tokens(part: str) -> list[str]:
        for pattern, present in _MASKS:
            if present(part):  # a cheap test that the pattern cannot match: same result
                part = pattern.sub(f" {_MASK} ", part)
        tokens: list[str] = []
        for line in part.splitlines():
            match = _LABEL.match(line)
            if match and len(match.group(1).split()) <= label_max_words:
                line = f"{match.group(1)} {_MASK}"
            words = _TOKEN.findall(line)
            tokens.extend([_MASK] if len(words) > long_line_words else words)
        return tokens

    need_head = max(head_words + tail_words + 1, 2 * min_wrapper_words)
    if len(t) > _LAZY_CHARS and "```" not in t:
        # Only the two ends of a long text matter. Without a code fence no mask spans a
        # newline, so the text is masked piece by piece ("\n"-separated) from the front
        # until the head is known, and from the back until the tail is: the same answer as
        # masking it whole (the tests compare both), without scanning a pasted document.
        pieces = t.split("\n")
        front: list[str] = []
        i = 0
        while i < len(pieces) and len(_collapse(front)) < need_head:
            front.extend(masked_tokens(pieces[i]))
            i += 1
        back: list[str] = []
        j = len(pieces)
        while j > i and len(_collapse(back)) <= tail_words:
            j -= 1
            back[:0] = masked_tokens(pieces[j])
        if j > i:  # a gap between the ends: it cannot change the head, the tail or the count
            collapsed = [*_collapse(front)[:head_words], "…", *_collapse(back)[-tail_words:]]
            return _digest(collapsed)
        tokens = front + back
    else:
        tokens = masked_tokens(t)
    collapsed = _collapse(tokens)
    if sum(w != _MASK for w in collapsed) < min_wrapper_words:
        return 0
    if len(collapsed) > head_words + tail_words:
        collapsed = [*collapsed[:head_words], "…", *collapsed[-tail_words:]]
    return _digest(collapsed)


_LAZY_CHARS = 1000  # texts longer than this are read from their ends (same result)


def _collapse(tokens: list[str]) -> list[str]:
    """Runs of masks collapsed into one."""
    return [w for i, w in enumerate(tokens) if w != _MASK or i == 0 or tokens[i - 1] != _MASK]


def _digest(collapsed: list[str]) -> int:
    digest = hashlib.blake2b(" ".join(collapsed).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


# --------------------------------------------------------------------------- linking


@dataclass(frozen=True)
class LinkConfig:
    """How accounts are linked and cut into fleets.

    similarity_threshold: cosine at which two prompts of different accounts count as near
        duplicates. k: neighbours looked up per prompt (caps pairs per prompt).
    min_edge_weight: weight an account pair needs to be "strong" (joins components). Content
        weight is (near-duplicate pairs) / (prompts of the smaller account), so 0.03 is one
        pair per ~33 prompts: any pair links two 5-30 prompt hydra accounts, while two heavy
        organic users who once asked the same common question stay apart.
    template_min_share: share of an account's prompts that must use a wrapper for the
        wrapper to link it (one "Translate:" among 20 prompts does not).
    template_max_account_share: wrappers used by more than this share of all active
        accounts (and by >= 50 accounts) are generic and ignored.
    template_clique_max / template_ring_degree: accounts sharing a wrapper are linked all
        pairs up to this many, else by ``ring_degree / 2`` seeded random cycles through them
        (about ``ring_degree`` edges each): connected, O(m) edges instead of O(m^2) for a
        20,000-account fleet, and an expander, so Louvain finds no false seams in it.
    content_alone: whether near-duplicate content ALONE can make an edge strong. Off by
        default: prompts drawn from the same public benchmark say "same source data", not
        "same operator" (on simulated campaigns, about 80 % of content-only strong edges joined
        two DIFFERENT campaigns, and eval teams running the benchmark joined harvesters).
        Off, an edge's weight is its operator evidence (wrapper + infrastructure), plus
        its content weight only where that evidence exists. A shared user agent does not
        count: popular strings (a browser release, ``python-requests/2.31.0``) are sent
        by many operators (on simulated campaigns it joined two campaigns that shared
        benchmark problems). On: the weight is
        ``(content + template) * ip boost`` (fleet models saved before the option).
    infra_weight: operator evidence of two accounts whose most common IP prefix is the
        same; twice it when their most common user agent matches too. Prefixes (or prefix
        + agent pairs) used by more than ``template_max_account_share`` of the active
        accounts (and >= 50) are generic (cloud egress, carrier NAT) and ignored; big
        groups are linked as rings, like wrappers. Only accounts whose linked prompts are
        at least ``infra_min_linked_share`` of what they sent take part (accounts that
        mostly send harvest-like prompts, when only those are linked): a NAT or office of
        organic users is not a fleet. 0 disables it.
    ip_boost: (with ``content_alone``) an existing edge between accounts with the same IP
        prefix is multiplied by ``1 + ip_boost / 2``, by ``1 + ip_boost`` if the user agent
        matches too. It never creates an edge.
    common_min_accounts / identical_sim: a prompt that is practically identical (cosine >=
        ``identical_sim``) to prompts of at least ``common_min_accounts - 1`` other accounts
        is a common phrase ("works now, thanks", a canned follow-up, a viral question) and
        links nobody: crowds share phrases, fleets share wrappers around different content.
        0 disables the rule.
    split_min_accounts / split_max_leak / louvain_*: components with at least
        ``split_min_accounts`` accounts are offered to Louvain; its communities are kept
        apart only while each sends at most ``split_max_leak`` of its edge weight outside
        itself (see ``cluster_accounts``).
    exact_max / reduce_to / nprobe / chunk: see ``PromptIndex``.
    """

    similarity_threshold: float = 0.85
    k: int = 8
    min_edge_weight: float = 0.03
    template_min_share: float = 0.2
    template_max_account_share: float = 0.5
    template_clique_max: int = 32
    template_ring_degree: int = 8
    content_alone: bool = False
    infra_weight: float = 0.05
    infra_min_linked_share: float = 0.5
    ip_boost: float = 1.0
    common_min_accounts: int = 4
    identical_sim: float = 0.97
    split_min_accounts: int = 50
    split_max_leak: float = 0.2
    louvain_resolution: float = 1.0
    louvain_top_edges: int = 8
    exact_max: int = 20_000
    reduce_to: int | None = 64
    nprobe: int = 2
    chunk: int = 65_536
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "similarity_threshold": -1.0 < self.similarity_threshold <= 1.0,
            "k": self.k >= 1,
            "min_edge_weight": self.min_edge_weight > 0,
            "template_min_share": 0 < self.template_min_share <= 1,
            "template_max_account_share": 0 < self.template_max_account_share <= 1,
            "template_clique_max": self.template_clique_max >= 2,
            "template_ring_degree": self.template_ring_degree >= 1,
            "ip_boost": self.ip_boost >= 0,
            "infra_weight": 0 <= self.infra_weight <= 1,
            "infra_min_linked_share": 0 <= self.infra_min_linked_share <= 1,
            "common_min_accounts": self.common_min_accounts == 0 or self.common_min_accounts >= 2,
            "identical_sim": -1.0 < self.identical_sim <= 1.0,
            "split_min_accounts": self.split_min_accounts >= 2,
            "split_max_leak": 0 < self.split_max_leak < 1,
            "louvain_resolution": self.louvain_resolution > 0,
            "louvain_top_edges": self.louvain_top_edges >= 1,
            "nprobe": self.nprobe >= 1,
            "chunk": self.chunk >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid LinkConfig: {values}")


@dataclass
class AccountGraph:
    """Weighted account-account edges, one row per pair (``src < dst``).

    ``content_pairs``: cross-account near-duplicate prompt pairs; ``content_weight``: that
    count over the smaller account's prompt count (capped at 1); ``template_weight``: summed
    min-shares of shared wrappers (capped at 1); ``same_ip`` / ``same_ua``: the support
    signal; ``weight``: ``(content + template) * ip boost``.
    """

    n_accounts: int
    src: np.ndarray  # (E,) int64
    dst: np.ndarray  # (E,) int64
    weight: np.ndarray  # (E,) float64
    content_pairs: np.ndarray  # (E,) int64
    content_weight: np.ndarray  # (E,) float64
    template_weight: np.ndarray  # (E,) float64
    same_ip: np.ndarray  # (E,) bool
    same_ua: np.ndarray  # (E,) bool


@dataclass
class LinkResult:
    """The account graph, its fleets (arrays of account indices) and the per-prompt data
    they were built from (kept by reference for ``describe_fleets``)."""

    graph: AccountGraph
    clusters: list[np.ndarray]
    prompt_account: np.ndarray  # (N,) int64
    template_key: np.ndarray  # (N,) int64
    ts: np.ndarray  # (N,) float64
    pair_lo: np.ndarray  # (P,) int64 prompt ids of near-duplicate pairs
    pair_hi: np.ndarray  # (P,) int64
    pair_sim: np.ndarray  # (P,) float32
    prompts_per_account: np.ndarray  # (A,) int64
    ip_prefixes: list[str]  # code -> value
    ip_code: np.ndarray  # (A,) int32, -1 = unknown
    user_agents: list[str]
    ua_code: np.ndarray  # (A,) int32, -1 = unknown
    config: LinkConfig


def _codes(values: Sequence[str | None] | None, n: int) -> tuple[np.ndarray, list[str]]:
    codes = np.full(n, -1, dtype=np.int32)
    names: dict[str, int] = {}
    for i, value in enumerate(values or ()):
        if isinstance(value, str) and value:  # None, NaN, "" = unknown
            codes[i] = names.setdefault(value, len(names))
    return codes, list(names)


class FleetLinker:
    """Incremental account linker: add prompts as they arrive, cluster whenever needed.

    Each ``add`` indexes the new prompts and looks up their ``k`` nearest earlier (and
    same-batch) prompts, so its cost depends on the batch, not on what is indexed.
    ``graph()`` and ``link()`` aggregate everything seen so far.

    Example::

        linker = FleetLinker(dim=384)
        linker.add(account_idx, embeddings, template_key, ts)
        linker.set_account_info(ip_prefix, user_agent)
        result = linker.link()
        linker.add(more_accounts, more_embeddings, more_keys, more_ts)   # milliseconds
    """

    def __init__(
        self, dim: int, config: LinkConfig | None = None, *, expected_prompts: int | None = None
    ) -> None:
        self.dim = dim
        self.config = config or LinkConfig()
        c = self.config
        self.index = PromptIndex(
            dim,
            exact_max=c.exact_max,
            reduce_to=c.reduce_to,
            nprobe=c.nprobe,
            expected_size=expected_prompts,
            chunk=c.chunk,
            seed=c.seed,
        )
        self._account = GrowableArray(np.int64)
        self._key = GrowableArray(np.int64)
        self._ts = GrowableArray(np.float64)
        self._pair_lo = GrowableArray(np.int64)
        self._pair_hi = GrowableArray(np.int64)
        self._pair_sim = GrowableArray(np.float32)
        self._ip_code = np.empty(0, dtype=np.int32)
        self._ua_code = np.empty(0, dtype=np.int32)
        self._ip_names: list[str] = []
        self._ua_names: list[str] = []
        self._sent = np.zeros(0, dtype=np.int64)
        self._ip_sets: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_prompts(self) -> int:
        return len(self._account)

    def add(
        self,
        account_idx: np.ndarray,
        embeddings: np.ndarray,
        template_key: np.ndarray,
        ts: np.ndarray,
    ) -> int:
        """Index new prompts and record their cross-account near duplicates.

        Returns the number of new near-duplicate prompt pairs.
        """
        account_idx = np.asarray(account_idx, dtype=np.int64).ravel()
        n = len(account_idx)
        template_key = np.asarray(template_key, dtype=np.int64).ravel()
        ts = np.asarray(ts, dtype=np.float64).ravel()
        if len(template_key) != n or len(ts) != n or len(embeddings) != n:
            raise ValueError(
                f"account_idx, embeddings, template_key and ts must have one row per prompt; "
                f"got {n}, {len(embeddings)}, {len(template_key)}, {len(ts)}"
            )
        if n and account_idx.min() < 0:
            raise ValueError("account_idx must be >= 0")
        if n and not np.isfinite(ts).all():
            raise ValueError("ts must be finite seconds")
        first = self.n_prompts
        self._account.extend(account_idx)
        self._key.extend(template_key)
        self._ts.extend(ts)
        accounts = self._account.view()
        c = self.config
        added = 0
        for start in range(0, n, c.chunk):
            stop = min(n, start + c.chunk)
            ids = np.arange(first + start, first + stop, dtype=np.int64)
            sims, nbrs = self.index.add_search(embeddings[start:stop], ids, c.k + 1)
            keep = (nbrs >= 0) & (sims >= c.similarity_threshold)
            q = np.broadcast_to(ids[:, None], nbrs.shape)[keep]
            nb, s = nbrs[keep], sims[keep]
            cross = accounts[q] != accounts[nb]
            q, nb, s = q[cross], nb[cross], s[cross]
            lo, hi = np.minimum(q, nb), np.maximum(q, nb)
            # pairs inside one chunk are found from both ends: keep one
            _, first_seen = np.unique(lo * (1 << 31) + hi, return_index=True)
            self._pair_lo.extend(lo[first_seen])
            self._pair_hi.extend(hi[first_seen])
            self._pair_sim.extend(s[first_seen])
            added += len(first_seen)
        return added

    def set_account_info(
        self,
        ip_prefix: Sequence[str | None] | None = None,
        user_agent: Sequence[str | None] | None = None,
        n_sent: Sequence[int] | np.ndarray | None = None,
        ip_prefix_sets: Sequence[Iterable[str]] | None = None,
    ) -> None:
        """Per-account (index = account_idx) most common IP prefix and user agent, or None,
        how many prompts each account sent in all (``n_sent``; default: those added) and
        every IP prefix it used (``ip_prefix_sets``; default: the most common one), which
        infrastructure links read: a campaign's accounts rotate through its prefixes.

        Shares are taken of what an account sent, not of what was added: when only its
        harvest-like prompts are linked, an organic account with 2 of them among 60 has a
        2/60 share in a wrapper or a near-duplicate pair, not 2/2.
        """
        n = max(
            len(ip_prefix or ()), len(user_agent or ()), len(n_sent if n_sent is not None else ())
        )
        self._ip_code, self._ip_names = _codes(ip_prefix, n)
        self._ua_code, self._ua_names = _codes(user_agent, n)
        self._sent = (
            np.zeros(0, dtype=np.int64)
            if n_sent is None
            else np.asarray(n_sent, dtype=np.int64).reshape(-1)
        )
        self._ip_sets = None
        if ip_prefix_sets is not None:  # (account, prefix code) pairs, codes shared with _ip_code
            names = {name: i for i, name in enumerate(self._ip_names)}
            acc, code = [], []
            for i, prefixes in enumerate(ip_prefix_sets):
                for prefix in dict.fromkeys(x for x in prefixes if isinstance(x, str) and x):
                    acc.append(i)
                    code.append(names.setdefault(prefix, len(names)))
            self._ip_sets = (np.asarray(acc, dtype=np.int64), np.asarray(code, dtype=np.int64))

    def _kept_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Near-duplicate pairs minus those that touch a common phrase (see ``LinkConfig``)."""
        lo, hi, sim = self._pair_lo.view(), self._pair_hi.view(), self._pair_sim.view()
        c = self.config
        if not c.common_min_accounts or not len(lo):
            return lo, hi, sim
        accounts = self._account.view()
        same = sim >= c.identical_sim
        prompt = np.concatenate([lo[same], hi[same]])
        partner = np.concatenate([accounts[hi[same]], accounts[lo[same]]])
        distinct = np.unique(np.stack([prompt, partner], axis=1), axis=0)[:, 0]
        partners = np.bincount(distinct, minlength=self.n_prompts)
        common = partners >= c.common_min_accounts - 1
        keep = ~(common[lo] | common[hi])
        return lo[keep], hi[keep], sim[keep]

    def graph(self, kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> AccountGraph:
        """Aggregate all evidence so far into weighted account-account edges."""
        c = self.config
        accounts = self._account.view()
        n_acc = int(accounts.max()) + 1 if len(accounts) else 0
        n_acc = max(n_acc, len(self._ip_code))
        n_acc = max(n_acc, len(self._sent))
        per_account = np.maximum(
            np.bincount(accounts, minlength=n_acc), _pad(self._sent, n_acc).astype(np.int64)
        )

        lo, hi, _ = kept if kept is not None else self._kept_pairs()
        a, b = accounts[lo], accounts[hi]
        content_codes, content_counts = np.unique(
            (np.minimum(a, b) << 32) | np.maximum(a, b), return_counts=True
        )
        tpl_codes, tpl_weights = _template_edges(accounts, self._key.view(), per_account, c)
        ip = _pad(self._ip_code, n_acc)
        ua = _pad(self._ua_code, n_acc)
        linked = np.bincount(accounts, minlength=n_acc)
        share = linked / np.maximum(per_account, 1)
        infra_codes, infra_weights = self._infra_edges(
            ip, ua, (linked > 0) & (share >= c.infra_min_linked_share)
        )

        parts = [content_codes, tpl_codes, infra_codes]
        codes, inverse = np.unique(np.concatenate(parts), return_inverse=True)
        ends = np.cumsum([len(x) for x in parts])
        pairs = np.bincount(inverse[: ends[0]], weights=content_counts, minlength=len(codes))
        template = np.bincount(
            inverse[ends[0] : ends[1]], weights=tpl_weights, minlength=len(codes)
        )
        infra = np.bincount(inverse[ends[1] :], weights=infra_weights, minlength=len(codes))
        src, dst = codes >> 32, codes & 0xFFFFFFFF
        smaller = np.maximum(np.minimum(per_account[src], per_account[dst]), 1)
        content = np.minimum(pairs / smaller, 1.0)
        template = np.minimum(template, 1.0)

        same_ip = (ip[src] >= 0) & (ip[src] == ip[dst])
        same_ua = same_ip & (ua[src] >= 0) & (ua[src] == ua[dst])
        if c.content_alone:
            boost = 1.0 + c.ip_boost * (0.5 * same_ip + 0.5 * same_ua)
            weight = (content + template) * boost
        else:
            operator = template + infra
            weight = operator + np.where(operator > 0, content, 0.0)
        return AccountGraph(
            n_accounts=n_acc,
            src=src,
            dst=dst,
            weight=weight,
            content_pairs=pairs.astype(np.int64),
            content_weight=content,
            template_weight=template,
            same_ip=same_ip,
            same_ua=same_ua,
        )

    def _infra_edges(
        self, ip: np.ndarray, ua: np.ndarray, linked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Account pairs sharing an IP prefix (weight ``infra_weight``) and, on top, prefix
        and user agent (``infra_weight`` again), among the ``linked`` (bool) accounts."""
        c = self.config
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
        if c.content_alone or c.infra_weight <= 0:
            return empty
        who = np.flatnonzero((linked > 0) & (ip >= 0))
        if len(who) < 2:
            return empty
        ones = np.ones(len(linked), dtype=np.int64)
        n_active = len(ip)  # generic: shared by a big share of ALL accounts (cloud egress)
        ip_key = ip[who].astype(np.int64) + 1
        both = np.where(ua[who] >= 0, (ip_key << 32) | (ua[who].astype(np.int64) + 1), 0)
        groups = [(who, ip_key), (who, both)]
        if self._ip_sets is not None:  # every prefix an account used, not only its main one
            acc, code = self._ip_sets
            inside = acc < len(linked)
            acc, code = acc[inside], code[inside]
            keep = linked[acc] > 0
            groups[0] = (acc[keep], code[keep] + 1)
        codes, weights = [], []
        for accounts, keys in groups:
            pair_codes, shares = _template_edges(accounts, keys, ones, c, n_active=n_active)
            codes.append(pair_codes)
            weights.append(c.infra_weight * np.minimum(shares, 1.0))
        return np.concatenate(codes), np.concatenate(weights)

    def link(self) -> LinkResult:
        """``graph()`` plus ``cluster_accounts`` plus the per-prompt arrays, as one result."""
        pairs = self._kept_pairs()
        graph = self.graph(pairs)
        n_acc = graph.n_accounts
        accounts = self._account.view()
        return LinkResult(
            graph=graph,
            clusters=cluster_accounts(graph, self.config),
            prompt_account=accounts.copy(),
            template_key=self._key.view().copy(),
            ts=self._ts.view().copy(),
            pair_lo=pairs[0].copy(),
            pair_hi=pairs[1].copy(),
            pair_sim=pairs[2].copy(),
            prompts_per_account=np.bincount(accounts, minlength=n_acc),
            ip_prefixes=list(self._ip_names),
            ip_code=_pad(self._ip_code, n_acc),
            user_agents=list(self._ua_names),
            ua_code=_pad(self._ua_code, n_acc),
            config=self.config,
        )


def _pad(codes: np.ndarray, n: int) -> np.ndarray:
    if len(codes) >= n:
        return codes[:n]
    return np.concatenate([codes, np.full(n - len(codes), -1, dtype=np.int32)])


def _template_edges(
    accounts: np.ndarray,
    keys: np.ndarray,
    per_account: np.ndarray,
    c: LinkConfig,
    *,
    n_active: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Account-pair codes and min-share weights for accounts that lean on the same wrapper
    (or on any shared key: one key per account with ``per_account`` 1 gives shares of 1).
    ``n_active``: accounts a generic key is measured against (default: those with prompts)."""
    empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
    has_key = keys != 0
    k, a = keys[has_key], accounts[has_key]
    if len(k) == 0:
        return empty
    order = np.lexsort((a, k))
    k, a = k[order], a[order]
    starts = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (a[1:] != a[:-1])])
    counts = np.diff(np.r_[starts, len(k)])
    k, a = k[starts], a[starts]
    share = counts / per_account[a]
    strong = share >= c.template_min_share
    k, a, share = k[strong], a[strong], share[strong]
    group_starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.empty(0, int)
    sizes = np.diff(np.r_[group_starts, len(k)])
    active = int((per_account > 0).sum()) if n_active is None else n_active
    generic = (sizes >= 50) & (sizes > c.template_max_account_share * active)
    rng = np.random.default_rng(c.seed)
    codes: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    linked = (sizes >= 2) & ~generic
    for start, size in zip(group_starts[linked], sizes[linked], strict=True):
        members, shares = a[start : start + size], share[start : start + size]
        if size <= c.template_clique_max:
            i, j = np.triu_indices(size, 1)
        else:  # union of random Hamiltonian cycles: a connected expander, no fake communities
            cycles = [rng.permutation(size) for _ in range(max(1, c.template_ring_degree // 2))]
            i = np.concatenate(cycles)
            j = np.concatenate([np.roll(cycle, 1) for cycle in cycles])
        x, y = members[i], members[j]
        codes.append((np.minimum(x, y) << 32) | np.maximum(x, y))
        weights.append(np.minimum(shares[i], shares[j]))
    if not codes:
        return empty
    return np.concatenate(codes), np.concatenate(weights)


def link_accounts(
    account_idx: np.ndarray,
    embeddings: np.ndarray,
    template_key: np.ndarray,
    ts: np.ndarray,
    ip_prefix: Sequence[str | None] | None = None,
    user_agent: Sequence[str | None] | None = None,
    *,
    n_sent: Sequence[int] | np.ndarray | None = None,
    ip_prefix_sets: Sequence[Iterable[str]] | None = None,
    config: LinkConfig | None = None,
) -> LinkResult:
    """Link accounts and cut them into fleets, in one batch.

    ``embeddings`` (N, D) may be a memory map: it is read in ``config.chunk`` rows at a time.
    Above ``config.exact_max`` prompts the index is trained first on a random sample of the
    whole batch (not on its first rows, which may all come from a few accounts).

    Example::

        result = link_accounts(account_idx, embeddings, template_key, ts, ips, uas)
        for accounts in result.clusters:
            print(len(accounts))
    """
    config = config or LinkConfig()
    n = len(embeddings)
    linker = FleetLinker(int(np.shape(embeddings)[1]), config, expected_prompts=n)
    if n > config.exact_max:
        rng = np.random.default_rng(config.seed)
        sample = np.sort(rng.choice(n, min(n, 200_000), replace=False))
        linker.index.train(np.asarray(embeddings[sample]))
    linker.add(account_idx, embeddings, template_key, ts)
    linker.set_account_info(ip_prefix, user_agent, n_sent, ip_prefix_sets)
    return linker.link()


# --------------------------------------------------------------------------- clustering


def cluster_accounts(graph: AccountGraph, config: LinkConfig | None = None) -> list[np.ndarray]:
    """Fleets: connected components over strong edges, big ones split by Louvain if separable.

    Components of the strong-edge graph (``weight >= min_edge_weight``) are the fleets,
    except that a component of at least ``split_min_accounts`` accounts is handed to
    ``networkx.community.louvain_communities`` (on each account's ``louvain_top_edges``
    heaviest edges, seeded). Louvain always finds *some* communities, even in one
    homogeneous campaign whose links are spread thin by the neighbour cap (a random graph
    has positive modularity), so its proposal is tested: a community that sends more than
    ``split_max_leak`` of its edge weight to the others is merged into the one it is most
    tied to, repeatedly. Two campaigns bridged by a stray account survive as two fleets;
    one campaign comes back whole.

    Returns arrays of account indices (sorted), largest fleet first; singletons dropped.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    c = config or LinkConfig()
    strong = graph.weight >= c.min_edge_weight
    src, dst, w = graph.src[strong], graph.dst[strong], graph.weight[strong]
    n = graph.n_accounts
    if n == 0 or len(src) == 0:
        return []
    matrix = coo_matrix((w, (src, dst)), shape=(n, n))
    _, labels = connected_components(matrix, directed=False)
    sizes = np.bincount(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    edge_order = np.argsort(labels[src], kind="stable")
    edge_bounds = np.r_[0, np.cumsum(np.bincount(labels[src], minlength=len(sizes)))]
    clusters: list[np.ndarray] = []
    for comp in np.flatnonzero(sizes >= 2):
        members = order[bounds[comp] : bounds[comp + 1]]
        if len(members) < c.split_min_accounts:
            clusters.append(np.sort(members))
            continue
        edges = edge_order[edge_bounds[comp] : edge_bounds[comp + 1]]
        clusters.extend(_split(members, src[edges], dst[edges], w[edges], c))
    clusters = [np.sort(m) for m in clusters if len(m) >= 2]
    clusters.sort(key=lambda m: (-len(m), int(m[0])))
    return clusters


def _split(
    members: np.ndarray, src: np.ndarray, dst: np.ndarray, w: np.ndarray, c: LinkConfig
) -> list[np.ndarray]:
    import networkx as nx

    members = np.sort(members)
    s, d = np.searchsorted(members, src), np.searchsorted(members, dst)
    # keep each account's heaviest edges: bounded Louvain cost, same community structure
    ends = np.concatenate([s, d])
    edge = np.concatenate([np.arange(len(s)), np.arange(len(s))])
    order = np.lexsort((-np.concatenate([w, w]), ends))
    ends, edge = ends[order], edge[order]
    first = np.searchsorted(ends, ends, side="left")
    kept = np.unique(edge[np.arange(len(ends)) - first < c.louvain_top_edges])
    g = nx.Graph()
    g.add_nodes_from(range(len(members)))
    g.add_weighted_edges_from(
        zip(s[kept].tolist(), d[kept].tolist(), w[kept].tolist(), strict=True)
    )
    communities = nx.community.louvain_communities(
        g, weight="weight", resolution=c.louvain_resolution, seed=c.seed
    )
    label = np.empty(len(members), dtype=np.int64)
    for i, community in enumerate(communities):
        label[list(community)] = i
    label = _merge_leaky(label, len(communities), s, d, w, c.split_max_leak)
    return [members[label == value] for value in np.unique(label)]


def _merge_leaky(
    label: np.ndarray, k: int, s: np.ndarray, d: np.ndarray, w: np.ndarray, max_leak: float
) -> np.ndarray:
    """Merge the leakiest community into its strongest neighbour until none leaks too much."""
    if k <= 1 or k > 4000:  # one community, or too many to test: keep the component whole
        return np.zeros_like(label)
    cs, cd = label[s], label[d]
    between = np.zeros((k, k))
    np.add.at(between, (cs, cd), w)
    between = between + between.T
    internal = np.diag(between).copy() / 2.0
    np.fill_diagonal(between, 0.0)
    cut = between.sum(axis=1)
    alive = np.ones(k, dtype=bool)
    parent = np.arange(k)
    while alive.sum() > 1:
        leak = np.where(alive, cut / np.maximum(2.0 * internal + cut, 1e-12), -1.0)
        worst = int(leak.argmax())
        if leak[worst] <= max_leak:
            break
        row = np.where(alive, between[worst], -1.0)
        row[worst] = -1.0
        into = int(row.argmax())
        internal[into] += internal[worst] + between[worst, into]
        between[into] += between[worst]
        between[:, into] += between[:, worst]
        between[into, into] = 0.0
        between[worst] = 0.0
        between[:, worst] = 0.0
        cut[into] = between[into].sum()
        alive[worst] = False
        parent[parent == worst] = into
    return parent[label]


# --------------------------------------------------------------------------- evidence

#: Fleet features, in the column order of ``fleet_features`` and ``FleetJudge``.
FLEET_FEATURES: tuple[str, ...] = (
    "own_score_mean",
    "own_score_max",
    "log_size",
    "template_link_share",
    "ip_link_share",
    "template_concentration",
    "reasoning_share",
    "content_diversity",
    "timing_regularity",
)


@dataclass
class FleetEvidence:
    """What one linked group of accounts sends and how: the judge's inputs and the reasons'.

    ``template_concentration``: share of the fleet's prompts covered by its three most used
    shared wrappers. ``content_diversity``: mean cosine distance (1 - cos) of the prompt
    pairs that tie the fleet together (same shared wrapper, or near duplicates across
    accounts): high when different problems go through one wrapper (harvesting, batch
    jobs), low when the same content is asked in different words (a viral question).
    ``timing_regularity``: 1 / (1 + coefficient of variation of the gaps between the
    fleet's prompts): ~1 machine-paced, ~0.5 random arrivals, lower for human bursts.
    """

    accounts: np.ndarray
    n_prompts: int
    own_score_mean: float
    own_score_max: float
    template_link_share: float
    ip_link_share: float
    template_concentration: float
    reasoning_share: float
    content_diversity: float
    timing_regularity: float
    n_shared_wrappers: int = 0
    n_wrapper_prompts: int = 0
    n_wrapper_accounts: int = 0
    n_content_pairs: int = 0
    n_content_accounts: int = 0
    top_ip_prefix: str | None = None
    n_ip_accounts: int = 0
    n_ip_user_agents: int = 0
    campaign: str | None = None
    campaign_similarity: float = 0.0
    similarity_threshold: float = 0.85

    @property
    def features(self) -> np.ndarray:
        return np.array(
            [
                self.own_score_mean,
                self.own_score_max,
                math.log(len(self.accounts)),
                self.template_link_share,
                self.ip_link_share,
                self.template_concentration,
                self.reasoning_share,
                self.content_diversity,
                self.timing_regularity,
            ],
            dtype=np.float64,
        )


def describe_fleets(
    result: LinkResult,
    embeddings: np.ndarray,
    own_score: np.ndarray,
    reasoning_rate: np.ndarray,
    *,
    incidents: IncidentIndex | None = None,
    max_pairs: int = 256,
    seed: int = 0,
) -> list[FleetEvidence]:
    """Evidence for each cluster in ``result.clusters`` (same order).

    ``embeddings`` (N, D): the prompts given to linking, indexed by prompt id (only sampled
    rows are read). ``own_score`` / ``reasoning_rate`` (A,): per account, the sequence
    model's score and the share of its prompts that elicit reasoning.
    """
    graph = result.graph
    n_acc = graph.n_accounts
    own_score = _per_account(own_score, n_acc, "own_score")
    reasoning_rate = _per_account(reasoning_rate, n_acc, "reasoning_rate")
    fleet_of = np.full(n_acc, -1, dtype=np.int64)
    for f, members in enumerate(result.clusters):
        fleet_of[members] = f

    same = (fleet_of[graph.src] >= 0) & (fleet_of[graph.src] == fleet_of[graph.dst])
    by_template = np.zeros(n_acc, dtype=bool)
    by_ip = np.zeros(n_acc, dtype=bool)
    for mask, marks in (
        (same & (graph.template_weight > 0), by_template),
        (same & graph.same_ip, by_ip),
    ):
        marks[graph.src[mask]] = True
        marks[graph.dst[mask]] = True

    prompt_fleet = fleet_of[result.prompt_account]
    prompt_order = np.argsort(prompt_fleet, kind="stable")
    prompt_bounds = np.searchsorted(prompt_fleet[prompt_order], np.arange(len(result.clusters) + 1))
    pair_fleet = prompt_fleet[result.pair_lo]
    pair_fleet = np.where(prompt_fleet[result.pair_hi] == pair_fleet, pair_fleet, -1)
    pair_order = np.argsort(pair_fleet, kind="stable")
    pair_bounds = np.searchsorted(pair_fleet[pair_order], np.arange(len(result.clusters) + 1))

    rng = np.random.default_rng(seed)
    out: list[FleetEvidence] = []
    for f, members in enumerate(result.clusters):
        prompts = prompt_order[prompt_bounds[f] : prompt_bounds[f + 1]]
        pairs = pair_order[pair_bounds[f] : pair_bounds[f + 1]]
        out.append(
            _describe_one(
                result, members, prompts, pairs, embeddings, own_score, reasoning_rate,
                by_template, by_ip, incidents, max_pairs, rng,
            )
        )  # fmt: skip
    return out


def _per_account(values: np.ndarray, n_acc: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) < n_acc:
        raise ValueError(f"{name} needs one value per account ({n_acc}), got {len(values)}")
    return values


def _describe_one(
    result: LinkResult,
    members: np.ndarray,
    prompts: np.ndarray,
    pairs: np.ndarray,
    embeddings: np.ndarray,
    own_score: np.ndarray,
    reasoning_rate: np.ndarray,
    by_template: np.ndarray,
    by_ip: np.ndarray,
    incidents: IncidentIndex | None,
    max_pairs: int,
    rng: np.random.Generator,
) -> FleetEvidence:
    n_prompts = max(len(prompts), 1)
    counts = result.prompts_per_account[members].astype(np.float64)
    keys = result.template_key[prompts]
    accts = result.prompt_account[prompts]

    # shared wrappers: non-zero keys used by at least two of the fleet's accounts
    wrapper_prompts = np.empty(0, dtype=np.int64)
    n_shared = n_wrapper_accounts = 0
    concentration = 0.0
    nz = keys != 0
    if nz.any():
        uk, inv = np.unique(keys[nz], return_inverse=True)
        pairs_ka = np.unique(inv * (1 << 32) + accts[nz])
        accounts_per_key = np.bincount(pairs_ka >> 32, minlength=len(uk))
        prompts_per_key = np.bincount(inv, minlength=len(uk))
        shared = accounts_per_key >= 2
        n_shared = int(shared.sum())
        if n_shared:
            concentration = float(np.sort(prompts_per_key[shared])[::-1][:3].sum() / n_prompts)
            in_shared = shared[inv]
            wrapper_prompts = prompts[nz][in_shared]
            n_wrapper_accounts = len(np.unique(accts[nz][in_shared]))

    # content diversity over the pairs that tie the fleet together
    picked = pairs if len(pairs) <= max_pairs else rng.choice(pairs, max_pairs, replace=False)
    lo, hi = list(result.pair_lo[picked]), list(result.pair_hi[picked])
    if len(wrapper_prompts) >= 2:
        wk = result.template_key[wrapper_prompts]
        order = np.argsort(wk, kind="stable")
        wp, wk = wrapper_prompts[order], wk[order]
        starts = np.searchsorted(wk, wk, side="left")
        ends = np.searchsorted(wk, wk, side="right")
        i = rng.integers(0, len(wp), size=max_pairs)
        size = ends[i] - starts[i]
        ok = size >= 2
        i, size = i[ok], size[ok]
        j = starts[i] + (i - starts[i] + rng.integers(1, np.maximum(size, 2))) % size
        lo.extend(wp[i])
        hi.extend(wp[j])
    diversity = 0.0
    if lo:
        a = np.asarray(embeddings[np.sort(np.asarray(lo))], dtype=np.float32)
        # gather in sorted order (memory maps), then undo the sort
        a = a[np.argsort(np.argsort(np.asarray(lo), kind="stable"), kind="stable")]
        b = np.asarray(embeddings[np.sort(np.asarray(hi))], dtype=np.float32)
        b = b[np.argsort(np.argsort(np.asarray(hi), kind="stable"), kind="stable")]
        cos = np.einsum("ij,ij->i", a, b) / np.maximum(
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
        )
        diversity = float(np.clip(1.0 - cos, 0.0, 2.0).mean())

    # timing of the merged fleet stream
    regularity = 0.5
    times = np.sort(result.ts[prompts])
    if len(times) >= 3:
        gaps = np.diff(times)
        mean = gaps.mean()
        regularity = 1.0 if mean <= 0 else float(1.0 / (1.0 + gaps.std() / mean))

    # infrastructure
    top_ip, n_ip, n_ua = None, 0, 0
    ips = result.ip_code[members]
    if (ips >= 0).any():
        values, freq = np.unique(ips[ips >= 0], return_counts=True)
        if freq.max() >= 2:
            code = int(values[freq.argmax()])
            top_ip, n_ip = result.ip_prefixes[code], int(freq.max())
            uas = result.ua_code[members][ips == code]
            n_ua = len(np.unique(uas[uas >= 0]))

    campaign, campaign_sim = None, 0.0
    if incidents is not None and len(prompts):
        sample = wrapper_prompts if len(wrapper_prompts) else prompts
        if len(sample) > max_pairs:
            sample = rng.choice(sample, max_pairs, replace=False)
        campaign, campaign_sim = incidents.nearest_campaign(np.asarray(embeddings[np.sort(sample)]))

    pair_accounts = np.concatenate(
        [result.prompt_account[result.pair_lo[pairs]], result.prompt_account[result.pair_hi[pairs]]]
    )
    return FleetEvidence(
        accounts=members,
        n_prompts=len(prompts),
        own_score_mean=float(own_score[members].mean()),
        own_score_max=float(own_score[members].max()),
        template_link_share=float(by_template[members].mean()),
        ip_link_share=float(by_ip[members].mean()),
        template_concentration=concentration,
        reasoning_share=float((reasoning_rate[members] * counts).sum() / max(counts.sum(), 1)),
        content_diversity=diversity,
        timing_regularity=regularity,
        n_shared_wrappers=n_shared,
        n_wrapper_prompts=len(wrapper_prompts),
        n_wrapper_accounts=n_wrapper_accounts,
        n_content_pairs=len(pairs),
        n_content_accounts=len(np.unique(pair_accounts)),
        top_ip_prefix=top_ip,
        n_ip_accounts=n_ip,
        n_ip_user_agents=n_ua,
        campaign=campaign,
        campaign_similarity=float(campaign_sim),
        similarity_threshold=result.config.similarity_threshold,
    )


def fleet_features(evidence: Sequence[FleetEvidence]) -> np.ndarray:
    """``(n_fleets, len(FLEET_FEATURES))`` matrix for ``FleetJudge``."""
    if not evidence:
        return np.empty((0, len(FLEET_FEATURES)))
    return np.stack([e.features for e in evidence])


def fleet_labels(
    evidence: Sequence[FleetEvidence], account_labels: np.ndarray, *, min_share: float = 0.5
) -> np.ndarray:
    """Training label per fleet: 1 when at least ``min_share`` of its accounts harvest."""
    account_labels = np.asarray(account_labels)
    return np.array(
        [int(account_labels[e.accounts].mean() >= min_share) for e in evidence], dtype=np.int64
    )


# --------------------------------------------------------------------------- judging


class FleetJudge:
    """Logistic regression from fleet features to P(the fleet harvests).

    Features are standardised; classes are weighted to balance by default. The learned
    state is plain numbers (``to_dict`` / ``from_dict``, JSON, no pickle).

    Parameters
    ----------
    C:
        Inverse L2 regularisation strength.
    class_weight:
        ``"balanced"`` or ``None``.
    max_iter:
        Solver iterations.

    Example::

        judge = FleetJudge().fit(fleet_features(evidence), fleet_labels(evidence, labels))
        scores = judge.predict_proba(fleet_features(new_evidence))[:, 1]
    """

    def __init__(
        self,
        C: float = 1.0,
        class_weight: Literal["balanced"] | None = "balanced",
        max_iter: int = 1000,
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(self, fleet_features: np.ndarray, labels: np.ndarray) -> FleetJudge:
        from sklearn.linear_model import LogisticRegression

        x = self._check_x(fleet_features)
        y = np.asarray(labels).ravel()
        if len(y) != len(x):
            raise ValueError(f"got {len(x)} fleets but {len(y)} labels")
        if len(np.unique(y)) != 2:
            raise ValueError(
                "FleetJudge.fit needs fleets of both classes (harvesting = 1, organic = 0); "
                f"got labels {sorted(set(y.tolist()))}"
            )
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter
        ).fit((x - mean) / scale, y)
        self.mean_ = mean
        self.scale_ = scale
        self.coef_ = model.coef_.ravel().astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        self.classes_ = np.array([0, 1])
        self.feature_names_ = list(FLEET_FEATURES)
        return self

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(FLEET_FEATURES):
            raise ValueError(
                f"expected fleet features of shape (n, {len(FLEET_FEATURES)}) in the order "
                f"{FLEET_FEATURES}, got {x.shape}"
            )
        return x

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This FleetJudge is not fitted yet: call fit(fleet_features, labels) or "
                "FleetJudge.from_dict(...) before predict_proba."
            )

    def decision_function(self, fleet_features: np.ndarray) -> np.ndarray:
        self._check_fitted()
        x = self._check_x(fleet_features)
        return ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, fleet_features: np.ndarray) -> np.ndarray:
        """``(n, 2)``: columns P(organic), P(harvesting)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(fleet_features)))
        return np.column_stack([1.0 - p, p])

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "kind": "FleetJudge",
            "version": 1,
            "params": {"C": self.C, "class_weight": self.class_weight, "max_iter": self.max_iter},
            "feature_names": list(self.feature_names_),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetJudge:
        if data.get("kind") != "FleetJudge":
            raise ValueError(f"not a FleetJudge record (kind={data.get('kind')!r})")
        if list(data["feature_names"]) != list(FLEET_FEATURES):
            raise ValueError(
                f"saved FleetJudge uses features {data['feature_names']}, this code computes "
                f"{list(FLEET_FEATURES)}; retrain the model"
            )
        judge = cls(**data["params"])
        judge.mean_ = np.asarray(data["mean"], dtype=np.float64)
        judge.scale_ = np.asarray(data["scale"], dtype=np.float64)
        judge.coef_ = np.asarray(data["coef"], dtype=np.float64)
        judge.intercept_ = float(data["intercept"])
        judge.classes_ = np.array([0, 1])
        judge.feature_names_ = list(FLEET_FEATURES)
        return judge


def combine_account_score(
    own_score: np.ndarray | float,
    fleet_score: np.ndarray | float | None,
    n_events: np.ndarray | float,
    *,
    half_events: float = 20.0,
) -> np.ndarray:
    """An account's score after hearing its fleet's evidence.

    ``combined = own + w * max(0, fleet - own)`` with ``w = half_events / (half_events +
    n_events)``: a fleet can only lift an account, never clear it (an account whose own
    stream is damning stays damning inside an innocent-looking crowd), and it lifts most
    the accounts that have said least: at ``n_events == half_events`` the account's own
    evidence and the fleet's weigh the same. With the default, a 5-event account in a
    fleet scored 0.95 goes from 0.20 to 0.80; a 200-event account only to 0.27.
    ``fleet_score`` NaN or None (no fleet) leaves ``own_score`` unchanged.
    """
    own = np.asarray(own_score, dtype=np.float64)
    if fleet_score is None:
        return own.copy()
    fleet = np.asarray(fleet_score, dtype=np.float64)
    n = np.maximum(np.asarray(n_events, dtype=np.float64), 0.0)
    weight = half_events / (half_events + n)
    lift = np.where(np.isnan(fleet), 0.0, np.maximum(np.nan_to_num(fleet) - own, 0.0))
    return np.clip(own + weight * lift, 0.0, 1.0)


# --------------------------------------------------------------------------- output


@dataclass
class Fleet:
    """One coordinated cluster, as the contract's fleet line."""

    fleet_id: str
    accounts: list[str]
    score: float
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["score"] = round(float(self.score), 4)
        return record


def fleet_reasons(evidence: FleetEvidence, *, incident_threshold: float = 0.85) -> list[str]:
    """Checkable evidence sentences for one fleet, strongest first."""
    e = evidence
    reasons: list[str] = []
    if e.campaign is not None and e.campaign_similarity >= incident_threshold:
        reasons.append(
            f"prompts {e.campaign_similarity:.2f}-similar to known campaign {e.campaign}"
        )
    if e.n_shared_wrappers:
        wrappers = "wrapper" if e.n_shared_wrappers == 1 else "wrappers"
        reasons.append(
            f"{e.n_wrapper_accounts} accounts share {e.n_shared_wrappers} prompt {wrappers} "
            f"across {e.n_wrapper_prompts} prompts"
        )
    if e.n_content_pairs:
        reasons.append(
            f"{e.n_content_accounts} accounts send near-duplicate prompts "
            f"({e.n_content_pairs} cross-account pairs at similarity >= {e.similarity_threshold:.2f})"
        )
    if e.reasoning_share >= 0.3:
        reasons.append(f"reasoning elicitation in {e.reasoning_share:.0%} of the fleet's prompts")
    if e.top_ip_prefix is not None:
        agents = "user agent" if e.n_ip_user_agents == 1 else "user agents"
        reasons.append(
            f"{e.n_ip_accounts} accounts share IP prefix {e.top_ip_prefix} "
            f"and {e.n_ip_user_agents} {agents}"
        )
    if e.content_diversity >= 0.25 and e.n_shared_wrappers:
        reasons.append(
            f"different content through the same wrappers (content diversity {e.content_diversity:.2f})"
        )
    elif e.content_diversity < 0.1:
        reasons.append(
            f"linked prompts are near-identical (content diversity {e.content_diversity:.2f}): "
            "one question in many words, or one dominant wrapper"
        )
    if e.timing_regularity >= 0.8:
        reasons.append(f"machine-regular timing (regularity {e.timing_regularity:.2f})")
    return reasons


def build_fleets(
    evidence: Sequence[FleetEvidence],
    scores: np.ndarray,
    account_ids: Sequence[str],
    *,
    incident_threshold: float = 0.85,
) -> list[Fleet]:
    """Contract fleet records, highest score first (ties: larger first), ids ``f-1, f-2, ...``.

    Ids are stable for a given input: the order depends only on scores, sizes and the
    smallest account id of each fleet.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) != len(evidence):
        raise ValueError(f"got {len(scores)} scores for {len(evidence)} fleets")
    rows = []
    for e, score in zip(evidence, scores, strict=True):
        names = sorted(account_ids[int(a)] for a in e.accounts)
        rows.append((-round(float(score), 6), -len(names), names[0], names, float(score), e))
    rows.sort(key=lambda r: r[:3])
    return [
        Fleet(f"f-{i}", names, score, fleet_reasons(e, incident_threshold=incident_threshold))
        for i, (*_, names, score, e) in enumerate(rows, start=1)
    ]


def account_fleet_ids(fleets: Sequence[Fleet]) -> dict[str, str]:
    """``{account_id: fleet_id}`` for the score output's ``fleet_id`` field."""
    return {account: fleet.fleet_id for fleet in fleets for account in fleet.accounts}
