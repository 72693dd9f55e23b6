"""The scoring service: the detector, the account store and the rules that join them.

What it knows: how one ingest request becomes stored state — events grouped by account,
each group sorted by time, every new prompt of the request embedded in ONE call, each
touched account's stored state extended by its NEW events only, and all new states
written in ONE durable transaction before the answer is built.

Events older than an account's last stored event are accepted and processed in arrival
order (after what the account has already seen); they are counted in
``distillwatch_late_events_total``, never dropped. Ingests run one at a time (the work is
CPU-bound under one GIL: parallel ingests only thrash), so two concurrent requests cannot
lose each other's update.

Recently active accounts keep their deserialized state in memory (bounded LRU, checked
against the stored row), so their next event skips deserialization. The stored bytes stay
the truth after a restart, and they are exact: a restarted service scores the next events
as one that kept running would. An account's embeddings ring is stored beside its state,
slot by slot, and an update writes only the slots it changed.

The same transaction appends the request's fleet inputs (embeddings already computed, wrapper
signatures, times, IP prefix and user agent) to the bounded fleet window; linking happens
only when fleets are asked for (``serve/fleets.py``). An account's ``fleet_id`` is its
fleet in the last fleets computed for ``GET /v1/fleets``.

What it does not know: HTTP (see ``serve/routes.py``), how the detector scores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from model.events import AccountEvents, Event
from model.fleet_model import DEFAULT_MIN_PROMPT_PROB, reasoning_rate
from model.model_dir import default_model_path, load_model, read_config
from model.scorer import AccountState, Detector
from serve.fleets import LiveFleets, with_fleet_id
from serve.metrics import ServiceMetrics
from serve.settings import ServiceSettings
from serve.store import AccountStore, FleetWritten, SQLiteAccountStore, StoredAccount, StoreError

log = logging.getLogger(__name__)

ModelStatus = Literal["loading", "ready", "failed"]
_MODEL_META_KEY = "model_identity"


class NotReady(RuntimeError):
    """The model is still loading (or failed to load)."""


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
class IngestResult:
    n_events: int
    score_json: list[bytes]  # one contract score per touched account, first-seen order

    def to_json(self) -> bytes:
        """The ``EventsResponse`` body, built from the stored JSON (no re-serialization)."""
        return b'{"n_events":%d,"scores":[%b]}' % (self.n_events, b",".join(self.score_json))


def model_identity(config: dict[str, Any]) -> str:
    """What ties stored states to the model that wrote them."""
    return f"{config.get('version')}|{config.get('created')}|{config.get('embedder_identity')}"


class ScoringService:
    """The detector and the store of one running service.

    ``open()`` is cheap (reads the model's config, opens the store, checks they belong
    together); ``load_model()`` is the heavy part and may run in a background thread
    while ``/healthz`` already answers and ``/readyz`` says 503.
    """

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics):
        self.settings = settings
        self.metrics = metrics
        self.model_path: Path = (
            settings.model if settings.model is not None else default_model_path()
        )
        self.status: ModelStatus = "loading"
        self.detector: Detector | None = None
        self.store: AccountStore | None = None
        self._identity: str | None = None
        self._states = StateCache(settings.state_cache_accounts)
        self._fleets = LiveFleets(
            max_prompts_per_account=settings.fleet_max_prompts_per_account,
            max_prompts=settings.fleet_max_prompts,
            cache_seconds=settings.fleet_cache_seconds,
        )
        self._embed_lock = threading.Lock()
        # one ingest at a time: the work is CPU-bound under one GIL, so parallel ingests only
        # thrash (measured: 4 clients got 42-54 % of in-process alone, 1 client 56-61 %); it
        # also serializes every read-modify-write of an account's state
        self._ingest_lock = threading.Lock()
        self._loaded = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Read the model config and open the store; raises on a mismatch (clear message)."""
        config = read_config(self.model_path)
        self._identity = model_identity(config)
        store = SQLiteAccountStore(self.settings.db)
        stored = store.get_meta(_MODEL_META_KEY)
        if stored is None or store.count() == 0:
            store.set_meta(_MODEL_META_KEY, self._identity)
        elif stored != self._identity:
            store.close()
            raise StoreError(
                f"{self.settings.db} holds account state built by model {stored.split('|')[0]!r}, "
                f"not by {config.get('version')!r} ({self.model_path}); states of one model "
                "cannot be continued by another: use a new --db file for this model"
            )
        self.store = store
        self.metrics.accounts.set(store.count())
        self.metrics.accounts_flagged.set(store.count_flagged())
        self.metrics.model_ready.set(0)

    def load_model(self, *, raise_errors: bool = False) -> None:
        """Load the detector (and its indexes) once; sets :attr:`status`."""
        t0 = time.perf_counter()
        try:
            detector = load_model(self.model_path, embed_backend=self.settings.embed_backend)
            detector.embed(["warm-up: the encoder loads lazily, load it before serving"])
        except Exception:
            self.status = "failed"
            log.exception("model failed to load", extra={"model": str(self.model_path)})
            self._loaded.set()
            if raise_errors:
                raise
            return
        self.detector = detector
        info = detector.describe()
        self.metrics.model_info.info(
            {
                "version": str(info.get("version")),
                "embedder": str(info.get("embedder")),
                "threshold": f"{detector.threshold:.6g}",
            }
        )
        self.metrics.model_ready.set(1)
        self.status = "ready"
        self._loaded.set()
        threading.Thread(  # rebuild the fleet linker from the window; ingest goes on meanwhile
            target=self._warm_fleets, name="distillwatch-fleets", daemon=True
        ).start()
        log.info(
            "model loaded",
            extra={
                "model": str(self.model_path),
                "version": info.get("version"),
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )

    def _warm_fleets(self) -> None:
        try:
            detector, store = self._ready()
            self._fleets.warm_up(detector, store)
        except Exception:  # e.g. closed meanwhile; the next GET /v1/fleets tries again
            log.warning("fleet warm-up failed; fleets are computed on request", exc_info=True)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading ended (ready or failed); True if ready."""
        self._loaded.wait(timeout)
        return self.status == "ready"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def _ready(self) -> tuple[Detector, AccountStore]:
        if self.detector is None or self.store is None:
            raise NotReady(self.status)
        return self.detector, self.store

    # ------------------------------------------------------------------ scoring

    def _fleet_min_prompt_prob(self, detector: Detector) -> float:
        """Harvesting probability a prompt needs to enter the fleet window (see settings)."""
        if self.settings.fleet_min_prompt_prob is not None:
            return self.settings.fleet_min_prompt_prob
        return float(getattr(detector.fleet_model, "min_prompt_prob", DEFAULT_MIN_PROMPT_PROB))

    def _embed(self, detector: Detector, prompts: Sequence[str]) -> np.ndarray:
        with self._embed_lock:  # the embedder and its cache are not assumed thread-safe
            return detector.embed(prompts)

    def ingest(self, events: Sequence[Event]) -> IngestResult:
        """Extend every touched account by its new events; durable before it returns."""
        with self._ingest_lock:
            return self._ingest(events)

    def _ingest(self, events: Sequence[Event]) -> IngestResult:
        detector, store = self._ready()
        if not events:
            return IngestResult(0, [])
        groups: dict[str, list[Event]] = {}
        for ev in events:
            groups.setdefault(ev.account_id, []).append(ev)
        accounts = [AccountEvents.from_events(g) for g in groups.values()]  # stable ts sort
        embeddings = self._embed(detector, [p for a in accounts for p in a.prompts])
        bounds = np.cumsum([0] + [len(a) for a in accounts])
        link_min = self._fleet_min_prompt_prob(detector)
        linkable = np.ones(len(embeddings), dtype=bool)

        now = time.time()
        records: list[StoredAccount] = []
        new_states: list[AccountState] = []
        fleet_inputs: dict[str, tuple[float, float, int]] = {}  # own score, reasoning, events
        n_new = n_flag_new = n_late = 0
        flagged_delta = 0
        previous = store.get_many(list(groups))
        try:
            loaded = self._load_states(store, previous)
            for i, acc in enumerate(accounts):
                prev = previous.get(acc.account_id)
                state, ring_since = loaded.get(acc.account_id, (None, 0))
                if state is not None and state.n_events:
                    n_late += int(np.count_nonzero(acc.ts < state.features.last_ts))
                # `update` may extend `state` in place: on failure the cache is dropped below
                new_state, score, prompt_probs = detector.update_with_prompts(
                    state, acc, embeddings=embeddings[bounds[i] : bounds[i + 1]]
                )
                if link_min > 0 and prompt_probs is not None:
                    linkable[bounds[i] : bounds[i + 1]] = prompt_probs >= link_min
                new_states.append(new_state)
                fleet_inputs[acc.account_id] = (
                    score.score,
                    reasoning_rate(new_state.features),
                    new_state.n_events,
                )
                records.append(
                    StoredAccount(
                        account_id=acc.account_id,
                        state=new_state.to_bytes(ring=False),
                        score_json=orjson.dumps(score.to_dict()).decode(),
                        n_events=new_state.n_events,
                        flagged=score.flagged,
                        updated_at=now,
                        ring=tuple(new_state.features.ring_rows(ring_since)),
                    )
                )
                was_flagged = prev is not None and prev.flagged
                n_new += prev is None
                n_flag_new += score.flagged and not was_flagged
                flagged_delta += int(score.flagged) - int(was_flagged)
            fleet_batch = self._fleets.prepare(accounts, embeddings, linkable)
            fleet_write = self._fleets.write(fleet_batch, fleet_inputs)
            written = store.put_many(records, fleet_write)
        except BaseException:
            self._states.drop(groups)
            raise
        for rec, st in zip(records, new_states, strict=True):
            self._states.put(rec.account_id, rec.n_events, rec.updated_at, st)
        self._fleets.committed(fleet_batch, fleet_write, written or FleetWritten(0, 0))

        m = self.metrics
        m.events_ingested.inc(len(events))
        m.late_events.inc(n_late)
        m.accounts.inc(n_new)
        m.accounts_flagged.inc(flagged_delta)
        m.flag_transitions.inc(n_flag_new)
        return IngestResult(
            len(events), [self._with_fleet(r.account_id, r.score_json) for r in records]
        )

    def _with_fleet(self, account_id: str, score_json: str) -> bytes:
        """The stored score with the account's fleet in the last computed fleets."""
        fleet_id = self._fleets.fleet_id(account_id)
        return score_json.encode() if fleet_id is None else with_fleet_id(score_json, fleet_id)

    def _load_states(
        self, store: AccountStore, stored: dict[str, StoredAccount]
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
            cached = self._states.get(row)
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

    def score_stream(self, events: Sequence[Event]) -> dict[str, Any]:
        """Score one account's whole stream alone; nothing is stored."""
        detector, _ = self._ready()
        account = AccountEvents.from_events(events)
        embeddings = self._embed(detector, account.prompts)
        (score,) = detector.score_accounts([account], [embeddings])
        self.metrics.events_scored.inc(len(events))
        return score.to_dict()

    def account_score_json(self, account_id: str) -> bytes | None:
        """The stored score of an account (no model needed), or None if unknown; its
        ``fleet_id`` is the account's fleet in the last computed fleets, if any."""
        if self.store is None:
            raise NotReady(self.status)
        score = self.store.get_score_json(account_id)
        return None if score is None else self._with_fleet(account_id, score)

    def fleets(self, *, min_score: float = 0.0, limit: int | None = None) -> list[dict[str, Any]]:
        """Current coordinated clusters (``GET /v1/fleets``), highest score first.

        Recomputed from the fleet window when events arrived since the last computation
        and that one is older than ``DISTILLWATCH_FLEET_CACHE_SECONDS``. Scores come from
        the model's fleet judge; a model without one gets unjudged fleets scored by the
        mean own score of their members.
        """
        detector, store = self._ready()
        fleets = [
            f for f in self._fleets.current(detector, store).fleets if f["score"] >= min_score
        ]
        return fleets if limit is None else fleets[:limit]

    def model_info(self) -> dict[str, Any]:
        detector, _ = self._ready()
        return detector.describe()
