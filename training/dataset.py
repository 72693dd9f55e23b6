"""Training examples: labelled accounts turned into tensors, and leak-free splits.

What it knows: how to embed an event table once (through the cached embedder), compute
each account's causal features, keep only what training needs (float16 embeddings,
features, label, kind, campaign, and which prompts are known to harvest), batch variable-length accounts with right padding, and
split accounts so that every campaign lies wholly on one side (fleet members never leak
between train and validation).

What it does not know: the network or the training loop.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from model.events import AccountEvents, EventTable
from model.features import FeatureExtractor, FeatureState
from model.scorer import TextEncoder
from training.labels import Label, prompt_digest


@dataclass
class AccountExample:
    account_id: str
    emb: np.ndarray  # (T, D) float16
    feats: np.ndarray  # (T, F) float32
    label: int
    kind: str
    campaign: str | None
    state: FeatureState  # features' state after the last event (for reasons / references)
    #: (T,) 1 harvesting prompt, 0 organic prompt, NaN unknown (a harvesting account whose
    #: label lists no ``harvest_prompts``). Every prompt of an organic account is organic.
    prompt_y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.feats)

    def position_weights(self, ramp: int = 1) -> np.ndarray:
        """(T,) weight of each position's account-level loss.

        A harvesting account whose harvesting prompts are known is not yet told apart from
        organic use before its first one (cover traffic so far), and hardly after one or
        two (organic users send the odd benchmark-like prompt too). Position ``t`` gets
        weight ``min(1, k_t / ramp)``, ``k_t`` the harvesting prompts up to ``t``, instead
        of being taught to call organic-looking traffic harvesting. Other accounts: 1.
        """
        w = np.ones(len(self), dtype=np.float32)
        if self.label == 1 and self.prompt_y is not None and not np.isnan(self.prompt_y).any():
            seen = np.cumsum(self.prompt_y > 0.5)
            w = np.minimum(1.0, seen / max(ramp, 1)).astype(np.float32)
        return w


def prompt_labels(account: AccountEvents, label: Label) -> np.ndarray:
    """(T,) per-prompt labels of one account (see :attr:`AccountExample.prompt_y`)."""
    if label.label == 0:
        return np.zeros(len(account), dtype=np.float32)
    if label.harvest_prompts is None:
        return np.full(len(account), np.nan, dtype=np.float32)
    known = label.harvest_prompts
    return np.array([prompt_digest(p) in known for p in account.prompts], dtype=np.float32)


def embed_table(
    table: EventTable, embedder: TextEncoder, progress: bool = True
) -> dict[str, np.ndarray]:
    """Embeddings (float16) of every account's prompts, each distinct text embedded once."""
    uniq = table.unique_prompts()
    vecs = embedder.encode(uniq, progress=progress)
    index = {t: i for i, t in enumerate(uniq)}
    out: dict[str, np.ndarray] = {}
    for acc in table.accounts():
        rows = np.fromiter((index[p] for p in acc.prompts), dtype=np.int64, count=len(acc))
        out[acc.account_id] = vecs[rows].astype(np.float16)
    return out


def join_labels(
    table: EventTable, labels: dict[str, Label]
) -> tuple[list[AccountEvents], list[Label], dict[str, int]]:
    """Accounts that have both events and a label; counts of those that have only one."""
    accounts, labs = [], []
    for acc in table.accounts():
        lab = labels.get(acc.account_id)
        if lab is not None:
            accounts.append(acc)
            labs.append(lab)
    seen = {a.account_id for a in accounts}
    counts = {
        "unlabelled_accounts": table.n_accounts - len(accounts),
        "labels_without_events": sum(1 for a in labels if a not in seen),
    }
    return accounts, labs, counts


def featurize(
    account: AccountEvents,
    emb: np.ndarray,
    extractor: FeatureExtractor,
    *,
    label: int,
    kind: str,
    campaign: str | None,
    prompt_y: np.ndarray | None,
) -> AccountExample:
    """One training example: ``account``'s features (from ``emb``) with its labels."""
    feats, state = extractor.transform(account, emb.astype(np.float32))
    return AccountExample(
        account_id=account.account_id,
        emb=emb,
        feats=feats,
        label=label,
        kind=kind,
        campaign=campaign,
        state=state,
        prompt_y=prompt_y,
    )


def build_examples(
    accounts: Sequence[AccountEvents],
    labels: Sequence[Label],
    embeddings: dict[str, np.ndarray],
    extractor: FeatureExtractor,
) -> list[AccountExample]:
    return [
        featurize(
            acc,
            embeddings[acc.account_id],
            extractor,
            label=lab.label,
            kind=lab.kind or ("harvest" if lab.label else "organic"),
            campaign=lab.campaign,
            prompt_y=prompt_labels(acc, lab),
        )
        for acc, lab in zip(accounts, labels, strict=True)
    ]


