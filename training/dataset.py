"""Training examples: labelled accounts turned into tensors, and leak-free splits.

What it knows: how to embed an event table once (through the cached embedder), compute
each account's causal features, keep only what training needs (float16 embeddings,
features, label, kind, campaign), batch variable-length accounts with right padding, and
split accounts so that every campaign lies wholly on one side (fleet members never leak
between train and validation).

What it does not know: the network or the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from model.events import AccountEvents, EventTable
from model.features import FeatureExtractor, FeatureState
from model.scorer import TextEncoder
from training.labels import Label


@dataclass
class AccountExample:
    account_id: str
    emb: np.ndarray  # (T, D) float16
    feats: np.ndarray  # (T, F) float32
    label: int
    kind: str
    campaign: str | None
    state: FeatureState  # features' state after the last event (for reasons / references)

    def __len__(self) -> int:
        return len(self.feats)


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


def build_examples(
    accounts: Sequence[AccountEvents],
    labels: Sequence[Label],
    embeddings: dict[str, np.ndarray],
    extractor: FeatureExtractor,
) -> list[AccountExample]:
    out = []
    for acc, lab in zip(accounts, labels, strict=True):
        emb = embeddings[acc.account_id]
        feats, state = extractor.transform(acc, emb.astype(np.float32))
        out.append(
            AccountExample(
                account_id=acc.account_id,
                emb=emb,
                feats=feats,
                label=lab.label,
                kind=lab.kind or ("harvest" if lab.label else "organic"),
                campaign=lab.campaign,
                state=state,
            )
        )
    return out


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


class SequenceDataset(Dataset):
    """Accounts as (emb, feats, label) tensors, cropped to ``max_len`` events."""

    def __init__(self, examples: Sequence[AccountExample], max_len: int):
        self.examples = list(examples)
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        ex = self.examples[i]
        n = min(len(ex), self.max_len)
        return (
            torch.from_numpy(ex.emb[:n].astype(np.float32)),
            torch.from_numpy(ex.feats[:n]),
            ex.label,
        )


def collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(f) for _, f, _ in batch])
    t = int(lengths.max())
    b = len(batch)
    d = batch[0][0].shape[1]
    f = batch[0][1].shape[1]
    emb = torch.zeros(b, t, d)  # (B, T, D)
    feats = torch.zeros(b, t, f)  # (B, T, F)
    for i, (e, x, _) in enumerate(batch):
        emb[i, : len(e)] = e
        feats[i, : len(x)] = x
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    labels = torch.tensor([y for _, _, y in batch], dtype=torch.float32)
    return {"emb": emb, "feats": feats, "mask": mask, "lengths": lengths, "labels": labels}
