"""The fleet stage of a trained detector: link scored accounts, judge fleets, lift members.

What it knows: how to turn a scoring run's accounts (events, embeddings, per-event traces
and own scores) into the array inputs of ``model.fleet`` (per-prompt account index,
embedding, wrapper signature, time; per-account IP prefix and user agent), how to apply
the fitted :class:`~model.fleet.FleetJudge` and known-incident index, and how an account's
score, ``fleet_id`` and reasons change when its fleet is judged harvesting. It is fitted at
training time on the labelled accounts (campaigns give the fleets' labels) and saved
beside the network as ``fleet.json`` + ``incidents.npz``.

What it does not know: how links are found or fleets cut (``model.fleet``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.events import AccountEvents, EventTable
from model.features import FeatureState
from model.fleet import (
    Fleet,
    FleetJudge,
    LinkConfig,
    build_fleets,
    combine_account_score,
    describe_fleets,
    fleet_features,
    fleet_labels,
    link_accounts,
    template_signature,
)
from model.fleet_index import IncidentIndex

if TYPE_CHECKING:
    from model.scorer import AccountScore, AccountTrace, Detector


def ip_prefix(ip: str | None) -> str | None:
    """IPv4 /24 or IPv6 /48 prefix; other strings (already hashed or prefixed) as they are."""
    if not ip:
        return None
    if ip.count(".") == 3 and ":" not in ip:
        return ".".join(ip.split(".")[:3]) + ".0/24"
    if ":" in ip:
        return ":".join(ip.split(":")[:3]) + "::/48"
    return ip


def most_common(values: Sequence[str | None]) -> str | None:
    """The most frequent non-empty value (an account's usual IP or user agent), or None."""
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


#: Per-prompt harvesting probability a prompt needs to link accounts (see ``FleetModel``).
DEFAULT_MIN_PROMPT_PROB = 0.5


def reasoning_rate(state: FeatureState) -> float:
    """Share of an account's prompts that elicit reasoning (a fleet judge input)."""
    return float(state.counts.get("elicitation", 0.0)) / max(state.n, 1)


class FleetModel:
    """Fitted fleet judge + incident index + linking config (scikit-learn conventions)."""

    judge_: FleetJudge | None  # learned at fit; None when too few fleets of both kinds
    incidents_: IncidentIndex | None

    def __init__(
        self,
        link_config: LinkConfig | None = None,
        flag_threshold: float = 0.5,
        min_prompt_prob: float = DEFAULT_MIN_PROMPT_PROB,
    ):
        self.link_config = link_config or LinkConfig()
        self.flag_threshold = flag_threshold
        #: With a network that has a prompt head, only prompts it gives at least this
        #: probability of harvesting link accounts: organic users share homework problems,
        #: phrases and corpora with each other and with harvesters, and with every prompt
        #: linking, nine in ten organic accounts of a simulation ended up in some fleet
        #: (MiniLM, 500 accounts). 0 links on every prompt.
        self.min_prompt_prob = min_prompt_prob

    # ------------------------------------------------------------------ evidence

    def _evidence(
        self,
        accounts: Sequence[AccountEvents],
        embeddings: Sequence[np.ndarray],
        own_scores: np.ndarray,
        reasoning: np.ndarray,
        prompt_probs: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[Any, list[Any]]:
        keep = self._linking_prompts(accounts, prompt_probs)  # (N,) bool
        lengths = [len(a) for a in accounts]
        account_idx = np.repeat(np.arange(len(accounts)), lengths)[keep]
        emb = np.concatenate([np.asarray(e, dtype=np.float32) for e in embeddings])[keep]
        prompts = (p for a in accounts for p in a.prompts)
        keys = np.fromiter(
            (template_signature(p) for p, k in zip(prompts, keep, strict=True) if k),
            np.int64,
            len(emb),
        )
        ts = np.concatenate([a.ts for a in accounts])[keep]
        ips = [ip_prefix(most_common(a.ip)) for a in accounts]
        uas = [most_common(a.user_agent) for a in accounts]
        ip_sets = [{p for p in map(ip_prefix, a.ip) if p} for a in accounts]
        result = link_accounts(
            account_idx,
            emb,
            keys,
            ts,
            ips,
            uas,
            n_sent=lengths,
            ip_prefix_sets=ip_sets,
            config=self.link_config,
        )
        incidents = getattr(self, "incidents_", None)
        evidence = describe_fleets(result, emb, own_scores, reasoning, incidents=incidents)
        return result, evidence

    def _linking_prompts(
        self,
        accounts: Sequence[AccountEvents],
        prompt_probs: Sequence[np.ndarray | None] | None,
    ) -> np.ndarray:
        """(N,) which prompts may link accounts (see ``min_prompt_prob``)."""
        n = sum(len(a) for a in accounts)
        threshold = getattr(self, "min_prompt_prob", 0.0)
        if not threshold or prompt_probs is None or any(p is None for p in prompt_probs):
            return np.ones(n, dtype=bool)
        return np.concatenate([np.asarray(p) for p in prompt_probs]) >= threshold

    # ------------------------------------------------------------------ fit

    @classmethod
    def fit_from_training(
        cls,
        detector: Detector,
        accounts: Sequence[AccountEvents],
        labels: Sequence[Any],
        embeddings: dict[str, np.ndarray],
        link_config: LinkConfig | None = None,
        *,
        incidents_per_campaign: int = 256,
    ) -> FleetModel:
        """Fit the judge on fleets found among the labelled training accounts.

        ``incidents_per_campaign``: labelled prompts kept per campaign for the known-incident
        index (float16 on disk: 0.75 KiB each with a 384-d embedder); 0 keeps none.
        """
        model = cls(link_config, flag_threshold=detector.threshold)
        embs = [embeddings[a.account_id].astype(np.float32) for a in accounts]
        traces = list(detector.trace_many(accounts, embs))
        own = np.array([t.probs[-1] for t in traces])
        reasoning = np.array([reasoning_rate(t.state) for t in traces])
        y = np.array([lab.label for lab in labels])
        model.incidents_ = None
        harvest = [i for i, lab in enumerate(labels) if lab.label == 1 and lab.campaign]
        if harvest and incidents_per_campaign > 0:
            vecs = np.concatenate([embs[i] for i in harvest])
            camps = [labels[i].campaign for i in harvest for _ in range(len(embs[i]))]
            model.incidents_ = IncidentIndex(max_per_campaign=incidents_per_campaign).fit(
                vecs, camps
            )
        probs = [t.prompt_probs for t in traces]
        _, evidence = model._evidence(accounts, embs, own, reasoning, probs)
        fl = fleet_labels(evidence, y)
        if len(evidence) >= 2 and 0 < fl.sum() < len(fl):
            model.judge_ = FleetJudge().fit(fleet_features(evidence), fl)
        else:  # too few fleets of both kinds to learn from: fleets are reported, never judged
            model.judge_ = None
        return model

    # ------------------------------------------------------------------ apply

    def run(
        self,
        detector: Detector,
        inputs: Sequence[tuple[AccountEvents, np.ndarray, AccountTrace]],
        scores: list[AccountScore],
    ) -> tuple[list[Fleet], list[AccountScore]]:
        """Fleets among the scored accounts, and the scores after fleet evidence."""
        if len(inputs) < 2:
            return [], scores
        accounts = [a for a, _, _ in inputs]
        own = np.array([s.score for s in scores])
        reasoning = np.array([reasoning_rate(t.state) for *_, t in inputs])
        probs = [t.prompt_probs for *_, t in inputs]
        _, evidence = self._evidence(accounts, [e for _, e, _ in inputs], own, reasoning, probs)
        if not evidence:
            return [], scores
        judge = getattr(self, "judge_", None)
        fscore = (
            judge.predict_proba(fleet_features(evidence))[:, 1]
            if judge is not None
            else np.zeros(len(evidence))
        )
        ids = [a.account_id for a in accounts]
        fleets = build_fleets(evidence, fscore, ids)
        by_account = {acc: f for f in fleets for acc in f.accounts}
        pos = {acc: i for i, acc in enumerate(ids)}
        out = list(scores)
        for acc_id, fleet in by_account.items():
            i = pos[acc_id]
            s = out[i]
            flagged_fleet = fleet.score >= self.flag_threshold
            new_score = float(
                combine_account_score(s.score, fleet.score if flagged_fleet else None, s.n_events)
            )
            flagged = new_score >= detector.threshold
            reasons = list(s.reasons)
            if flagged_fleet:
                head = f"member of fleet {fleet.fleet_id} ({len(fleet.accounts)} accounts)"
                reasons = [head + (": " + fleet.reasons[0] if fleet.reasons else ""), *reasons]
            elif flagged and not reasons:
                trace = inputs[i][2]
                reasons = detector.reasons(trace.state, trace.prompt_count, trace.prompt_probs)
            out[i] = replace(
                s, score=new_score, flagged=flagged, fleet_id=fleet.fleet_id, reasons=reasons[:5]
            )
        return fleets, out

    def apply(
        self,
        detector: Detector,
        inputs: Sequence[tuple[AccountEvents, np.ndarray, AccountTrace]],
        scores: list[AccountScore],
    ) -> list[AccountScore]:
        return self.run(detector, inputs, scores)[1]

    def find(self, detector: Detector, table: EventTable, progress: bool = False) -> list[Fleet]:
        inputs, scores = [], []
        for acc, emb, tr in detector.iter_traces(table, progress=progress):
            inputs.append((acc, emb, tr))
            scores.append(detector.account_score(tr))
        return self.run(detector, inputs, scores)[0]

    # ------------------------------------------------------------------ files

    def save(self, out: Path) -> None:
        judge = getattr(self, "judge_", None)
        doc: dict[str, Any] = {
            "link_config": asdict(self.link_config),
            "flag_threshold": self.flag_threshold,
            "min_prompt_prob": self.min_prompt_prob,
            "judge": judge.to_dict() if judge is not None else None,
            "incidents": None,
        }
        incidents = getattr(self, "incidents_", None)
        if incidents is not None:
            vectors, meta = incidents.to_arrays()
            np.save(out / "incidents.npy", vectors)
            doc["incidents"] = meta
        (out / "fleet.json").write_text(json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> FleetModel:
        doc = json.loads((path / "fleet.json").read_text())
        model = cls(
            _saved_link_config(doc["link_config"]),
            float(doc["flag_threshold"]),
            float(doc.get("min_prompt_prob", 0.0)),  # saved before the option: every prompt
        )
        model.judge_ = FleetJudge.from_dict(doc["judge"]) if doc["judge"] else None
        if doc.get("incidents") is not None:
            vectors = np.load(path / "incidents.npy", allow_pickle=False)
            model.incidents_ = IncidentIndex.from_arrays(vectors, doc["incidents"])
        return model


def _saved_link_config(d: dict[str, Any]) -> LinkConfig:
    """A saved ``LinkConfig``; one saved before ``content_alone`` keeps linking as it did."""
    d = dict(d)
    if "content_alone" not in d:
        d["content_alone"] = True
    return LinkConfig(**d)
