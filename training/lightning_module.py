"""The LightningModule: a thin training shell around ``model.network.SequenceDetector``.

What it knows: the loss (per-position binary cross-entropy so that early positions learn
to flag, plus the last position's loss, with the positive class re-weighted for imbalance)
and the optimizer. What it does not know: data, files, thresholds.
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
    ):
        super().__init__()
        self.save_hyperparameters()
        self.lr, self.weight_decay = lr, weight_decay
        self.pos_weight, self.last_weight = pos_weight, last_weight
        self.net = SequenceDetector(NetworkConfig.from_dict(network_config))

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, _ = self.net(batch["emb"], batch["feats"], lengths=batch["lengths"])  # (B, T)
        mask = batch["mask"].float()  # (B, T)
        y = batch["labels"].unsqueeze(1).expand_as(logits)  # (B, T)
        pw = torch.tensor(self.pos_weight, device=logits.device)
        per_pos = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw, reduction="none")
        per_account = (per_pos * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        idx = torch.arange(len(logits), device=logits.device)
        last = logits[idx, batch["lengths"] - 1]  # (B,)
        last_loss = F.binary_cross_entropy_with_logits(
            last, batch["labels"], pos_weight=pw, reduction="none"
        )
        return (per_account + self.last_weight * last_loss).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
