"""The scorer: a trained detector applied to accounts, in batch or one event at a time.

What it knows: how the pieces of a trained model fit together at scoring time —
embeddings (cached) → causal features → sequence network → calibrated per-event
probabilities → account score, ``first_flag_event`` and reasons. It also keeps the
per-account online state (:class:`AccountState`) that the service stores, so that a new
event costs one step of the network, not a re-score of the account's history.

What it does not know: how the model was trained, files (see ``model/model_dir.py``),
HTTP. Fleets are applied on top by ``model.fleet`` where a model carries a fleet judge.

Example::

    detector = load_model()            # the shipped model
    scores = detector.score_table(read_events("events.jsonl"))
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model.embedder import TextEncoder
from model.events import AccountEvents, EventTable
from model.features import FeatureExtractor, FeatureState
from model.network import Network, StreamState
from model.reasons import OrganicReference, account_stats, prompt_positions
from model.state_codec import StateFormatError, pack, unpack
from model.threads import one_thread


@dataclass
class AccountScore:
    """One account's score, in the contract's score-output shape."""

    account_id: str
    score: float
    flagged: bool
    n_events: int
    first_flag_event: int | None
    fleet_id: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "score": round(float(self.score), 6),
            "flagged": bool(self.flagged),
            "n_events": int(self.n_events),
            "first_flag_event": self.first_flag_event,
            "fleet_id": self.fleet_id,
            "reasons": list(self.reasons),
        }


@dataclass
class AccountState:
    """Online state of one account: bounded, whatever the length of its history."""

    features: FeatureState
    net: StreamState
    n_events: int = 0
    first_flag_event: int | None = None
    last_prob: float = 0.0

    def to_bytes(self, *, ring: bool = True) -> bytes:
        """The state as bytes for the service's store (layout in ``model/state_codec.py``).

        Exact: an account restored from these bytes scores its next events exactly as the
        one kept in memory would. ``ring=False`` leaves out the embeddings ring (see
        :meth:`FeatureState.to_bytes`); :meth:`from_bytes` then needs its rows.
        """
        meta = {
            "n_events": self.n_events,
            "first_flag_event": self.first_flag_event,
            "last_prob": self.last_prob,
        }
        arrays = {
            "hidden": self.net.hidden.numpy(),
            "ev_max": self.net.ev_max.numpy(),
            "ev_sum": self.net.ev_sum.numpy(),
            "n_seen": self.net.n_seen.numpy(),
            "features": np.frombuffer(self.features.to_bytes(ring=ring), dtype=np.uint8),
        }
        return pack(_STATE_MAGIC, _STATE_VERSION, meta, arrays)

    @staticmethod
    def ring_is_external(data: bytes) -> bool:
        """Whether a stored state was written with ``to_bytes(ring=False)``."""
        if data[:4] == b"PK\x03\x04":  # version 1: the ring is inside
            return False
        _, _, z = unpack(data, _STATE_MAGIC, (_STATE_VERSION,), "account state")
        return FeatureState.ring_is_external(z["features"].tobytes())

    @classmethod
    def from_bytes(
        cls, data: bytes, ring: Sequence[tuple[int, bytes]] | None = None
    ) -> AccountState:
        """Rebuild a state from :meth:`to_bytes`; version-1 (``np.savez``) states are migrated.

        ``ring``: the ring rows of a state written with ``ring=False`` (ignored otherwise).
        Raises :class:`model.state_codec.StateFormatError` for anything else.
        """
        if data[:4] == b"PK\x03\x04":  # version 1 (a zip file)
            return cls._from_npz(data)
        _, meta, z = unpack(data, _STATE_MAGIC, (_STATE_VERSION,), "account state")
        try:
            return cls(
                features=FeatureState.from_bytes(z["features"].tobytes(), ring),
                net=_stream_state(z),
                n_events=int(meta["n_events"]),
                first_flag_event=meta["first_flag_event"],
                last_prob=float(meta["last_prob"]),
            )
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"account state: inconsistent fields ({exc!r})") from exc

    @classmethod
    def _from_npz(cls, data: bytes) -> AccountState:
        """The version-1 layout (``np.savez``)."""
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            n_events, first_flag, last_prob = z["scalars"].tolist()
            return cls(
                features=FeatureState.from_bytes(z["features"].tobytes()),
                net=_stream_state(z),
                n_events=int(n_events),
                first_flag_event=None if first_flag < 0 else int(first_flag),
                last_prob=float(last_prob),
            )
        except StateFormatError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"account state: unreadable version-1 state ({exc!r})") from exc


def _stream_state(arrays: Any) -> StreamState:
    """The network state from its stored arrays (both layouts name them alike)."""
    return StreamState(
        hidden=torch.from_numpy(arrays["hidden"]),
        ev_max=torch.from_numpy(arrays["ev_max"]),
        ev_sum=torch.from_numpy(arrays["ev_sum"]),
        n_seen=torch.from_numpy(arrays["n_seen"]),
    )


_STATE_MAGIC = b"DWAS"
_STATE_VERSION = 2  # 1: np.savez (still read)


@dataclass
class Calibration:
    """Platt scaling of network logits: ``p = sigmoid(a * logit + b)``."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        z = np.clip(self.a * np.asarray(logits, dtype=np.float64) + self.b, -40, 40)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b}


