"""Training-only augmentations: harvesting prompts spliced into organic streams (dilution),
and organic accounts of one kind chained into one stream (chaining).

What it knows: how to make a training account that hides harvesting inside ordinary use
out of two accounts already in the training split, an organic one (the cover traffic) and a
harvesting one whose harvesting prompts are known (the donor), reusing their embeddings so
that nothing is embedded again.

Why. Campaigns that dilute their harvesting (a few per cent of an account's prompts, the
rest ordinary use) are the hardest to catch, and a detector trained only on the kinds of
harvesting its training data happens to contain learns that harvesting accounts harvest
all the time. Splicing teaches the general shape, "organic use with harvesting prompts
mixed in", from whatever harvesting the training data has: a model trained without any
diluted kind still sees diluted accounts (the leave-one-kind-out run for ``slow_drip``
measures exactly that).

What a spliced account is. The organic account's events, in order and unchanged, with ``k``
of the donor's harvesting events inserted at random positions (``augmented_examples``
draws ``k = round(share * n)``, at least ``min_harvest``, ``share`` log-uniform in
``shares``). An inserted
event keeps the donor's prompt, requested ``max_tokens``, system prompt and model, takes
the organic account's IP and user agent (one account, one client; with ``cover_client``
also the system prompt and model of the organic event before it, so that no client field
but the requested output size tells an inserted prompt apart), gets a timestamp drawn
between its new neighbours' (so the account's pace stays the organic one), and opens its own
conversation. The account is labelled harvesting, and its per-prompt labels say which
prompts were inserted, so the position weights (``AccountExample.position_weights``) do not
ask the network to flag it before its harvesting prompts arrive.

Chaining (``chained_examples``). An organic account made of the starts of two or three
organic training accounts of one kind, one after the other, as one client: an evaluation
team that runs a suite (a few items of one benchmark, then the next), a batch pipeline that
moves on to another job, a shared key. Why: each evaluation team of a training simulation
runs one benchmark, so every one of them repeats one task's phrasing and stays in one
topic, and a network can learn "near-duplicates in one topic, sent in a burst" as the mark
of an evaluation team. A team running a benchmark of many topics (a competition-math set)
then reads as a sweep (the unseen-corpora experiment's fold B). A chained account keeps
what the kind does (the burst, the plain wrapper, the client) and breaks what one
benchmark's content happens to share. It is as long as its first account (so the length
distribution of the training split stays), its segments are the first events of each
account, each segment after the first starts one of its own typical gaps after the last
event before it, and every event takes the first account's addresses and user agents in
that account's order; prompts, embeddings, ``max_tokens``, system prompts and models are
each event's own. Label organic, kind ``augmented_chain``.

What it does not know: how features are computed (both builders run the extractor they are
given), the network, or where the accounts come from; the caller (``training.train``)
passes training-split accounts only, so validation stays untouched.

Example::

    rng = np.random.default_rng(0)
    made = splice(organic, organic_emb, donor, donor_emb, donor_y, 4, rng)
    made.account, made.emb, made.prompt_y   # 4 harvesting events inserted
    suite, suite_emb = chain([(team_a, emb_a), (team_b, emb_b)], rng)   # one account, organic
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.events import AccountEvents
from model.features import FeatureExtractor
from training.dataset import AccountExample, featurize

#: ``kind`` of a spliced training account (shown in the training summary).
KIND = "augmented_dilution"
#: ``kind`` of a chained organic training account.
CHAIN_KIND = "augmented_chain"


@dataclass(frozen=True)
class Splice:
    """One spliced account: its events, embeddings and per-prompt labels (1 inserted)."""

    account: AccountEvents
    emb: np.ndarray  # (T, D), the dtype of the inputs
    prompt_y: np.ndarray  # (T,) float32


def draw_share(rng: np.random.Generator, shares: tuple[float, float]) -> float:
    """A harvesting share, log-uniform in ``shares`` (as many 1-2 % accounts as 10-20 %)."""
    lo, hi = shares
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def splice(
    organic: AccountEvents,
    organic_emb: np.ndarray,
    donor: AccountEvents,
    donor_emb: np.ndarray,
    donor_prompt_y: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    account_id: str | None = None,
    cover_client: bool = False,
) -> Splice:
    """``organic`` with ``k`` of ``donor``'s harvesting events inserted, in the donor's
    order (see the module docstring). ``cover_client``: inserted events take the system
    prompt and model of the organic event before them (the first one's at the start),
    as they take its IP and user agent.

    Raises ``ValueError`` when ``k`` < 1, when the donor has fewer than ``k`` harvesting
    prompts, or when the inputs' lengths disagree.
    """
    n = len(organic)
    if organic_emb.shape[0] != n or not donor_emb.shape[0] == len(donor) == len(donor_prompt_y):
        raise ValueError("splice: embeddings and prompt labels must match their accounts")
    if k < 1:
        raise ValueError(f"splice: k must be at least 1, got {k}")
    harvest = np.flatnonzero(np.asarray(donor_prompt_y) > 0.5)
    if len(harvest) < k:
        raise ValueError(f"splice: the donor has {len(harvest)} harvesting prompts, {k} needed")
    picked = np.sort(rng.choice(harvest, size=k, replace=False))
    # slots[j]: how many organic events come before the j-th inserted one (sorted)
    slots = np.sort(rng.integers(0, n + 1, size=k))
    total = n + k
    is_new = np.zeros(total, dtype=bool)
    is_new[slots + np.arange(k)] = True
    ts = np.empty(total, dtype=np.float64)
    ts[~is_new] = organic.ts
    # an inserted event lies between the organic events around it; at the end, a typical
    # gap of the account after the last one
    gaps = np.diff(organic.ts)
    typical = float(np.median(gaps)) if len(gaps) else 60.0
    for j, s in enumerate(slots):
        lo = organic.ts[s - 1] if s > 0 else organic.ts[0] - typical
        hi = organic.ts[s] if s < n else organic.ts[-1] + typical
        ts[s + j] = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    ts = np.maximum.accumulate(ts)  # equal neighbours or rounding keep the order

    def merged(own: Sequence, theirs: Sequence) -> list:
        own_it, their_it = iter(own), iter(theirs)
        return [next(their_it) if new else next(own_it) for new in is_new]

    new_conv = [f"aug-{donor.account_id}-{int(i)}" for i in picked]
    client_ip = [organic.ip[min(s, n - 1)] for s in slots]
    client_ua = [organic.user_agent[min(s, n - 1)] for s in slots]
    if cover_client:  # the client of the organic event before (the first, at the start)
        system = [organic.system[max(s - 1, 0)] for s in slots]
        model = [organic.model[max(s - 1, 0)] for s in slots]
    else:
        system = [donor.system[i] for i in picked]
        model = [donor.model[i] for i in picked]
    max_tokens = np.empty(total, dtype=np.float64)
    max_tokens[~is_new] = organic.max_tokens
    max_tokens[is_new] = donor.max_tokens[picked]
    account = AccountEvents(
        account_id=account_id or f"{organic.account_id}+{donor.account_id}",
        ts=ts,
        prompts=merged(organic.prompts, [donor.prompts[i] for i in picked]),
        max_tokens=max_tokens,
        conversation_id=merged(organic.conversation_id, new_conv),
        ip=merged(organic.ip, client_ip),
        user_agent=merged(organic.user_agent, client_ua),
        system=merged(organic.system, system),
        model=merged(organic.model, model),
    )
    emb = np.empty((total, organic_emb.shape[1]), dtype=organic_emb.dtype)
    emb[~is_new] = organic_emb
    emb[is_new] = donor_emb[picked]
    return Splice(account, emb, is_new.astype(np.float32))


def augmented_examples(
    accounts: Sequence[AccountEvents],
    examples: Sequence[AccountExample],
    n: int,
    extractor: FeatureExtractor,
    shares: tuple[float, float],
    seed: int,
    *,
    min_events: int = 20,
    min_harvest: int = 2,
    cover_client: bool = False,
) -> list[AccountExample]:
    """``n`` spliced training examples from ``accounts`` / ``examples`` (aligned lists).

    Cover accounts: organic examples of at least ``min_events`` events. Donors: harvesting
    examples whose harvesting prompts are all known. Each splice draws a cover, a share and
    a donor with enough harvesting prompts for it (the share is lowered to what the
    richest donor allows). Returns ``[]`` when there is no cover or no donor.
    """
    if len(accounts) != len(examples):
        raise ValueError("augmented_examples: accounts and examples must be aligned")
    covers = [i for i, e in enumerate(examples) if e.label == 0 and len(e) >= min_events]
    donors: list[int] = []
    counts: list[int] = []  # each donor's harvesting prompts
    for i, e in enumerate(examples):
        if e.label != 1 or e.prompt_y is None or np.isnan(e.prompt_y).any():
            continue
        h = int(np.sum(e.prompt_y > 0.5))
        if h >= min_harvest:
            donors.append(i)
            counts.append(h)
    if n <= 0 or not covers or not donors:
        return []
    n_harvest = np.array(counts)
    rng = np.random.default_rng(seed)
    out: list[AccountExample] = []
    for j in range(n):
        c = covers[int(rng.integers(len(covers)))]
        cover = accounts[c]
        k = min(max(min_harvest, round(draw_share(rng, shares) * len(cover))), int(n_harvest.max()))
        able = np.flatnonzero(n_harvest >= k)
        d = donors[int(able[rng.integers(len(able))])]
        donor, donor_ex = accounts[d], examples[d]
        made = splice(
            cover,
            examples[c].emb,
            donor,
            donor_ex.emb,
            donor_ex.prompt_y,  # type: ignore[arg-type]
            k,
            rng,
            account_id=f"aug-{j}:{cover.account_id}+{donor.account_id}",
            cover_client=cover_client,
        )
        out.append(
            featurize(
                made.account,
                made.emb,
                extractor,
                label=1,
                kind=KIND,
                campaign=donor_ex.campaign,
                prompt_y=made.prompt_y,
            )
        )
    return out


def _typical_gap(ts: np.ndarray) -> float:
    gaps = np.diff(ts)
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if len(gaps) else 60.0


def chain(
    parts: Sequence[tuple[AccountEvents, np.ndarray]],
    rng: np.random.Generator,
    *,
    account_id: str | None = None,
) -> tuple[AccountEvents, np.ndarray]:
    """One account from the starts of ``parts`` (accounts with their embeddings), as long as
    the first of them (shorter where the others run out), in the order given (see the module
    docstring). Returns the account and its embeddings.

    Raises ``ValueError`` for fewer than two parts, an empty part, or embeddings whose
    length disagrees with their account's.
    """
    if len(parts) < 2:
        raise ValueError(f"chain: needs at least two accounts, got {len(parts)}")
    for acc, emb in parts:
        if len(acc) == 0 or emb.shape[0] != len(acc):
            raise ValueError(
                f"chain: account {acc.account_id!r} is empty or its embeddings disagree"
            )
    first = parts[0][0]
    parts = parts[: len(first)]  # one event each at least, within the first one's length
    k = len(parts)
    # Segment lengths: a Dirichlet split of the first account's length, at least one event
    # each, none longer than its account.
    split = np.maximum(1, np.floor(rng.dirichlet(np.ones(k)) * len(first))).astype(int)
    while split.sum() > len(first):  # the floor of one can overshoot
        split[int(np.argmax(split))] -= 1
    lengths = [int(min(n, len(acc))) for n, (acc, _) in zip(split, parts, strict=True)]
    segs = [acc.head(n) for (acc, _), n in zip(parts, lengths, strict=True)]
    ts_parts = [segs[0].ts.astype(np.float64)]
    for seg, (acc, _) in zip(segs[1:], parts[1:], strict=True):
        start = ts_parts[-1][-1] + _typical_gap(acc.ts)
        ts_parts.append(seg.ts - seg.ts[0] + start)
    total = sum(lengths)  # at most len(first): the split's sum is, and no segment grows
    conv = [
        None if c is None else f"chain{i}-{c}"
        for i, seg in enumerate(segs)
        for c in seg.conversation_id
    ]
    account = AccountEvents(
        account_id=account_id or "+".join(acc.account_id for acc, _ in parts),
        ts=np.maximum.accumulate(np.concatenate(ts_parts)),
        prompts=[p for seg in segs for p in seg.prompts],
        max_tokens=np.concatenate([seg.max_tokens for seg in segs]).astype(np.float64),
        conversation_id=conv,
        ip=first.ip[:total],  # the first account's client, in its order
        user_agent=first.user_agent[:total],
        system=[x for seg in segs for x in seg.system],
        model=[x for seg in segs for x in seg.model],
    )
    emb = np.concatenate([e[:n] for (_, e), n in zip(parts, lengths, strict=True)])
    return account, emb


def chained_examples(
    accounts: Sequence[AccountEvents],
    examples: Sequence[AccountExample],
    per_kind: int,
    extractor: FeatureExtractor,
    seed: int,
    *,
    kinds: Sequence[str] = (),
    max_parts: int = 3,
) -> list[AccountExample]:
    """``per_kind`` chained organic examples for every organic kind of ``examples`` (aligned
    with ``accounts``) that has at least two accounts, or for those of ``kinds`` only when it
    is given. Each chains two to ``max_parts`` distinct accounts of that kind, in random
    order. Accounts without a kind form one kind ("organic"). Returns ``[]`` when
    ``per_kind`` is 0 or no kind has two accounts.
    """
    if len(accounts) != len(examples):
        raise ValueError("chained_examples: accounts and examples must be aligned")
    if max_parts < 2:
        raise ValueError(f"chained_examples: max_parts must be >= 2, got {max_parts}")
    out: list[AccountExample] = []
    if per_kind <= 0:
        return out
    by_kind: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        if e.label == 0 and e.kind != CHAIN_KIND and (not kinds or e.kind in kinds):
            by_kind.setdefault(e.kind, []).append(i)
    rng = np.random.default_rng(seed)
    for kind in sorted(by_kind):
        members = by_kind[kind]
        if len(members) < 2:
            continue
        for j in range(per_kind):
            k = int(rng.integers(2, min(max_parts, len(members)) + 1))
            picked = [members[int(i)] for i in rng.choice(len(members), size=k, replace=False)]
            account, emb = chain(
                [(accounts[i], examples[i].emb) for i in picked],
                rng,
                account_id=f"chain-{kind}-{j}:" + "+".join(accounts[i].account_id for i in picked),
            )
            out.append(
                featurize(
                    account,
                    emb,
                    extractor,
                    label=0,
                    kind=CHAIN_KIND,
                    campaign=None,
                    prompt_y=np.zeros(len(account), dtype=np.float32),
                )
            )
    return out


__all__ = [
    "CHAIN_KIND",
    "KIND",
    "Splice",
    "augmented_examples",
    "chain",
    "chained_examples",
    "draw_share",
    "splice",
]
