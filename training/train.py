"""Training a detector: events + labels → a self-contained model directory.

What it knows: the stages and their order — embed (cached) → leak-free split → topic
prototypes → features → spliced training accounts (dilution augmentation) → Lightning fit
with early stopping → Platt calibration and the operating threshold on validation → organic
reference for reasons → fleet judge → save.
What it does not know: how the network, features or splicing work inside.

Example::

    detector, report = train(read_events("events.jsonl"), read_labels("labels.jsonl")[0],
                             embedder, TrainConfig(), out="my_model")
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.special import logit

from model.events import AccountEvents, EventTable
from model.features import FeatureConfig, FeatureExtractor, fit_topic_centroids
from model.model_dir import save_model
from model.network import (
    EnsembleDetector,
    Network,
    NetworkConfig,
    SequenceDetector,
    content_view_weight,
    with_content_views,
)
from model.reasons import OrganicReference, account_stats
from model.scorer import AccountTrace, Calibration, Detector, TextEncoder
from training.dataset import (
    AccountExample,
    SequenceDataset,
    build_examples,
    collate,
    embed_table,
    group_split,
    join_labels,
    kind_weights,
)
from training.labels import Label
from training.metrics import detection_metrics, threshold_at_fpr

log = logging.getLogger(__name__)


#: Seed distance between ensemble members (far from the small seeds users pick).
ENSEMBLE_SEED_STEP = 7919
MAX_ENSEMBLE = 16
#: The feature columns ``TrainConfig.length_dropout`` zeroes.
LENGTH_FEATURES: tuple[str, ...] = ("log_chars", "long_document")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved in the model directory)."""

    seed: int = 0
    val_fraction: float = 0.25
    target_fpr: float = 0.01
    max_epochs: int = 25
    patience: int = 4
    batch_size: int = 32
    max_len: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    last_weight: float = 1.0
    #: Weight of the per-prompt loss (the network's prompt head; labels from
    #: ``harvest_prompts``). 0 turns it off; it is off anyway when no harvesting account of
    #: the training split lists its harvesting prompts.
    prompt_weight: float = 1.0
    #: Where a harvesting account's harvesting prompts are known, its position ``t`` is
    #: taught "harvesting" with weight ``min(1, k_t / evidence_ramp)``, ``k_t`` the
    #: harvesting prompts so far (``training.dataset.AccountExample.position_weights``).
    evidence_ramp: int = 3
    #: Which organic scores set the threshold: "any_prefix" (the highest score anywhere in
    #: an organic stream, what online scoring would flag) or "last" (final scores only).
    threshold_on: Literal["any_prefix", "last"] = "any_prefix"
    #: Dilution augmentation (``training.augment``): spliced accounts added to the training
    #: split, this many per organic training account (0 off; 0.5 adds one for every two).
    #: Each is an organic training account with harvesting prompts of a training
    #: harvesting account inserted, a share drawn log-uniformly from ``dilution_shares``.
    #: Validation, calibration and the threshold see real accounts only. It needs labels
    #: that list ``harvest_prompts``; without them nothing is added.
    dilution_augment: float = 0.5
    dilution_shares: tuple[float, float] = (0.01, 0.3)
    #: Chaining augmentation (``training.augment.chained_examples``): this many organic
    #: training accounts per organic kind of the training split, each the starts of two or
    #: three accounts of that kind in one stream (an evaluation team running a suite, not
    #: one benchmark). 0 off. ``chain_kinds`` limits it to the kinds named (empty: all).
    #: Tried at 40 for every kind and not adopted: it cost the harvesting kinds left out of
    #: training (``model/default/HISTORY.md``, "Chaining augmentation").
    chain_augment: int = 0
    chain_kinds: tuple[str, ...] = ()
    #: Probability that a training stream's prompt embeddings are zeroed for one step
    #: (``training.lightning_module``): the network learns to judge behaviour and phrasing
    #: without the content, for content it has never seen (benchmarks, documents). 0 turns
    #: it off. 0.6 was chosen on development data (``model/default/HISTORY.md``).
    content_dropout: float = 0.6
    #: Whether spliced accounts (dilution augmentation) are subject to content dropout too.
    #: Their few inserted harvesting prompts are often told apart by content alone, so
    #: False keeps their embeddings (an option under study; the shipped model used True).
    content_dropout_spliced: bool = True
    #: Probability that a training stream's length features (``LENGTH_FEATURES``: prompt
    #: length, the long-document flag) are zeroed for one step, independently of content
    #: dropout, so that "long documents" cannot stand for "organic" on its own. 0 off (the
    #: shipped model). At 0.8 it raised long-context sweeps left out of training on the
    #: held-out (b) (mean of three seeds 0.561 to 0.682) and cost slow drip left out (0.699
    #: to 0.602), so it was not adopted (``model/default/HISTORY.md``, "Chaining
    #: augmentation").
    length_dropout: float = 0.0
    #: Spliced accounts' inserted harvesting events take the cover account's system prompt
    #: and model (``training.augment.splice``, ``cover_client``), not the donor's: a harvester
    #: hiding in an account sends through that account's client, and a system prompt that
    #: appears only on the inserted prompts would be a mark of splicing, not of harvesting.
    #: False (the shipped model): the donor's. Tried on development copies and not adopted
    #: (slow drip left out +0.02 with views, -0.03 on content alone, over four seeds;
    #: ``model/default/HISTORY.md``, "Splicing with the cover account's client").
    splice_cover_client: bool = False
    #: Scoring judges every prompt twice, with its embedding and without it, and mixes the
    #: two logits with this weight on the no-content view (``model.network.ContentViews``;
    #: 0 off). Calibration and the threshold are fitted on the mixed score. It needs
    #: ``content_dropout`` > 0, which is what teaches the network the no-content input.
    content_view_weight: float = 0.0
    n_topics: int = 32
    #: Evens out the kinds within each class in the account loss: an account of a kind
    #: with ``n`` accounts weighs ``n ** -kind_balance`` (``training.dataset.kind_weights``;
    #: 0 off, 1 every kind of a class the same total weight). Rare hard negatives (evaluation
    #: teams, batch pipelines) then count as much as common organic use. Needs label kinds.
    kind_balance: float = 0.0
    #: Networks trained (a deep ensemble whose logits are averaged; 1: one network). The
    #: members share the split, features and spliced accounts; member ``i`` is seeded
    #: ``seed + ENSEMBLE_SEED_STEP * i`` (initialisation, batch order, content dropout), so
    #: member 0 is the network a single-network run of the same seed trains. Training time
    #: and the network's share of scoring time grow with the member count.
    ensemble: int = 1
    features: FeatureConfig = field(default_factory=FeatureConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    fleets: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.target_fpr < 0.5:
            raise ValueError(f"TrainConfig.target_fpr must be in (0, 0.5), got {self.target_fpr}")
        for name in ("max_epochs", "batch_size", "max_len", "n_topics", "evidence_ramp"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1")
        if not 0.0 <= self.kind_balance <= 1.0:
            raise ValueError(f"TrainConfig.kind_balance must be in [0, 1], got {self.kind_balance}")
        if not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise ValueError(
                f"TrainConfig.ensemble must be in [1, {MAX_ENSEMBLE}], got {self.ensemble}"
            )
        if self.patience < 0 or self.lr <= 0:
            raise ValueError("TrainConfig.patience must be >= 0 and lr > 0")
        if self.threshold_on not in ("any_prefix", "last"):
            raise ValueError(
                f"TrainConfig.threshold_on must be 'any_prefix' or 'last', got {self.threshold_on!r}"
            )
        if not 0.0 <= self.dilution_augment <= 10.0:
            raise ValueError(
                f"TrainConfig.dilution_augment must be in [0, 10], got {self.dilution_augment}"
            )
        lo, hi = self.dilution_shares
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(
                f"TrainConfig.dilution_shares must be (low, high) with 0 < low <= high < 1, "
                f"got {self.dilution_shares}"
            )
        object.__setattr__(self, "dilution_shares", (float(lo), float(hi)))
        if (
            isinstance(self.chain_augment, bool)
            or not isinstance(self.chain_augment, int | float)
            or not 0 <= self.chain_augment <= 10_000
            or int(self.chain_augment) != self.chain_augment
        ):
            raise ValueError(
                f"TrainConfig.chain_augment must be an integer in [0, 10000], got {self.chain_augment!r}"
            )
        if isinstance(self.chain_kinds, str) or not all(
            isinstance(k, str) and k for k in self.chain_kinds
        ):
            raise ValueError(
                f"TrainConfig.chain_kinds must be a sequence of kind names, got {self.chain_kinds!r}"
            )
        object.__setattr__(self, "chain_augment", int(self.chain_augment))
        object.__setattr__(self, "chain_kinds", tuple(self.chain_kinds))
        if not 0.0 <= self.content_dropout < 1.0:
            raise ValueError(
                f"TrainConfig.content_dropout must be in [0, 1), got {self.content_dropout}"
            )
        if not isinstance(self.splice_cover_client, bool):
            raise ValueError(
                f"TrainConfig.splice_cover_client must be true or false, got "
                f"{self.splice_cover_client!r}"
            )
        if not 0.0 <= self.length_dropout < 1.0:
            raise ValueError(
                f"TrainConfig.length_dropout must be in [0, 1), got {self.length_dropout}"
            )
        if not 0.0 <= self.content_view_weight < 1.0:
            raise ValueError(
                f"TrainConfig.content_view_weight must be in [0, 1), got {self.content_view_weight}"
            )
        if self.content_view_weight > 0 and self.content_dropout == 0:
            raise ValueError(
                "TrainConfig.content_view_weight needs content_dropout > 0: a network never "
                "trained without content cannot judge the no-content view"
            )
        if not self.prompt_weight >= 0:
            raise ValueError(f"TrainConfig.prompt_weight must be >= 0, got {self.prompt_weight}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config :meth:`to_dict` wrote (a model's ``training.config``); keys it lacks
        take today's defaults, keys this version does not know are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        kw = dict(d)
        if "features" in kw:
            kw["features"] = FeatureConfig.from_dict(kw["features"])
        if "network" in kw:
            kw["network"] = NetworkConfig.from_dict(kw["network"])
        for name in ("dilution_shares", "chain_kinds"):
            if name in kw:
                kw[name] = tuple(kw[name])
        return cls(**kw)


def _fit_network(
    train_ex: list[AccountExample],
    val_ex: list[AccountExample],
    config: TrainConfig,
    progress: bool,
) -> Network:
    """One network, or ``config.ensemble`` of them (seeds in :class:`TrainConfig`)."""
    members = []
    for i in range(config.ensemble):
        seed = config.seed + ENSEMBLE_SEED_STEP * i
        if config.ensemble > 1:
            log.info("ensemble member %d of %d (seed %d)", i + 1, config.ensemble, seed)
        members.append(_fit_member(train_ex, val_ex, config, seed, progress))
    return members[0] if len(members) == 1 else EnsembleDetector.of(members)


def _fit_member(
    train_ex: list[AccountExample],
    val_ex: list[AccountExample],
    config: TrainConfig,
    seed: int,
    progress: bool,
) -> SequenceDetector:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch.utils.data import DataLoader

    from training.augment import KIND as SPLICED_KIND
    from training.lightning_module import LitDetector

    L.seed_everything(seed, workers=True, verbose=False)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    n_pos = sum(e.label for e in train_ex)
    n_neg = len(train_ex) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("training needs both organic (0) and harvesting (1) accounts")
    net_cfg = NetworkConfig(
        **{
            **config.network.to_dict(),
            "embed_dim": train_ex[0].emb.shape[1],
            "n_features": train_ex[0].feats.shape[1],
        }
    )
    prompt_weight, prompt_pos_weight = _prompt_loss_weights(train_ex, config)
    lit = LitDetector(
        net_cfg.to_dict(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        pos_weight=n_neg / n_pos,
        last_weight=config.last_weight,
        prompt_weight=prompt_weight,
        prompt_pos_weight=prompt_pos_weight,
        content_dropout=config.content_dropout,
        length_dropout=config.length_dropout,
        length_columns=tuple(config.features.names.index(n) for n in LENGTH_FEATURES),
    )
    gen = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(
        SequenceDataset(
            train_ex,
            config.max_len,
            config.evidence_ramp,
            keep_content_kinds=() if config.content_dropout_spliced else (SPLICED_KIND,),
            account_weights=kind_weights(train_ex, config.kind_balance),
        ),
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=gen,
    )
    val_dl = DataLoader(
        SequenceDataset(
            val_ex,
            config.max_len,
            config.evidence_ramp,
            account_weights=kind_weights(val_ex, config.kind_balance),
        ),
        batch_size=config.batch_size * 2,
        collate_fn=collate,
    )
    ckpt = ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=1, save_weights_only=True)
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        accelerator="cpu",
        deterministic=True,
        callbacks=[EarlyStopping("val_loss", patience=config.patience, mode="min"), ckpt],
        enable_progress_bar=progress,
        enable_model_summary=False,
        logger=False,
        default_root_dir=None,
        gradient_clip_val=1.0,
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ckpt.dirpath = tmp
        trainer.fit(lit, train_dl, val_dl)
        if ckpt.best_model_path:
            best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
            lit.load_state_dict(best["state_dict"])
    net: SequenceDetector = lit.net.eval()
    return net


def _prompt_loss_weights(
    train_ex: list[AccountExample], config: TrainConfig
) -> tuple[float, float]:
    """(weight, positive-class weight) of the per-prompt loss; weight 0 when it cannot learn.

    Organic prompts are all known (every prompt of an organic account), harvesting ones
    only where labels list them: without any, the prompt head would only ever be told
    "organic", so the loss is off and the head learns through the account loss alone.
    """
    if config.prompt_weight == 0 or not config.network.prompt_head:
        return 0.0, 1.0
    n_pos = n_neg = 0
    for ex in train_ex:
        if ex.prompt_y is None:
            continue
        known = ex.prompt_y[~np.isnan(ex.prompt_y)]
        n_pos += int((known > 0.5).sum())
        n_neg += int((known <= 0.5).sum())
    if n_pos == 0:
        log.info("no harvesting account lists its harvesting prompts: prompt loss off")
        return 0.0, 1.0
    log.info("prompt loss on %d harvesting and %d organic prompts", n_pos, n_neg)
    return config.prompt_weight, min(n_neg / n_pos, 20.0)


def operating_threshold(
    traces: list[AccountTrace], labels: np.ndarray, config: TrainConfig
) -> float:
    """The threshold at ``config.target_fpr`` on the validation organic accounts.

    ``threshold_on="any_prefix"`` counts an organic account as a false positive when ANY
    prefix of its stream reaches the threshold, which is what an online scorer (the
    service, ``first_flag_event``) would have flagged; its final score then passes too, so
    the final-score false-positive rate is at most the target as well. It also holds up
    better on organic streams longer than the validation ones, since a long stream passes
    through many prefixes. ``"last"`` uses the final scores alone.
    """
    organic = [t for t, y in zip(traces, labels, strict=True) if y == 0]
    if config.threshold_on == "any_prefix":
        scores = np.array([float(t.probs.max()) for t in organic])
    else:
        scores = np.array([float(t.probs[-1]) for t in organic])
    return threshold_at_fpr(scores, config.target_fpr)


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Platt scaling fitted on validation logits of the accounts' last positions."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=100.0)
    lr.fit(np.asarray(logits).reshape(-1, 1), labels)
    return Calibration(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def _calibrate(
    detector: Detector,
    examples: Sequence[AccountExample],
    accounts: Sequence[AccountEvents],
    labs: Sequence[Label],
    tr_idx: Sequence[int],
    va_idx: Sequence[int],
    config: TrainConfig,
) -> dict[str, Any]:
    """Fit ``detector``'s organic reference (training organic accounts), calibration and
    threshold (validation accounts) to its network as it scores; returns validation metrics."""
    organic = [i for i in tr_idx if labs[i].label == 0]
    organic_traces = detector.trace_many(
        [accounts[i] for i in organic], [examples[i].emb.astype(np.float32) for i in organic]
    )
    detector.reference = OrganicReference.fit(
        [account_stats(t.state, t.prompt_count) for t in organic_traces]
    )
    detector.calibration = Calibration()
    val_accounts = [accounts[i] for i in va_idx]
    val_embs = [examples[i].emb.astype(np.float32) for i in va_idx]
    traces = list(detector.trace_many(val_accounts, val_embs))
    raw_last = logit(np.clip([t.probs[-1] for t in traces], 1e-12, 1 - 1e-12))
    y_val = np.array([examples[i].label for i in va_idx])
    detector.calibration = fit_calibration(raw_last, y_val)
    # calibrated per-event probabilities for the threshold and first_flag figures
    traces = list(detector.trace_many(val_accounts, val_embs))
    val_scores = np.array([t.probs[-1] for t in traces])
    detector.threshold = operating_threshold(traces, y_val, config)
    first = [detector.account_score(t).first_flag_event for t in traces]
    return detection_metrics(
        val_scores, y_val, [examples[i].kind for i in va_idx], detector.threshold, first
    )


def reweigh_content_views(
    detector: Detector,
    table: EventTable,
    labels: dict[str, Label],
    weight: float,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Judge a trained detector with the no-content view at ``weight``, without retraining.

    ``table`` and ``labels`` must be the detector's training data and ``config`` its
    training config (default: the one saved in ``detector.meta``), so that the split is the
    training run's: the organic reference, calibration and threshold are then fitted anew
    on the same accounts as :func:`train` would have, for the mixed score. The topic
    prototypes and features are the detector's own. Changes ``detector`` in place and
    returns the new validation metrics.
    """
    if config is None:
        saved = dict(detector.meta.get("training", {}).get("config", {}))
        if not saved:
            raise ValueError("the detector carries no training config; pass config")
        config = TrainConfig.from_dict(saved)
    config = dataclasses.replace(config, content_view_weight=weight)
    accounts, labs, _ = join_labels(table, labels)
    if len(accounts) < 10:
        raise ValueError(f"only {len(accounts)} labelled accounts have events; need at least 10")
    embeddings = embed_table(table, detector.embedder, progress=progress)
    tr_idx, va_idx = group_split(labs, config.val_fraction, config.seed)
    examples = build_examples(accounts, labs, embeddings, detector.extractor)
    detector.network = with_content_views(detector.network, weight)
    metrics = _calibrate(detector, examples, accounts, labs, tr_idx, va_idx, config)
    training = dict(detector.meta.get("training", {}))
    training["config"] = config.to_dict()
    now = datetime.now(UTC)
    detector.meta = {
        **detector.meta,
        "version": now.strftime("%Y%m%d-%H%M%S"),  # it scores differently: a new model
        "created": now.isoformat(timespec="seconds"),
        "reweighed_from": detector.meta.get("version"),
        "training": training,
        "metrics": {**detector.meta.get("metrics", {}), "validation": metrics},
    }
    return metrics


def train(
    table: EventTable,
    labels: dict[str, Label],
    embedder: TextEncoder,
    embed_config: dict[str, Any],
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> tuple[Detector, dict[str, Any]]:
    """Train a detector; if ``out`` is given, save it there. Returns (detector, report)."""
    config = config or TrainConfig()
    accounts, labs, join_counts = join_labels(table, labels)
    if len(accounts) < 10:
        raise ValueError(f"only {len(accounts)} labelled accounts have events; need at least 10")
    log.info("embedding %d events (%d accounts)", len(table), len(accounts))
    embeddings = embed_table(table, embedder, progress=progress)
    tr_idx, va_idx = group_split(labs, config.val_fraction, config.seed)
    rng = np.random.default_rng(config.seed)
    train_vecs = np.concatenate([embeddings[accounts[i].account_id] for i in tr_idx])
    sample = train_vecs[rng.choice(len(train_vecs), min(len(train_vecs), 50_000), replace=False)]
    topics = fit_topic_centroids(sample.astype(np.float32), k=config.n_topics, seed=config.seed)
    extractor = FeatureExtractor(config.features, topics)
    examples = build_examples(accounts, labs, embeddings, extractor)
    train_accounts = [accounts[i] for i in tr_idx]
    real_train_ex = [examples[i] for i in tr_idx]
    train_ex = real_train_ex  # the augmentations below add to a new list, never to this one
    n_augmented = 0
    if config.dilution_augment > 0:
        from training.augment import augmented_examples

        n_cover = sum(1 for i in tr_idx if labs[i].label == 0)
        augmented = augmented_examples(
            train_accounts,
            real_train_ex,
            round(config.dilution_augment * n_cover),
            extractor,
            config.dilution_shares,
            config.seed,
            cover_client=config.splice_cover_client,
        )
        log.info("dilution augmentation: %d spliced training accounts", len(augmented))
        n_augmented = len(augmented)
        train_ex = train_ex + augmented
    n_chained = 0
    if config.chain_augment > 0:
        from training.augment import chained_examples

        chained = chained_examples(
            train_accounts,
            real_train_ex,
            config.chain_augment,
            extractor,
            config.seed,
            kinds=config.chain_kinds,
        )
        log.info("chaining augmentation: %d chained organic training accounts", len(chained))
        present = {labs[i].kind for i in tr_idx if labs[i].label == 0}
        missing = sorted(set(config.chain_kinds) - present)
        if missing:
            log.warning(
                "chain_kinds names kinds with no organic training account: %s", ", ".join(missing)
            )
        n_chained = len(chained)
        train_ex = train_ex + chained
    val_ex = [examples[i] for i in va_idx]
    net = with_content_views(
        _fit_network(train_ex, val_ex, config, progress), config.content_view_weight
    )

    detector = Detector(
        network=net,
        extractor=extractor,
        embedder=embedder,
        calibration=Calibration(),
        threshold=0.5,
        reference=OrganicReference({}),
    )
    val_metrics = _calibrate(detector, examples, accounts, labs, tr_idx, va_idx, config)

    if config.fleets:
        from model.fleet_model import FleetModel

        detector.fleet_model = FleetModel.fit_from_training(detector, accounts, labs, embeddings)

    kinds: dict[str, int] = {}
    for lab in labs:
        kinds[lab.kind or str(lab.label)] = kinds.get(lab.kind or str(lab.label), 0) + 1
    detector.meta = {
        "version": datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "target_fpr": config.target_fpr,
        "training": {
            "n_events": len(table),
            "n_accounts": len(accounts),
            "n_train_accounts": len(tr_idx),
            "n_val_accounts": len(va_idx),
            "n_augmented_accounts": n_augmented,
            "n_chained_accounts": n_chained,
            "kinds": kinds,
            **join_counts,
            "config": config.to_dict(),
        },
        "metrics": {"validation": val_metrics},
    }
    report = {"validation": val_metrics, "training": detector.meta["training"]}
    if out is not None:
        save_model(
            detector,
            out,
            embed_config=embed_config,
            metrics=report,
            card=model_card(detector, report),
        )
    return detector, report


def _describe_network(net: Network) -> str:
    c = net.config
    one = f"causal GRU (hidden {c.hidden}, evidence {c.evidence_dim})"
    text = (
        one
        if net.n_members == 1
        else f"mean logit of {net.n_members} {one} networks trained from different seeds"
    )
    w = content_view_weight(net)
    if w:
        text += (
            f"; each prompt judged with and without its embedding, logits mixed {1 - w:g} / {w:g}"
        )
    return text


def model_card(detector: Detector, report: dict[str, Any], extra: str = "") -> str:
    """The model directory's README.md: what it is, how it was made, what it scores."""
    v = report.get("validation", {})
    tr = report.get("training", {})

    def fmt(x: Any) -> str:
        return "n/a" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))

    lines = [
        "# distillwatch detector",
        "",
        f"- version: `{detector.meta.get('version')}`",
        f"- embedder: `{detector.embedder.identity}`",
        f"- network: {_describe_network(detector.network)}",
        f"- operating threshold: {detector.threshold:.6f} (target FPR {detector.meta.get('target_fpr')}"
        " on validation organic accounts"
        + (
            ", an account counted once its score reached it after any of its events)"
            if tr.get("config", {}).get("threshold_on", "any_prefix") == "any_prefix"
            else ", final scores)"
        ),
        f"- trained on {tr.get('n_train_accounts')} accounts"
        + (
            f" and {tr['n_augmented_accounts']} spliced ones (dilution augmentation)"
            if tr.get("n_augmented_accounts")
            else ""
        )
        + (
            f" and {tr['n_chained_accounts']} chained organic ones (chaining augmentation)"
            if tr.get("n_chained_accounts")
            else ""
        )
        + f", validated on {tr.get('n_val_accounts')}"
        f" ({tr.get('n_events')} events); kinds: {tr.get('kinds')}",
        "",
        "## Validation (campaign-disjoint split of the training data)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "auroc",
        "pr_auc",
        "recall_at_1pct_fpr",
        "recall_at_0.1pct_fpr",
        "recall_at_threshold",
        "fpr_at_threshold",
    ):
        lines.append(f"| {key} | {fmt(v.get(key))} |")
    ff = v.get("first_flag_event") or {}
    lines.append(
        f"| first_flag_event median / p90 | {fmt(ff.get('median'))} / {fmt(ff.get('p90'))} |"
    )
    lines += ["", extra, ""]
    return "\n".join(lines)
