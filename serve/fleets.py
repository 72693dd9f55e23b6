"""Live fleets: the fleet stage of ``model/fleet.py`` run on the service's own traffic.

What it knows: which inputs of an acknowledged ingest the fleet stage needs (per prompt the
embedding the service already computed, its wrapper signature and time; per account its IP
prefix, user agent, own score and reasoning share), how they are bounded, and how a
``GET /v1/fleets`` turns them into contract fleets without slowing ingest down.

Three pieces, three locks:

* **Ingest** (under the service's ingest lock) only prepares these inputs and, once the
  store has committed them, appends them to a pending list (one short lock). It never
  links.
* **The window** is persisted by the store in the same transaction as the account states
  (``serve/store.py``): each account keeps its ``max_prompts_per_account`` newest prompts,
  the whole window its ``max_prompts`` newest (by arrival); older prompts are evicted in
  that transaction. What was acknowledged survives a restart: the service rebuilds the
  linker from the window at start-up (``warm_up``, in a background thread).
* **Computing** (its own lock) drains the pending list into an incremental
  :class:`~model.fleet.FleetLinker`, links, clusters, judges and caches the result. The
  linker cannot forget prompts, so it is rebuilt from the persisted window when more than
  half of what it holds has been evicted, and whenever the pending list outgrew
  ``max_prompts`` between two computations (the list is then dropped: the window already
  holds it). Memory therefore stays O(``max_prompts``) however long the service runs.

Fleets are judged with the model's fitted fleet judge (``detector.fleet_model.judge_``).
A model without one gets **unjudged** fleets: their score is the mean own score of their
members, a summary rather than a probability that the fleet harvests.

What it does not know: HTTP, SQL, how links are found or fleets judged (``model/fleet.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from model.events import AccountEvents
from model.fleet import (
    FleetLinker,
    LinkConfig,
    build_fleets,
    describe_fleets,
    fleet_features,
    template_signature,
)
from model.fleet_index import unit_rows
from model.fleet_model import ip_prefix, most_common
from model.scorer import Detector
from serve.store import AccountStore, FleetAccount, FleetPrompt, FleetWrite, FleetWritten
from serve.workers import fleet_rows

log = logging.getLogger(__name__)

_READ_CHUNK = 4096  # window rows per store read while rebuilding (ingest commits in between)
_ADD_CHUNK = 16_384  # prompts per linker add: bounds the float32 copy
_TRAIN_SAMPLE = 50_000  # window prompts the IVF index trains on (it keeps ~48 per list anyway)


def with_fleet_id(score_json: str | bytes, fleet_id: str | None) -> bytes:
    """A stored contract score (JSON) with its ``fleet_id`` set."""
    score = orjson.loads(score_json)
    score["fleet_id"] = fleet_id
    return orjson.dumps(score)


@dataclass(frozen=True)
class FleetBatch:
    """One ingest's fleet inputs, prepared from the request alone (before any lock).

    Only an account's ``max_prompts_per_account`` newest prompts of the request are kept:
    older ones would be evicted in the same transaction.
    """

    account_ids: list[str]  # (n,) per prompt
    embeddings: np.ndarray  # (n, D) float16
    template_keys: np.ndarray  # (n,) int64
    ts: np.ndarray  # (n,) float64
    ip_prefix: dict[str, str | None]  # per account: its most common IP's prefix in the request
    user_agent: dict[str, str | None]
    prompt_ip_prefix: list[str | None] | None = None  # (n,) per prompt; None: not known

    def __len__(self) -> int:
        return len(self.account_ids)


@dataclass(frozen=True)
class _Pending:
    """A committed batch waiting to be linked: its prompts have seq ``first_seq...``."""

    batch: FleetBatch
    first_seq: int
    accounts: list[FleetAccount]


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleets of one computation, highest score first, and who belongs to which."""

    fleets: list[dict[str, Any]] = field(default_factory=list)
    fleet_of: dict[str, str] = field(default_factory=dict)
    version: int = -1  # ingests it covers; -1: never computed
    computed_at: float = -np.inf  # time.monotonic()
    judged: bool = False
    n_prompts: int = 0
    n_accounts: int = 0


