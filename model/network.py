"""The causal sequence network: per-event logits over embedding ⊕ features.

What it knows: a GRU over projected prompt embeddings and behavioural features, plus a
per-event "evidence" head whose running maximum, running mean and (``count_pool``) log of
the running sum are carried forward, so that a handful of harvesting prompts hidden among
hundreds of organic ones (slow drip) still leave a mark at the last position: the mean is
diluted by cover traffic, the maximum and the count are not. Every position sees only the past; the carried
state (GRU hidden, running max, running sum, count) is bounded, so extending a stream by
one event costs the same at event 10 as at event 10,000.

With ``prompt_head``, one more evidence channel is a per-prompt probability that this
prompt is a harvesting prompt, trained on prompt labels where training has them (the
simulator's, or an incident's ``harvest_prompts``). Its running sum is then an estimated
count of harvesting prompts so far, its mean their share: the account head reads both, and
reasons can cite the count.

What it does not know: text, files, training, calibration (see ``model/scorer.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkConfig:
    embed_dim: int = 384
    n_features: int = 36
    proj_dim: int = 64
    hidden: int = 96
    evidence_dim: int = 32
    dropout: float = 0.1
    #: Also pool ``log1p`` of the running SUM of non-negative evidence: a count of
    #: suspicious prompts that, unlike the mean, is not diluted by organic cover traffic.
    #: Models saved before this option existed load with False (their weights lack it).
    count_pool: bool = True
    #: A per-prompt harvesting probability as one more evidence channel (see the module
    #: docstring). Models saved before this option existed load with False.
    prompt_head: bool = True

    def __post_init__(self) -> None:
        for name in ("embed_dim", "n_features", "proj_dim", "hidden", "evidence_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"NetworkConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NetworkConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        return cls(**{"count_pool": False, "prompt_head": False, **d})


class StreamState(NamedTuple):
    """What the network carries from one event to the next, for a batch of streams."""

    hidden: torch.Tensor  # (1, B, H)
    ev_max: torch.Tensor  # (B, E)
    ev_sum: torch.Tensor  # (B, E)
    n_seen: torch.Tensor  # (B,) events seen so far


class SequenceDetector(nn.Module):
    """Causal per-position harvesting logits for `(B, T, D)` embeddings and `(B, T, F)` features."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        c = config
        self.proj = nn.Sequential(nn.Linear(c.embed_dim, c.proj_dim), nn.LayerNorm(c.proj_dim))
        in_dim = c.proj_dim + c.n_features
        self.inp = nn.Sequential(nn.Linear(in_dim, c.hidden), nn.GELU(), nn.Dropout(c.dropout))
        self.gru = nn.GRU(c.hidden, c.hidden, batch_first=True)
        self.evidence = nn.Sequential(
            nn.Linear(in_dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.evidence_dim)
        )
        if c.prompt_head:
            self.prompt = nn.Sequential(
                nn.Linear(in_dim, c.hidden),
                nn.GELU(),
                nn.Dropout(c.dropout),
                nn.Linear(c.hidden, 1),
            )
        #: evidence channels carried in the state (the prompt probability is the last one)
        self.n_evidence = c.evidence_dim + int(c.prompt_head)
        n_pools = 3 if c.count_pool else 2
        self.head = nn.Sequential(
            nn.Linear(c.hidden + n_pools * self.n_evidence, c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, 1),
        )

    def initial_state(self, batch: int) -> StreamState:
        c = self.config
        dev = next(self.parameters()).device
        return StreamState(
            hidden=torch.zeros(1, batch, c.hidden, device=dev),
            ev_max=torch.full((batch, self.n_evidence), -1e4, device=dev),
            ev_sum=torch.zeros(batch, self.n_evidence, device=dev),
            n_seen=torch.zeros(batch, device=dev),
        )

    def forward(
        self,
        emb: torch.Tensor,  # (B, T, D)
        feats: torch.Tensor,  # (B, T, F)
        state: StreamState | None = None,
        lengths: torch.Tensor | None = None,  # (B,) valid lengths (right padding); None = all
    ) -> tuple[torch.Tensor, StreamState]:
        """Logits `(B, T)` and the state after each stream's last valid event."""
        logits, _, new_state = self.forward_all(emb, feats, state, lengths)
        return logits, new_state

    def forward_all(
        self,
        emb: torch.Tensor,  # (B, T, D)
        feats: torch.Tensor,  # (B, T, F)
        state: StreamState | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, StreamState]:
        """Account logits `(B, T)`, per-prompt logits `(B, T)` (None without
        ``prompt_head``) and the state after each stream's last valid event."""
        b, t, _ = emb.shape
        state = state if state is not None else self.initial_state(b)
        x = torch.cat([self.proj(emb), feats], dim=-1)  # (B, T, P+F)
        h_seq, _ = self.gru(self.inp(x), state.hidden)  # (B, T, H)
        ev = self.evidence(x)  # (B, T, E)
        if self.config.count_pool:
            ev = nn.functional.softplus(ev)  # non-negative, so the running sum counts
        prompt_logits = None
        if self.config.prompt_head:
            prompt_logits = self.prompt(x).squeeze(-1)  # (B, T)
            ev = torch.cat([ev, torch.sigmoid(prompt_logits).unsqueeze(-1)], dim=-1)  # (B, T, E+1)
        ev_max = torch.cummax(ev, dim=1).values  # (B, T, E)
        ev_max = torch.maximum(ev_max, state.ev_max.unsqueeze(1))
        ev_sum = torch.cumsum(ev, dim=1) + state.ev_sum.unsqueeze(1)  # (B, T, E)
        steps = torch.arange(1, t + 1, device=emb.device, dtype=emb.dtype)  # (T,)
        count = state.n_seen.unsqueeze(1) + steps.unsqueeze(0)  # (B, T)
        pools = [h_seq, ev_max, ev_sum / count.unsqueeze(-1)]  # GRU, max, mean
        if self.config.count_pool:
            pools.append(torch.log1p(ev_sum))  # (B, T, E) soft count
        logits = self.head(torch.cat(pools, dim=-1)).squeeze(-1)  # (B, T)

        if lengths is None:
            last = torch.full((b,), t - 1, dtype=torch.long, device=emb.device)
        else:
            last = (lengths - 1).clamp(min=0)
        idx = torch.arange(b, device=emb.device)
        new_state = StreamState(
            hidden=h_seq[idx, last].unsqueeze(0).contiguous(),
            ev_max=ev_max[idx, last],
            ev_sum=ev_sum[idx, last],
            n_seen=count[idx, last],
        )
        return logits, prompt_logits, new_state