def group_split(
    labels: Sequence[Label], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, val): campaigns kept whole, stratified by kind, seeded."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        key = f"c:{lab.campaign}" if lab.campaign else f"a:{lab.account_id}"
        groups.setdefault(key, []).append(i)
    by_kind: dict[str, list[str]] = {}
    for key, idx in groups.items():
        kind = labels[idx[0]].kind or str(labels[idx[0]].label)
        by_kind.setdefault(kind, []).append(key)
    train: list[int] = []
    val: list[int] = []
    for kind in sorted(by_kind):
        keys = sorted(by_kind[kind])
        rng.shuffle(keys)
        n_val = max(1, round(len(keys) * val_fraction)) if len(keys) > 1 else 0
        for j, key in enumerate(keys):
            (val if j < n_val else train).extend(groups[key])
    return sorted(train), sorted(val)


def kind_weights(examples: Sequence[AccountExample], power: float) -> np.ndarray:
    """(N,) account weights that even out the kinds within each class.

    An account of a kind with ``n`` accounts in its class (organic or harvesting) weighs
    ``n ** -power``, scaled so that each class's mean weight is 1 (the class balance is
    ``pos_weight``'s business). ``power`` 0 weighs every account 1; 1 gives every kind of a
    class the same total weight, so a rare hard negative (twenty evaluation teams among
    hundreds of casual users) counts as much as a common one. Accounts without a kind count
    as one kind per class.
    """
    w = np.ones(len(examples), dtype=np.float64)
    if power == 0 or not examples:
        return w.astype(np.float32)
    kinds = [(ex.label, ex.kind or "") for ex in examples]
    counts: dict[tuple[int, str], int] = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([counts[k] ** -power for k in kinds], dtype=np.float64)
    labels = np.array([ex.label for ex in examples])
    for c in np.unique(labels):
        m = labels == c
        w[m] /= w[m].mean()
    return w.astype(np.float32)


class SequenceDataset(Dataset):
    """Accounts as tensors (emb, feats, label, prompt labels, position weights, account
    weight), cropped to ``max_len`` events."""

    def __init__(
        self,
        examples: Sequence[AccountExample],
        max_len: int,
        ramp: int = 1,
        keep_content_kinds: Collection[str] = (),
        account_weights: Sequence[float] | np.ndarray | None = None,
    ):
        self.examples = list(examples)
        if account_weights is not None and len(account_weights) != len(self.examples):
            raise ValueError(
                f"{len(account_weights)} account weights for {len(self.examples)} examples"
            )
        self.account_weights = (
            None if account_weights is None else [float(x) for x in account_weights]
        )
        self.max_len = max_len
        self.ramp = ramp
        #: kinds whose streams always keep their embeddings (exempt from content dropout)
        self.keep_content_kinds = frozenset(keep_content_kinds)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Item:
        ex = self.examples[i]
        n = min(len(ex), self.max_len)
        prompt_y = ex.prompt_y if ex.prompt_y is not None else np.full(len(ex), np.nan)
        return Item(
            torch.from_numpy(ex.emb[:n].astype(np.float32)),
            torch.from_numpy(ex.feats[:n]),
            ex.label,
            torch.from_numpy(np.asarray(prompt_y[:n], dtype=np.float32)),
            torch.from_numpy(ex.position_weights(self.ramp)[:n]),
            ex.kind in self.keep_content_kinds,
            1.0 if self.account_weights is None else self.account_weights[i],
        )


class Item(NamedTuple):
    emb: torch.Tensor  # (T, D)
    feats: torch.Tensor  # (T, F)
    label: int
    prompt_y: torch.Tensor  # (T,) 1 / 0 / NaN unknown
    position_w: torch.Tensor  # (T,)
    keep_content: bool = False  # exempt from content dropout
    account_w: float = 1.0  # weight of the account's loss (``kind_weights``)


def collate(batch: Sequence[Item]) -> dict[str, torch.Tensor]:
    """Right-padded tensors; ``mask`` marks real events, ``prompt_mask`` known prompt labels."""
    lengths = torch.tensor([len(item.feats) for item in batch])
    t = int(lengths.max())
    b = len(batch)
    d = batch[0].emb.shape[1]
    f = batch[0].feats.shape[1]
    emb = torch.zeros(b, t, d)  # (B, T, D)
    feats = torch.zeros(b, t, f)  # (B, T, F)
    prompt_y = torch.full((b, t), float("nan"))  # (B, T)
    position_w = torch.zeros(b, t)  # (B, T)
    for i, item in enumerate(batch):
        n = len(item.feats)
        emb[i, :n] = item.emb
        feats[i, :n] = item.feats
        prompt_y[i, :n] = item.prompt_y
        position_w[i, :n] = item.position_w
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    labels = torch.tensor([item.label for item in batch], dtype=torch.float32)
    prompt_mask = ~torch.isnan(prompt_y)
    return {
        "emb": emb,
        "feats": feats,
        "mask": mask,
        "lengths": lengths,
        "labels": labels,
        "prompt_y": torch.nan_to_num(prompt_y, nan=0.0),
        "prompt_mask": prompt_mask,
        "position_w": position_w,
        "keep_content": torch.tensor([item.keep_content for item in batch], dtype=torch.bool),
        "account_w": torch.tensor([item.account_w for item in batch], dtype=torch.float32),
    }