class _Rows:
    """A growable (n, D) float16 matrix: the linker's prompts, by linker prompt id."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self._data = np.empty((max(capacity, 1), dim), dtype=np.float16)
        self._size = 0

    def extend(self, rows: np.ndarray) -> None:
        need = self._size + len(rows)
        if need > len(self._data):
            grown = np.empty((max(need, 2 * len(self._data)), self._data.shape[1]), np.float16)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = rows
        self._size = need

    def view(self) -> np.ndarray:
        return self._data[: self._size]


class _Linked:
    """What the linker holds: the linker itself, its prompts' embeddings and, per dense
    account index, the account id and its latest fleet inputs. Touched only while
    computing (under the compute lock)."""

    def __init__(self, dim: int, config: LinkConfig, expected_prompts: int) -> None:
        self.linker = FleetLinker(dim, config, expected_prompts=expected_prompts)
        self.rows = _Rows(dim, expected_prompts)
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.ip: list[str | None] = []
        self.ua: list[str | None] = []
        self.own: list[float] = []
        self.reasoning: list[float] = []
        self.n_events: list[int] = []
        self.prefixes: list[set[str]] = []  # every IP prefix an account's linked prompts used

    def account(self, account_id: str) -> int:
        idx = self.index.get(account_id)
        if idx is None:
            idx = self.index[account_id] = len(self.ids)
            self.ids.append(account_id)
            self.ip.append(None)
            self.ua.append(None)
            self.own.append(0.0)
            self.reasoning.append(0.0)
            self.n_events.append(0)
            self.prefixes.append(set())
        return idx

    def set_info(self, a: FleetAccount) -> None:
        i = self.account(a.account_id)
        self.ip[i] = a.ip_prefix or self.ip[i]  # None keeps what was known (as the store does)
        self.ua[i] = a.user_agent or self.ua[i]
        self.own[i] = a.own_score
        self.reasoning[i] = a.reasoning_rate
        self.n_events[i] = max(self.n_events[i], a.n_events)

    def add(
        self,
        account_ids: Sequence[str],
        embeddings: np.ndarray,
        keys: np.ndarray,
        ts: np.ndarray,
        prefixes: Sequence[str | None] | None = None,
    ) -> None:
        """Link new prompts (``embeddings`` float16, not yet in :attr:`rows`)."""
        first = self.linker.n_prompts
        self.rows.extend(embeddings)
        self.link_rows(first, account_ids, keys, ts, prefixes)

    def link_rows(
        self,
        first: int,
        account_ids: Sequence[str],
        keys: np.ndarray,
        ts: np.ndarray,
        prefixes: Sequence[str | None] | None = None,
    ) -> None:
        """Link the prompts already in :attr:`rows` from row ``first`` on (``prefixes``: the
        IP prefix each came from, if known)."""
        if not len(account_ids):
            return
        idx = np.fromiter((self.account(a) for a in account_ids), np.int64, len(account_ids))
        if prefixes is not None:
            for i, prefix in zip(idx.tolist(), prefixes, strict=True):
                if prefix:
                    self.prefixes[i].add(prefix)
        rows = self.rows.view()[first:]
        for s in range(0, len(idx), _ADD_CHUNK):
            part = slice(s, s + _ADD_CHUNK)
            self.linker.add(idx[part], unit_rows(rows[part]), keys[part], ts[part])


class LiveFleets:
    """Coordinated clusters among the accounts the service has ingested (see module doc).

    Example::

        fleets = LiveFleets(max_prompts_per_account=64, max_prompts=100_000, cache_seconds=5)
        batch = fleets.prepare(accounts, embeddings)              # one request's fleet inputs
        write = fleets.write(batch, {"a-1": (0.91, 0.4)})         # own score, reasoning share
        written = store.put_many(records, write)                  # one transaction
        fleets.committed(batch, write, written)
        fleets.current(detector, store).fleets                    # GET /v1/fleets
    """

    def __init__(
        self, *, max_prompts_per_account: int, max_prompts: int, cache_seconds: float
    ) -> None:
        self.max_prompts_per_account = max_prompts_per_account
        self.max_prompts = max_prompts
        self.cache_seconds = cache_seconds
        # ingest side (short critical sections)
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._n_pending = 0
        self._version = 0
        self._evicted = 0  # window prompts evicted since the last rebuild
        self._rebuild = True  # the linker starts from the persisted window
        # compute side
        self._compute_lock = threading.Lock()
        self._linked: _Linked | None = None
        self._read_upto = 0  # last seq of the window read by the last rebuild
        self._snapshot = FleetSnapshot()

    # ------------------------------------------------------------------ ingest side

    def prepare(
        self,
        accounts: Sequence[AccountEvents],
        embeddings: np.ndarray,
        linkable: np.ndarray | None = None,
        template_keys: np.ndarray | None = None,
    ) -> FleetBatch:
        """The fleet inputs of one request (``embeddings``: its prompts, account by account;
        ``linkable``: which of them may link accounts, None for all; ``template_keys``: the
        wrapper keys of the prompts kept, :func:`serve.workers.fleet_rows`, when already
        computed, None to compute them here)."""
        keep: list[np.ndarray] = []
        ids: list[str] = []
        start = 0
        for acc in accounts:
            n = len(acc)
            part = None if linkable is None else linkable[start : start + n]
            rows = start + fleet_rows(part, n, self.max_prompts_per_account)
            keep.append(rows)
            ids.extend([acc.account_id] * len(rows))
            start += n
        rows = np.concatenate(keep) if keep else np.empty(0, dtype=np.int64)
        if len(rows) > self.max_prompts:  # a request larger than the whole window
            rows, ids = rows[-self.max_prompts :], ids[-self.max_prompts :]
        prompts = [p for acc in accounts for p in acc.prompts]
        ips = [ip for acc in accounts for ip in acc.ip]
        ts = np.concatenate([acc.ts for acc in accounts]) if accounts else np.empty(0)
        return FleetBatch(
            account_ids=ids,
            embeddings=np.asarray(embeddings, dtype=np.float32)[rows].astype(np.float16),
            template_keys=template_keys[rows]
            if template_keys is not None
            else np.fromiter(
                (template_signature(prompts[r]) for r in rows.tolist()), np.int64, len(rows)
            ),
            ts=ts[rows].astype(np.float64),
            ip_prefix={a.account_id: ip_prefix(most_common(a.ip)) for a in accounts},
            user_agent={a.account_id: most_common(a.user_agent) for a in accounts},
            prompt_ip_prefix=[ip_prefix(ips[r]) for r in rows.tolist()],
        )

    def write(self, batch: FleetBatch, scores: dict[str, tuple[float, float, int]]) -> FleetWrite:
        """What the store writes with the states: ``scores`` maps each account of the batch
        to its new (own score, reasoning share, events sent in all)."""
        e = batch.embeddings
        prefixes = batch.prompt_ip_prefix or [None] * len(batch)
        prompts = [
            FleetPrompt(a, float(t), int(k), e[i].tobytes(), prefixes[i])
            for i, (a, t, k) in enumerate(
                zip(batch.account_ids, batch.ts.tolist(), batch.template_keys.tolist(), strict=True)
            )
        ]
        accounts = [
            FleetAccount(a, batch.ip_prefix.get(a), batch.user_agent.get(a), own, rr, n)
            for a, (own, rr, n) in scores.items()
        ]
        return FleetWrite(prompts, accounts, self.max_prompts_per_account, self.max_prompts)

    def committed(self, batch: FleetBatch, write: FleetWrite, written: FleetWritten) -> None:
        """Queue a committed batch for the next computation (call it under the service's
        ingest lock, so an account's batches queue in commit order)."""
        with self._lock:
            self._version += 1
            self._evicted += written.n_evicted
            if self._rebuild:  # the next computation reads the window anyway
                return
            self._pending.append(_Pending(batch, written.first_seq, list(write.accounts)))
            self._n_pending += len(batch)
            if self._n_pending > self.max_prompts:  # nobody asked for fleets in a long while
                self._pending, self._n_pending, self._rebuild = [], 0, True

    def fleet_id(self, account_id: str) -> str | None:
        """The account's fleet in the last computation (None if none, or none computed)."""
        return self._snapshot.fleet_of.get(account_id)

    @property
    def snapshot(self) -> FleetSnapshot:
        return self._snapshot

    # ------------------------------------------------------------------ compute side

    def warm_up(self, detector: Detector, store: AccountStore) -> None:
        """Rebuild the linker from the persisted window now (at start-up), so that the first
        ``current`` only links. It publishes no fleets: an account's ``fleet_id`` is always
        the one of the last fleets asked for."""
        with self._compute_lock:
            t0 = time.perf_counter()
            try:
                linked, _ = self._catch_up(detector, store)
            except BaseException:
                with self._lock:
                    self._rebuild = True
                raise
            log.info(
                "fleet window loaded",
                extra={
                    "prompts": 0 if linked is None else linked.linker.n_prompts,
                    "seconds": round(time.perf_counter() - t0, 3),
                },
            )

    def current(self, detector: Detector, store: AccountStore) -> FleetSnapshot:
        """The current fleets: cached while younger than ``cache_seconds`` or while no
        event arrived since; otherwise recomputed (one computation at a time)."""
        with self._compute_lock:
            snap = self._snapshot
            with self._lock:
                version = self._version
            fresh = time.monotonic() - snap.computed_at < self.cache_seconds
            if snap.version >= 0 and (snap.version == version or fresh):
                return snap
            t0 = time.perf_counter()
            try:
                linked, version = self._catch_up(detector, store)
            except BaseException:
                with self._lock:
                    self._rebuild = True  # the linker may be half-updated: start over next time
                raise
            snap = self._compute(detector, linked, version)
            self._snapshot = snap
            log.info(
                "fleets computed",
                extra={
                    "fleets": len(snap.fleets),
                    "accounts": snap.n_accounts,
                    "prompts": snap.n_prompts,
                    "judged": snap.judged,
                    "seconds": round(time.perf_counter() - t0, 3),
                },
            )
            return snap

    def _catch_up(self, detector: Detector, store: AccountStore) -> tuple[_Linked | None, int]:
        """Bring the linker up to date with everything committed; returns the version covered."""
        with self._lock:
            linked_n = self._linked.linker.n_prompts if self._linked is not None else 0
            rebuild = self._rebuild or 2 * self._evicted > linked_n
            if rebuild:  # the window holds everything pending: drop it, read the window
                self._pending, self._n_pending = [], 0
                self._evicted, self._rebuild = 0, False
            pending, self._pending, self._n_pending = self._pending, [], 0
            version = self._version
        if rebuild:
            self._linked, self._read_upto = self._read_window(detector, store)
            with self._lock:
                pending, self._pending, self._n_pending = self._pending, [], 0
                version = self._version
        for p in pending:
            self._drain(detector, p)
        return self._linked, version

    def _new_linked(self, detector: Detector, dim: int, expected: int) -> _Linked:
        fleet_model = getattr(detector, "fleet_model", None)
        config = getattr(fleet_model, "link_config", None) or LinkConfig()
        return _Linked(dim, config, expected)

    def _read_window(self, detector: Detector, store: AccountStore) -> tuple[_Linked | None, int]:
        """A new linker over the persisted window, and the last ``seq`` read.

        Read in chunks (ingest commits in between); ``seq`` order is commit order, so every
        prompt with a ``seq`` up to the last one read is in what was read, or was evicted
        in the meantime: it must not be linked again when its batch is drained.
        """
        linked: _Linked | None = None
        ids: list[str] = []
        ts: list[float] = []
        keys: list[int] = []
        prefixes: list[str | None] = []
        last = after = 0
        while True:
            rows = store.fleet_prompts(after, _READ_CHUNK)
            if not rows:
                break
            blobs = [r[4] for r in rows]
            sizes = {len(b) for b in blobs}
            dim = len(blobs[0]) // 2
            if linked is not None:
                sizes.add(2 * linked.rows.view().shape[1])
            if len(sizes) != 1 or len(blobs[0]) % 2:
                raise ValueError(
                    f"the fleet window holds embeddings of {sorted(sizes)} bytes, expected one "
                    "float16 size: was the database written with another embedder?"
                )
            if linked is None:
                expected = min(self.max_prompts, max(len(rows), 1024))
                linked = self._new_linked(detector, dim, expected)
            linked.rows.extend(np.frombuffer(b"".join(blobs), np.float16).reshape(len(rows), dim))
            ids.extend(r[1] for r in rows)
            ts.extend(r[2] for r in rows)
            keys.extend(r[3] for r in rows)
            prefixes.extend(r[5] for r in rows)
            last = after = rows[-1][0]
            if len(rows) < _READ_CHUNK:
                break
        if linked is None:
            return None, last
        n = len(ids)
        config = linked.linker.config
        if n > config.exact_max:  # train on a sample of the whole window, as batch linking does
            rng = np.random.default_rng(config.seed)
            sample = np.sort(rng.choice(n, min(n, _TRAIN_SAMPLE), replace=False))
            linked.linker.index.train(unit_rows(linked.rows.view()[sample]))
        for account_id in dict.fromkeys(ids):
            linked.account(account_id)
        for account_id, ip, ua, own, rr, n_events in store.fleet_accounts(linked.ids):
            linked.set_info(FleetAccount(account_id, ip, ua, own, rr, n_events))
        linked.link_rows(
            0, ids, np.asarray(keys, dtype=np.int64), np.asarray(ts, dtype=np.float64), prefixes
        )
        return linked, last

    def _drain(self, detector: Detector, p: _Pending) -> None:
        """Link a committed batch, less the prompts the last rebuild read from the window
        (a batch may be queued only after a rebuild read it: ``seq`` tells)."""
        b = p.batch
        if self._linked is None and len(b):
            self._linked = self._new_linked(detector, b.embeddings.shape[1], 1024)
        linked = self._linked
        assert linked is not None
        for a in p.accounts:
            linked.set_info(a)
        keep = slice(max(0, self._read_upto - p.first_seq + 1), None)
        prefixes = b.prompt_ip_prefix[keep] if b.prompt_ip_prefix is not None else None
        linked.add(
            b.account_ids[keep], b.embeddings[keep], b.template_keys[keep], b.ts[keep], prefixes
        )

    def _compute(self, detector: Detector, linked: _Linked | None, version: int) -> FleetSnapshot:
        now = time.monotonic()
        fleet_model = getattr(detector, "fleet_model", None)
        judge = getattr(fleet_model, "judge_", None)
        if linked is None or linked.linker.n_prompts == 0:
            return FleetSnapshot(version=version, computed_at=now, judged=judge is not None)
        # shares of what each account sent while the window could hold it: at most its
        # per-account bound (the window keeps an account's newest linkable prompts only)
        sent = np.minimum(np.asarray(linked.n_events, dtype=np.int64), self.max_prompts_per_account)
        # every prefix an account's linked prompts came from, beside its most common one
        sets = [p | {ip} if ip else p for p, ip in zip(linked.prefixes, linked.ip, strict=True)]
        linked.linker.set_account_info(linked.ip, linked.ua, sent, sets)
        result = linked.linker.link()
        evidence = describe_fleets(
            result,
            linked.rows.view(),
            np.asarray(linked.own, dtype=np.float64),
            np.asarray(linked.reasoning, dtype=np.float64),
            incidents=getattr(fleet_model, "incidents_", None),
        )
        if judge is not None and evidence:
            scores = judge.predict_proba(fleet_features(evidence))[:, 1]
        else:  # unjudged: the members' mean own score
            scores = np.array([e.own_score_mean for e in evidence], dtype=np.float64)
        fleets = [
            f.to_dict()
            for f in build_fleets(evidence, np.clip(scores, 0.0, 1.0), linked.ids)
            if len(f.accounts) >= 2
        ]
        return FleetSnapshot(
            fleets=fleets,
            fleet_of={a: f["fleet_id"] for f in fleets for a in f["accounts"]},
            version=version,
            computed_at=now,
            judged=judge is not None,
            n_prompts=linked.linker.n_prompts,
            n_accounts=len(linked.ids),
        )