@dataclass
class AccountTrace:
    """Per-event online probabilities of one account (for evaluation and time to detection)."""

    account_id: str
    probs: np.ndarray  # (T,)
    state: FeatureState
    #: (T,) the network's per-prompt probability that each prompt harvests; None for a
    #: network without a prompt head
    prompt_probs: np.ndarray | None = None

    @property
    def prompt_count(self) -> float | None:
        """The network's estimated count of harvesting prompts (sum of ``prompt_probs``)."""
        return None if self.prompt_probs is None else float(self.prompt_probs.sum())


class Detector:
    """A trained detector: everything needed to score accounts (see ``model_dir.load_model``)."""

    def __init__(
        self,
        *,
        network: Network,
        extractor: FeatureExtractor,
        embedder: TextEncoder,
        calibration: Calibration,
        threshold: float,
        reference: OrganicReference,
        meta: dict[str, Any] | None = None,
        fleet_model: Any | None = None,
    ):
        self.network = network.eval()
        self.extractor = extractor
        self.embedder = embedder
        self.calibration = calibration
        self.threshold = float(threshold)
        self.reference = reference
        self.meta = meta or {}
        self.fleet_model = fleet_model

    # ------------------------------------------------------------------ batch

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.embedder.encode(list(texts), progress=progress)

    def warm_up(self) -> None:
        """Load the encoder before serving (past its cache; see ``_CachingEncoder.warm_up``).
        An encoder without ``warm_up`` embeds one text instead."""
        warm = getattr(self.embedder, "warm_up", None)
        if callable(warm):
            warm()
        else:
            self.embed(["warm-up: the encoder loads lazily, load it before serving"])

    def trace(self, account: AccountEvents, embeddings: np.ndarray | None = None) -> AccountTrace:
        """Per-event calibrated probabilities of one account."""
        return next(self.trace_many([account], None if embeddings is None else [embeddings]))

    def trace_many(
        self,
        accounts: Sequence[AccountEvents],
        embeddings: Sequence[np.ndarray] | None = None,
        batch_size: int = 32,
    ) -> Iterator[AccountTrace]:
        """Per-event probabilities for many accounts, networks run in length-sorted batches."""
        if embeddings is None:
            embeddings = self._embed_accounts(accounts)
        probs: dict[int, np.ndarray] = {}
        prompt_probs: dict[int, np.ndarray | None] = {}
        with one_thread():  # small products: one thread is fastest (see model/threads.py)
            feats = [
                self.extractor.transform(a, e) for a, e in zip(accounts, embeddings, strict=True)
            ]
            order = sorted(range(len(accounts)), key=lambda i: len(accounts[i]))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                logits, p_prompt = self._logits(
                    [embeddings[i] for i in idx], [feats[i][0] for i in idx]
                )
                for j, (i, lg) in enumerate(zip(idx, logits, strict=True)):
                    probs[i] = self.calibration(lg)
                    prompt_probs[i] = None if p_prompt is None else p_prompt[j]
        for i, acc in enumerate(accounts):
            yield AccountTrace(acc.account_id, probs[i], feats[i][1], prompt_probs[i])

    def _embed_accounts(self, accounts: Sequence[AccountEvents]) -> list[np.ndarray]:
        texts = [p for a in accounts for p in a.prompts]
        all_emb = self.embed(texts)
        out, pos = [], 0
        for a in accounts:
            out.append(all_emb[pos : pos + len(a)])
            pos += len(a)
        return out

    @torch.no_grad()
    def _logits(
        self, embs: Sequence[np.ndarray], feats: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Per-event logits of each stream, and its per-prompt harvesting probabilities
        (None without a prompt head)."""
        lengths = [len(e) for e in embs]
        t_max = max(lengths)
        b = len(embs)
        e_pad = np.zeros((b, t_max, embs[0].shape[1]), dtype=np.float32)  # (B, T, D)
        f_pad = np.zeros((b, t_max, feats[0].shape[1]), dtype=np.float32)  # (B, T, F)
        for i, (e, f) in enumerate(zip(embs, feats, strict=True)):
            e_pad[i, : len(e)] = e
            f_pad[i, : len(f)] = f
        logits, prompt_logits, _ = self.network.forward_all(
            torch.from_numpy(e_pad), torch.from_numpy(f_pad)
        )
        lg = logits.numpy()
        per_stream = [lg[i, :n] for i, n in enumerate(lengths)]
        if prompt_logits is None:
            return per_stream, None
        pp = torch.sigmoid(prompt_logits).numpy()
        return per_stream, [pp[i, :n] for i, n in enumerate(lengths)]

    def _prompt_counts(self, state: StreamState) -> np.ndarray | None:
        """(B,) sum of per-prompt harvesting probabilities so far (the last evidence channel)."""
        counts = self.network.prompt_counts(state)
        return None if counts is None else counts.numpy()

    def account_score(self, trace: AccountTrace) -> AccountScore:
        probs = trace.probs
        above = np.flatnonzero(probs >= self.threshold)
        score = float(probs[-1])
        flagged = score >= self.threshold
        return AccountScore(
            account_id=trace.account_id,
            score=score,
            flagged=flagged,
            n_events=len(probs),
            first_flag_event=int(above[0]) + 1 if len(above) else None,
            reasons=self.reasons(trace.state, trace.prompt_count, trace.prompt_probs)
            if flagged
            else [],
        )

    def reasons(
        self,
        state: FeatureState,
        prompt_count: float | None = None,
        prompt_probs: np.ndarray | None = None,
    ) -> list[str]:
        """Evidence in the organic tail. ``prompt_count`` is the network's estimated count of
        harvesting prompts (compared with organic accounts' when the reference has it);
        ``prompt_probs`` (batch scoring only) names the prompts behind it."""
        where = None if prompt_probs is None else prompt_positions(prompt_probs)
        examples = {"harvest_prompts": where} if where else None
        return self.reference.reasons(account_stats(state, prompt_count), examples=examples)

    def score_accounts(
        self, accounts: Sequence[AccountEvents], embeddings: Sequence[np.ndarray] | None = None
    ) -> list[AccountScore]:
        return [self.account_score(t) for t in self.trace_many(accounts, embeddings)]

    def iter_traces(
        self, table: EventTable, progress: bool = False, chunk_events: int = 20_000
    ) -> Iterator[tuple[AccountEvents, np.ndarray, AccountTrace]]:
        """(account, embeddings, trace) for every account, embedding chunk by chunk.

        Memory stays bounded: accounts are gathered into chunks of about ``chunk_events``
        events; each chunk's prompts are embedded at once (the cache collapses repeats).
        """
        from tqdm.auto import tqdm

        bar = tqdm(total=len(table), unit="ev", desc="scoring", disable=not progress)
        chunk: list[AccountEvents] = []
        size = 0

        def flush() -> Iterator[tuple[AccountEvents, np.ndarray, AccountTrace]]:
            embs = self._embed_accounts(chunk)
            yield from zip(chunk, embs, self.trace_many(chunk, embs), strict=True)
            bar.update(sum(len(a) for a in chunk))

        for acc in table.accounts():
            chunk.append(acc)
            size += len(acc)
            if size >= chunk_events:
                yield from flush()
                chunk, size = [], 0
        if chunk:
            yield from flush()
        bar.close()

    def score_table(self, table: EventTable, progress: bool = False) -> list[AccountScore]:
        """Score every account of ``table`` (fleets applied when the model carries them)."""
        scores: list[AccountScore] = []
        fleet_inputs = []
        for acc, emb, tr in self.iter_traces(table, progress=progress):
            scores.append(self.account_score(tr))
            if self.fleet_model is not None:
                fleet_inputs.append((acc, emb, tr))
        if self.fleet_model is not None and fleet_inputs:
            scores = self.fleet_model.apply(self, fleet_inputs, scores)
        return scores

    # ------------------------------------------------------------------ online

    def new_state(self) -> AccountState:
        return AccountState(features=self.extractor.new_state(), net=self.network.initial_state(1))

    def update(
        self,
        state: AccountState | None,
        account: AccountEvents,
        embeddings: np.ndarray | None = None,
    ) -> tuple[AccountState, AccountScore]:
        """Extend an account's state by its NEW events only and return its updated score."""
        new, score, _ = self.update_with_prompts(state, account, embeddings)
        return new, score

    @torch.no_grad()
    def update_with_prompts(
        self,
        state: AccountState | None,
        account: AccountEvents,
        embeddings: np.ndarray | None = None,
    ) -> tuple[AccountState, AccountScore, np.ndarray | None]:
        """:meth:`update`, and the new events' per-prompt harvesting probabilities ``(T,)``
        (None for a network without a prompt head): what the live fleet window keeps."""
        state = state if state is not None else self.new_state()
        if len(account) == 0:
            raise ValueError("update needs at least one new event")
        self.network.check_state(state.net)
        if embeddings is None:
            embeddings = self.embed(account.prompts)
        with one_thread():  # one step of a small network: threads only add waiting
            feats, fstate = self.extractor.transform(account, embeddings, state.features)
            logits, prompt_logits, net_state = self.network.forward_all(
                torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).unsqueeze(0),
                torch.from_numpy(feats).unsqueeze(0),
                state.net,
            )
        probs = self.calibration(logits[0].numpy())
        first = state.first_flag_event
        if first is None:
            above = np.flatnonzero(probs >= self.threshold)
            if len(above):
                first = state.n_events + int(above[0]) + 1
        new = AccountState(
            features=fstate,
            net=net_state,
            n_events=state.n_events + len(account),
            first_flag_event=first,
            last_prob=float(probs[-1]),
        )
        prompt_probs = None if prompt_logits is None else torch.sigmoid(prompt_logits[0]).numpy()
        return new, self.score_state(account.account_id, new), prompt_probs

    def score_state(self, account_id: str, state: AccountState) -> AccountScore:
        flagged = state.last_prob >= self.threshold
        return AccountScore(
            account_id=account_id,
            score=state.last_prob,
            flagged=flagged,
            n_events=state.n_events,
            first_flag_event=state.first_flag_event,
            reasons=self.reasons(state.features, self.prompt_count(state)) if flagged else [],
        )

    def prompt_count(self, state: AccountState) -> float | None:
        """The network's estimated count of harvesting prompts of an online account."""
        counts = self._prompt_counts(state.net)
        return None if counts is None else float(counts[0])

    def describe(self) -> dict[str, Any]:
        """Version, threshold, training summary and metrics (what ``GET /v1/model`` answers)."""
        return {
            "version": self.meta.get("version"),
            "threshold": self.threshold,
            "target_fpr": self.meta.get("target_fpr"),
            "embedder": self.embedder.identity,
            "training": self.meta.get("training", {}),
            "metrics": self.meta.get("metrics", {}),
            "created": self.meta.get("created"),
        }
