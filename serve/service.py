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

The account updates themselves (the model's step, serializing the new states, wrapper
signatures) run in this process, or with ``DISTILLWATCH_WORKERS`` > 0 on worker processes
that each own a share of the accounts (``serve/workers.py``): the same answers, on every
core. Either way this process embeds, writes the request in one transaction and answers.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.events import AccountEvents, Event
from model.fleet_model import DEFAULT_MIN_PROMPT_PROB
from model.model_dir import default_model_path, load_model, read_config
from model.scorer import Detector
from serve.fleets import LiveFleets, with_fleet_id
from serve.metrics import ServiceMetrics
from serve.settings import ServiceSettings
from serve.store import AccountStore, FleetWritten, SQLiteAccountStore, StoreError
from serve.workers import StateCache, UpdateJob, WorkerPool, WorkerSpec, update_accounts

log = logging.getLogger(__name__)

ModelStatus = Literal["loading", "ready", "failed"]
_MODEL_META_KEY = "model_identity"


class NotReady(RuntimeError):
    """The model is still loading (or failed to load)."""


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
        self._pool: WorkerPool | None = None  # DISTILLWATCH_WORKERS > 0: updates run there
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
            detector.warm_up()  # the encoder loads lazily: load it before serving
            if self.settings.workers > 0:
                self._pool = WorkerPool(
                    self.settings.workers,
                    WorkerSpec(
                        model=self.model_path,
                        db=self.settings.db,
                        cache_accounts=-(
                            -self.settings.state_cache_accounts // self.settings.workers
                        ),
                        torch_threads=self.settings.torch_threads,
                    ),
                )
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
        with self._ingest_lock:  # no worker is stopped in the middle of an update
            if self._pool is not None:
                self._pool.close()
                self._pool = None
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
        per_account = [embeddings[bounds[i] : bounds[i + 1]] for i in range(len(accounts))]
        job = UpdateJob(
            now=time.time(),
            link_min=self._fleet_min_prompt_prob(detector),
            keep_per_account=self._fleets.max_prompts_per_account,
        )
        try:
            if self._pool is not None:
                updates = self._pool.update(accounts, per_account, job)
            else:
                updates = update_accounts(detector, store, self._states, accounts, per_account, job)
            linkable = np.concatenate(
                [
                    np.ones(len(a), dtype=bool) if u.linkable is None else u.linkable
                    for a, u in zip(accounts, updates, strict=True)
                ]
            )
            computed = [u.template_keys for u in updates if u.template_keys is not None]
            keys = np.concatenate(computed) if len(computed) == len(updates) else None
            fleet_inputs = {u.record.account_id: u.fleet_input for u in updates}
            fleet_batch = self._fleets.prepare(accounts, embeddings, linkable, keys)
            fleet_write = self._fleets.write(fleet_batch, fleet_inputs)
            written = store.put_many([u.record for u in updates], fleet_write)
        except BaseException:
            self._states.drop(groups)
            raise
        for u in updates:
            if u.state is not None:
                self._states.put(u.record.account_id, u.record.n_events, job.now, u.state)
        self._fleets.committed(fleet_batch, fleet_write, written or FleetWritten(0, 0))

        m = self.metrics
        m.events_ingested.inc(len(events))
        m.late_events.inc(sum(u.n_late for u in updates))
        m.accounts.inc(sum(u.previously_flagged is None for u in updates))
        m.accounts_flagged.inc(
            sum(int(u.record.flagged) - int(bool(u.previously_flagged)) for u in updates)
        )
        m.flag_transitions.inc(sum(u.record.flagged and not u.previously_flagged for u in updates))
        return IngestResult(
            len(events),
            [self._with_fleet(u.record.account_id, u.record.score_json) for u in updates],
        )

    def _with_fleet(self, account_id: str, score_json: str) -> bytes:
        """The stored score with the account's fleet in the last computed fleets."""
        fleet_id = self._fleets.fleet_id(account_id)
        return score_json.encode() if fleet_id is None else with_fleet_id(score_json, fleet_id)

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
