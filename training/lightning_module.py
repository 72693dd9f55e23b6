"""The LightningModule: a thin training shell around ``model.network.SequenceDetector``.

What it knows: the loss and the optimizer. The loss is per-position binary cross-entropy of
the account label, so that early positions learn to flag (positions of a harvesting account
before its first known harvesting prompt are left out: nothing tells them apart yet), plus
the last position's loss, with the positive class re-weighted for imbalance; and, with the
network's prompt head, ``prompt_weight`` times the cross-entropy of each prompt whose label
is known (harvesting or organic), re-weighted by ``prompt_pos_weight``. With
``content_dropout`` p, each training stream has its prompt embeddings zeroed with
probability p, so the network must also tell harvesting from behaviour and phrasing alone,
not only from what the prompts are about (validation always sees the embeddings). With
``length_dropout`` p, each training stream has its ``length_columns`` (prompt length and
the long-document flag) zeroed with probability p, independently, so that long prompts
alone cannot decide an account. What it does not know: data, files, thresholds.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from model.network import NetworkConfig, SequenceDetector


class LitDetector(L.LightningModule):
    def __init__(
        self,
        network_config: dict,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        pos_weight: float = 1.0,
        last_weight: float = 1.0,
        prompt_weight: float = 1.0,
        prompt_pos_weight: float = 1.0,
        content_dropout: float = 0.0,
        length_dropout: float = 0.0,
        length_columns: tuple[int, ...] = (),
    ):
        super().__init__()
        self.save_hyperparameters()
        self.lr, self.weight_decay = lr, weight_decay
        self.pos_weight, self.last_weight = pos_weight, last_weight
        self.prompt_weight, self.prompt_pos_weight = prompt_weight, prompt_pos_weight
        if not 0.0 <= content_dropout < 1.0:
            raise ValueError(f"content_dropout must be in [0, 1), got {content_dropout}")
        self.content_dropout = content_dropout
        if not 0.0 <= length_dropout < 1.0:
            raise ValueError(f"length_dropout must be in [0, 1), got {length_dropout}")
        self.length_dropout = length_dropout
        self.length_columns = tuple(int(c) for c in length_columns)
        self.net = SequenceDetector(NetworkConfig.from_dict(network_config))

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, prompt_logits, _ = self.net.forward_all(
            batch["emb"], batch["feats"], lengths=batch["lengths"]
        )  # (B, T), (B, T) or None
        w = batch["mask"].float() * batch["position_w"]  # (B, T)
        y = batch["labels"].unsqueeze(1).expand_as(logits)  # (B, T)
        pw = torch.tensor(self.pos_weight, device=logits.device)
        per_pos = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw, reduction="none")
        per_account = (per_pos * w).sum(1) / w.sum(1).clamp(min=1)  # (B,)
        idx = torch.arange(len(logits), device=logits.device)
        last_idx = batch["lengths"] - 1
        last_loss = F.binary_cross_entropy_with_logits(
            logits[idx, last_idx], batch["labels"], pos_weight=pw, reduction="none"
        )  # (B,)
        account_loss = per_account + self.last_weight * w[idx, last_idx] * last_loss  # (B,)
        if "account_w" in batch:
            account_loss = account_loss * batch["account_w"]
        loss = account_loss.mean()
        known = batch["prompt_mask"] & batch["mask"]  # (B, T)
        if prompt_logits is not None and self.prompt_weight > 0 and bool(known.any()):
            ppw = torch.tensor(self.prompt_pos_weight, device=logits.device)
            per_prompt = F.binary_cross_entropy_with_logits(
                prompt_logits, batch["prompt_y"], pos_weight=ppw, reduction="none"
            )  # (B, T)
            loss = loss + self.prompt_weight * per_prompt[known].mean()
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.content_dropout > 0:
            emb = batch["emb"]  # (B, T, D)
            keep = torch.rand(len(emb), device=emb.device) >= self.content_dropout  # (B,)
            if "keep_content" in batch:  # streams exempt from dropout (e.g. spliced ones)
                keep = keep | batch["keep_content"]
            batch = {**batch, "emb": emb * keep.to(emb.dtype)[:, None, None]}
        if self.length_dropout > 0 and self.length_columns:
            feats = batch["feats"]  # (B, T, F)
            drop = torch.rand(len(feats), device=feats.device) < self.length_dropout  # (B,)
            cols = torch.zeros(feats.shape[-1], dtype=torch.bool, device=feats.device)
            cols[list(self.length_columns)] = True
            zero = drop[:, None, None] & cols[None, None, :]  # (B, 1, F)
            batch = {**batch, "feats": feats.masked_fill(zero, 0.0)}
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
