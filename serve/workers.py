"""Account updates, in the service process or spread over worker processes.

What it knows: how a request's touched accounts are brought up to date (stored state read,
or taken from the in-memory cache while it matches the stored row; extended by the new
events only; serialized for the store), and how that work is spread over worker
processes when ``DISTILLWATCH_WORKERS`` > 0, so that it runs on every core instead of
under the service's one GIL.

Design of the workers:

* Each account always goes to the same worker (a stable hash of its id), so each worker's
  cache holds its own accounts only and never disagrees with another's.
* A worker only computes. The service process embeds, then sends each worker its accounts'
  new events and embeddings; the worker reads the stored states it does not hold (its own
  read-only connection to the store, so only the state versions cross the pipe), updates,
  and answers what the store must write. The service process writes every account of the
  request in ONE transaction, as without workers, and answers after it: what was
  acknowledged is durable, and a request is stored wholly or not at all.
* A worker caches a new state at once, under the version (event count, update time) that
  the service is about to store. Should that write fail, the stored row keeps its old
  version, the entry no longer matches it, and the next update reads the store again.
* A worker that dies (killed, out of memory) is started again and its part of the request
  is sent once more: nothing of the request was stored yet. An error inside a worker
  fails the request (500) and leaves the store as it was.

What it does not know: HTTP, SQL (``serve/store.py``), how the detector scores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model.events import AccountEvents
from model.fleet import template_signature
from model.fleet_model import reasoning_rate
from model.scorer import AccountState, Detector
from serve.store import AccountStore, StoredAccount

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 300.0  # loading a model in a fresh process on a busy machine
#: A worker silent this long on one job is taken for hung: killed, started again, and the
#: request fails (a 10,000-event request takes seconds).
JOB_TIMEOUT_S = 300.0


class StateCache:
    """Deserialized states of recently active accounts, so a busy account's next event skips
    ``AccountState.from_bytes``. The store stays the truth: an entry is used only while its
    ``(n_events, updated_at)`` still match the stored row. Bounded (LRU); 0 disables it.
    """

    def __init__(self, max_accounts: int):
        self.max_accounts = max_accounts
        self._entries: OrderedDict[str, tuple[int, float, AccountState]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stored: StoredAccount) -> AccountState | None:
        with self._lock:
            entry = self._entries.get(stored.account_id)
            if entry is None or (entry[0], entry[1]) != (stored.n_events, stored.updated_at):
                return None
            self._entries.move_to_end(stored.account_id)
            return entry[2]

    def put(self, account_id: str, n_events: int, updated_at: float, state: AccountState) -> None:
        if self.max_accounts <= 0:
            return
        with self._lock:
            self._entries[account_id] = (n_events, updated_at, state)
            self._entries.move_to_end(account_id)
            while len(self._entries) > self.max_accounts:
                self._entries.popitem(last=False)

    def drop(self, account_ids: Iterable[str]) -> None:
        with self._lock:
            for a in account_ids:
                self._entries.pop(a, None)


@dataclass(frozen=True)
class UpdateJob:
    """What one account update needs besides the stored state (sent to a worker as is)."""

    now: float  # the update time stored with every state of the request
    link_min: float  # prompt probability that admits a prompt to the fleet window (0: all)
    keep_per_account: int  # newest linkable prompts per account the fleet window keeps


@dataclass(frozen=True)
class AccountUpdate:
    """One account after a request: what the store writes and what the rest needs."""

    record: StoredAccount
    previously_flagged: bool | None  # None: the account is new
    n_late: int  # new events older than the account's last stored event
    linkable: np.ndarray | None  # (T,) bool: prompts that may enter the fleet window; None: all
    #: (T,) int64 wrapper keys of the prompts the fleet window keeps (0 elsewhere); None:
    #: not computed here (the fleet layer computes them)
    template_keys: np.ndarray | None
    fleet_input: tuple[float, float, int]  # own score, reasoning share, events sent in all
    state: AccountState | None = None  # in the service process only (its cache); never sent


def fleet_rows(linkable: np.ndarray | None, n: int, keep: int) -> np.ndarray:
    """Positions (of one account's ``n`` new prompts) the fleet window keeps: the newest
    ``keep`` linkable ones."""
    rows = np.arange(n)
    if linkable is not None:
        rows = rows[linkable]
    return rows[-keep:] if keep > 0 else rows[:0]


def load_states(
    store: AccountStore, cache: StateCache, stored: dict[str, StoredAccount]
) -> dict[str, tuple[AccountState, int]]:
    """Each stored account's state and how many of its ring slots are already stored
    (as ``n_emb``: the update then writes only newer slots; 0 for a state whose ring was
    stored inside it, by an older distillwatch, so that all its slots move out).

    Cached states were written by this service (ring beside them); the others are read
    with their ring rows, fetched in one query.
    """
    out: dict[str, tuple[AccountState, int]] = {}
    missed: list[StoredAccount] = []
    for account_id, row in stored.items():
        cached = cache.get(row)
        if cached is not None:
            out[account_id] = (cached, cached.features.n_emb)
        else:
            missed.append(row)
    external = {r.account_id for r in missed if AccountState.ring_is_external(r.state)}
    rings = store.get_rings(list(external)) if external else {}
    for row in missed:
        state = AccountState.from_bytes(row.state, rings.get(row.account_id, []))
        since = state.features.n_emb if row.account_id in external else 0
        out[row.account_id] = (state, since)
    return out


def update_accounts(
    detector: Detector,
    store: AccountStore,
    cache: StateCache,
    accounts: Sequence[AccountEvents],
    embeddings: Sequence[np.ndarray],
    job: UpdateJob,
    *,
    template_keys: bool = False,
) -> list[AccountUpdate]:
    """Extend each account's stored state by its new events (nothing is written).

    ``template_keys``: also compute the wrapper keys of the prompts the fleet window keeps
    (workers do, so that this work is spread too). A state taken from ``cache`` may be
    extended in place: on an error every touched account is dropped from it.
    """
    previous = store.get_many([a.account_id for a in accounts])
    out: list[AccountUpdate] = []
    try:
        loaded = load_states(store, cache, previous)
        for acc, emb in zip(accounts, embeddings, strict=True):
            prev = previous.get(acc.account_id)
            state, ring_since = loaded.get(acc.account_id, (None, 0))
            n_late = 0
            if state is not None and state.n_events:
                n_late = int(np.count_nonzero(acc.ts < state.features.last_ts))
            new_state, score, prompt_probs = detector.update_with_prompts(
                state, acc, embeddings=emb
            )
            linkable = None
            if job.link_min > 0 and prompt_probs is not None:
                linkable = prompt_probs >= job.link_min
            keys = None
            if template_keys:
                keys = np.zeros(len(acc), dtype=np.int64)
                for r in fleet_rows(linkable, len(acc), job.keep_per_account).tolist():
                    keys[r] = template_signature(acc.prompts[r])
            out.append(
                AccountUpdate(
                    record=StoredAccount(
                        account_id=acc.account_id,
                        state=new_state.to_bytes(ring=False),
                        score_json=orjson.dumps(score.to_dict()).decode(),
                        n_events=new_state.n_events,
                        flagged=score.flagged,
                        updated_at=job.now,
                        ring=tuple(new_state.features.ring_rows(ring_since)),
                    ),
                    previously_flagged=None if prev is None else prev.flagged,
                    n_late=n_late,
                    linkable=linkable,
                    template_keys=keys,
                    fleet_input=(
                        score.score,
                        reasoning_rate(new_state.features),
                        new_state.n_events,
                    ),
                    state=new_state,
                )
            )
    except BaseException:
        cache.drop(a.account_id for a in accounts)
        raise
    return out


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to start: the model, the store, its cache size."""

    model: Path
    db: Path
    cache_accounts: int
    torch_threads: int = 1


def _worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """A worker's life: load, say ready, then answer update jobs until told to stop or the
    service's end of the pipe closes (the service exited, even by ``kill -9``)."""
    import torch

    from model.model_dir import load_model
    from serve.store import SQLiteAccountStore

    try:
        torch.set_num_threads(spec.torch_threads)
        detector = load_model(spec.model)  # never embeds: the service sends embeddings
        store = SQLiteAccountStore(spec.db, readonly=True)
    except Exception as exc:  # the service logs it and fails to start
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    cache = StateCache(spec.cache_accounts)
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        accounts, embeddings, job = msg
        try:
            updates = update_accounts(
                detector, store, cache, accounts, embeddings, job, template_keys=True
            )
            for u in updates:  # see the module doc: cached under the version to be stored
                assert u.state is not None
                cache.put(u.record.account_id, u.record.n_events, u.record.updated_at, u.state)
            reply: tuple[str, Any] = ("ok", [dataclasses.replace(u, state=None) for u in updates])
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


# --------------------------------------------------------------------------- service side


class WorkerError(RuntimeError):
    """A worker failed a job (its message says why) or could not be started."""


class _Worker:
    def __init__(self, ctx: Any, spec: WorkerSpec, index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker_main,
            args=(child, spec),
            name=f"distillwatch-worker-{index}",
            daemon=True,
        )
        self.proc.start()
        child.close()

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.stop()
            raise WorkerError(f"worker {self.index} did not start within {timeout:.0f} s")
        try:
            status, detail = self.conn.recv()
        except (EOFError, OSError):
            self.stop()
            raise WorkerError(
                f"worker {self.index} exited while starting (exit code {self.proc.exitcode})"
            ) from None
        if status != "ready":
            self.stop()
            raise WorkerError(f"worker {self.index} failed to start: {detail}")

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(EOFError, OSError, ValueError):  # already gone or closed
            self.conn.send(None)
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout)
        self.conn.close()


class WorkerPool:
    """``n`` worker processes that update accounts (see the module doc).

    Example::

        pool = WorkerPool(2, WorkerSpec(model_dir, db_path, cache_accounts=2048))
        updates = pool.update(accounts, embeddings, UpdateJob(time.time(), 0.5, 64))
        pool.close()

    One ``update`` at a time (the service calls it under its ingest lock).
    """

    def __init__(self, n: int, spec: WorkerSpec) -> None:
        if n < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {n}")
        self.spec = spec
        self.job_timeout_s = JOB_TIMEOUT_S
        self.restarts = 0  # workers started again since the pool started
        self._ctx = mp.get_context("spawn")  # never fork a process that runs torch threads
        self._workers: list[_Worker] = []
        try:
            for i in range(n):  # started together, then awaited: they load in parallel
                self._workers.append(_Worker(self._ctx, spec, i))
            for w in self._workers:
                w.wait_ready(_START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int | None]:
        return [w.proc.pid for w in self._workers]

    def worker_of(self, account_id: str) -> int:
        """The worker that owns an account (stable across restarts of the service)."""
        return zlib.crc32(account_id.encode("utf-8")) % len(self._workers)

    def update(
        self,
        accounts: Sequence[AccountEvents],
        embeddings: Sequence[np.ndarray],
        job: UpdateJob,
    ) -> list[AccountUpdate]:
        """:func:`update_accounts` of every account on its worker, in ``accounts`` order."""
        parts: dict[int, list[int]] = {}
        for i, acc in enumerate(accounts):
            parts.setdefault(self.worker_of(acc.account_id), []).append(i)
        messages = {
            w: ([accounts[i] for i in idx], [embeddings[i] for i in idx], job)
            for w, idx in parts.items()
        }
        sent = {w: self._send(w, msg) for w, msg in messages.items()}  # all work at once
        out: list[AccountUpdate | None] = [None] * len(accounts)
        errors: list[str] = []
        for w, idx in parts.items():
            try:
                reply = self._receive(w) if sent[w] else None
                if reply is None:  # died before or while working: nothing was stored
                    self._restart(w)
                    reply = self._receive(w) if self._send(w, messages[w]) else None
                    if reply is None:
                        raise WorkerError(f"worker {w} died twice on the same request")
            except WorkerError as exc:
                errors.append(str(exc))
                continue
            status, payload = reply
            if status != "ok":
                errors.append(f"worker {w}: {payload}")
                continue
            for i, u in zip(idx, payload, strict=True):
                out[i] = u
        if errors:
            raise WorkerError("; ".join(errors))
        return [u for u in out if u is not None]

    def _send(self, w: int, msg: Any) -> bool:
        try:
            self._workers[w].conn.send(msg)
            return True
        except (EOFError, OSError):
            return False

    def _receive(self, w: int) -> tuple[str, Any] | None:
        """The worker's reply; None if it died. A hung worker is killed and started again."""
        conn = self._workers[w].conn
        try:
            if not conn.poll(self.job_timeout_s):
                self._restart(w, reason="no answer in time")
                raise WorkerError(
                    f"worker {w} gave no answer within {self.job_timeout_s:.0f} s; started again"
                )
            reply: tuple[str, Any] = conn.recv()
            return reply
        except (EOFError, OSError):
            return None

    def _restart(self, w: int, reason: str = "died") -> None:
        old = self._workers[w]
        old.stop(timeout=1.0)
        log.warning(
            "worker %s; starting it again",
            reason,
            extra={"worker": w, "pid": old.proc.pid, "exit_code": old.proc.exitcode},
        )
        t0 = time.perf_counter()
        self._workers[w] = _Worker(self._ctx, self.spec, w)
        self._workers[w].wait_ready(_START_TIMEOUT_S)
        self.restarts += 1
        log.info("worker started", extra={"worker": w, "seconds": time.perf_counter() - t0})

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []


__all__ = [
    "AccountUpdate",
    "StateCache",
    "UpdateJob",
    "WorkerError",
    "WorkerPool",
    "WorkerSpec",
    "fleet_rows",
    "load_states",
    "update_accounts",
]
