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

:class:`EnsembleDetector` averages the logits of several such networks trained from
different seeds (a deep ensemble): the same interface and a carried state that is the
members' states side by side, so scoring, online updates and stored states work unchanged.

What it does not know: text, files, training, calibration (see ``model/scorer.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, cast

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


class _StreamNetwork(nn.Module):
    """What every network here shares: ``forward`` is :meth:`forward_all` without the
    per-prompt logits."""

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
        emb: torch.Tensor,
        feats: torch.Tensor,
        state: StreamState | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, StreamState]:
        raise NotImplementedError


class SequenceDetector(_StreamNetwork):
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

    @property
    def n_members(self) -> int:
        return 1

    def prompt_counts(self, state: StreamState) -> torch.Tensor | None:
        """(B,) estimated harvesting prompts so far (the running sum of the prompt channel);
        None without a prompt head."""
        return state.ev_sum[:, -1] if self.config.prompt_head else None

    def check_state(self, state: StreamState) -> None:
        """Raise ValueError if ``state`` was not made by a network of this shape."""
        want = (self.config.hidden, self.n_evidence)
        got = (state.hidden.shape[-1], state.ev_sum.shape[-1])
        if got != want:
            raise ValueError(
                f"stream state of another network: hidden/evidence sizes {got}, "
                f"this network carries {want}"
            )


class EnsembleDetector(_StreamNetwork):
    """The mean logit of several :class:`SequenceDetector` of one configuration.

    Account logits are averaged over the members; a prompt's harvesting probability is the
    members' mean probability, so the per-prompt count (its running sum) is the members'
    mean count. The state is the members' states concatenated along their
    last axis, so it stays a :class:`StreamState` and is stored like one; ``n_seen`` is
    shared.
    """

    def __init__(self, config: NetworkConfig, n_members: int):
        super().__init__()
        if n_members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {n_members}")
        self.config = config
        self.members = nn.ModuleList(SequenceDetector(config) for _ in range(n_members))
        self.n_evidence: int = config.evidence_dim + int(config.prompt_head)

    def nets(self) -> list[SequenceDetector]:
        """The members, typed."""
        return cast(list[SequenceDetector], list(self.members))

    @classmethod
    def of(cls, members: list[SequenceDetector]) -> EnsembleDetector:
        """An ensemble of trained networks (all of one configuration)."""
        configs = {m.config for m in members}
        if len(configs) != 1:
            raise ValueError("ensemble members must share one NetworkConfig")
        ens = cls(members[0].config, len(members))
        for slot, m in zip(ens.members, members, strict=True):
            slot.load_state_dict(m.state_dict())
        return ens.eval()

    @property
    def n_members(self) -> int:
        return len(self.members)

    def initial_state(self, batch: int) -> StreamState:
        return self._join([m.initial_state(batch) for m in self.nets()])

    def _split(self, state: StreamState) -> list[StreamState]:
        h, e, k = self.config.hidden, self.n_evidence, self.n_members
        return [
            StreamState(
                hidden=state.hidden[..., i * h : (i + 1) * h].contiguous(),
                ev_max=state.ev_max[:, i * e : (i + 1) * e],
                ev_sum=state.ev_sum[:, i * e : (i + 1) * e],
                n_seen=state.n_seen,
            )
            for i in range(k)
        ]

    @staticmethod
    def _join(states: list[StreamState]) -> StreamState:
        return StreamState(
            hidden=torch.cat([s.hidden for s in states], dim=-1),
            ev_max=torch.cat([s.ev_max for s in states], dim=-1),
            ev_sum=torch.cat([s.ev_sum for s in states], dim=-1),
            n_seen=states[0].n_seen,
        )

    def forward_all(
        self,
        emb: torch.Tensor,
        feats: torch.Tensor,
        state: StreamState | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, StreamState]:
        """As :meth:`SequenceDetector.forward_all`, logits averaged over the members."""
        parts: list[StreamState | None] = (
            list(self._split(state)) if state is not None else [None] * self.n_members
        )
        outs = [
            m.forward_all(emb, feats, s, lengths) for m, s in zip(self.nets(), parts, strict=True)
        ]
        logits = torch.stack([o[0] for o in outs]).mean(dim=0)
        prompt_logits = None
        if outs[0][1] is not None:  # the logit of the members' mean probability
            p = torch.stack([torch.sigmoid(o[1]) for o in outs]).mean(dim=0)  # type: ignore[arg-type]
            prompt_logits = torch.logit(p, eps=1e-7)
        return logits, prompt_logits, self._join([o[2] for o in outs])

    def prompt_counts(self, state: StreamState) -> torch.Tensor | None:
        if not self.config.prompt_head:
            return None
        e = self.n_evidence
        return state.ev_sum[:, e - 1 :: e].mean(dim=-1)

    def check_state(self, state: StreamState) -> None:
        want = (self.config.hidden * self.n_members, self.n_evidence * self.n_members)
        got = (state.hidden.shape[-1], state.ev_sum.shape[-1])
        if got != want:
            raise ValueError(
                f"stream state of another network: hidden/evidence sizes {got}, "
                f"this {self.n_members}-member ensemble carries {want}"
            )


class ContentViews(_StreamNetwork):
    """A network judged twice per prompt, with its embedding and without it, logits mixed.

    The networks are trained with content dropout (whole streams' embeddings zeroed), so a
    stream of zero embeddings is an input they know: behaviour and phrasing alone. Mixing
    that view's logits, ``(1 - weight) * with + weight * without``, keeps a prompt whose
    content the network never saw (an unfamiliar benchmark, an unknown document) from
    deciding the score on its own. Prompt probabilities are mixed the same way, so the
    per-prompt count is the views' weighted mean count. Both views run in one batch of
    ``2B`` streams; the state is the two views' states side by side along the last axis,
    so it stays a :class:`StreamState`, bounded as before, and ``n_seen`` is shared.
    """

    def __init__(self, inner: SequenceDetector | EnsembleDetector, weight: float):
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ValueError(f"ContentViews weight must be in (0, 1), got {weight}")
        self.inner = inner
        self.weight = float(weight)
        self.config = inner.config
        self.n_evidence: int = inner.n_evidence

    @property
    def n_members(self) -> int:
        return self.inner.n_members

    def _halves(self) -> tuple[int, int]:
        k = self.inner.n_members
        return self.config.hidden * k, self.n_evidence * k

    def _split(self, state: StreamState) -> StreamState:
        """The two views' states stacked along the batch: ``(2B, ...)``."""
        h, e = self._halves()
        return StreamState(
            hidden=torch.cat([state.hidden[..., :h], state.hidden[..., h:]], dim=1).contiguous(),
            ev_max=torch.cat([state.ev_max[:, :e], state.ev_max[:, e:]], dim=0),
            ev_sum=torch.cat([state.ev_sum[:, :e], state.ev_sum[:, e:]], dim=0),
            n_seen=torch.cat([state.n_seen, state.n_seen], dim=0),
        )

    @staticmethod
    def _join(state: StreamState, b: int) -> StreamState:
        """Inverse of :meth:`_split`."""
        return StreamState(
            hidden=torch.cat([state.hidden[:, :b], state.hidden[:, b:]], dim=-1),
            ev_max=torch.cat([state.ev_max[:b], state.ev_max[b:]], dim=-1),
            ev_sum=torch.cat([state.ev_sum[:b], state.ev_sum[b:]], dim=-1),
            n_seen=state.n_seen[:b],
        )

    def initial_state(self, batch: int) -> StreamState:
        return self._join(self.inner.initial_state(2 * batch), batch)

    def forward_all(
        self,
        emb: torch.Tensor,
        feats: torch.Tensor,
        state: StreamState | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, StreamState]:
        """As :meth:`SequenceDetector.forward_all`, logits mixed over the two views."""
        b = emb.shape[0]
        both_emb = torch.cat([emb, torch.zeros_like(emb)], dim=0)
        both_feats = torch.cat([feats, feats], dim=0)
        both_state = self._split(state) if state is not None else None
        both_len = torch.cat([lengths, lengths], dim=0) if lengths is not None else None
        logits, prompt_logits, new_state = self.inner.forward_all(
            both_emb, both_feats, both_state, both_len
        )
        w = self.weight
        mixed = (1 - w) * logits[:b] + w * logits[b:]
        mixed_prompt = None
        if prompt_logits is not None:
            p = torch.sigmoid(prompt_logits)
            mixed_prompt = torch.logit((1 - w) * p[:b] + w * p[b:], eps=1e-7)
        return mixed, mixed_prompt, self._join(new_state, b)

    def prompt_counts(self, state: StreamState) -> torch.Tensor | None:
        b = state.n_seen.shape[0]
        counts = self.inner.prompt_counts(self._split(state))
        if counts is None:
            return None
        return (1 - self.weight) * counts[:b] + self.weight * counts[b:]

    def check_state(self, state: StreamState) -> None:
        h, e = self._halves()
        got = (state.hidden.shape[-1], state.ev_sum.shape[-1])
        if got != (2 * h, 2 * e):
            raise ValueError(
                f"stream state of another network: hidden/evidence sizes {got}, this "
                f"network judged with and without content carries {(2 * h, 2 * e)}"
            )


#: What a trained detector's network is: one network or an ensemble of them, maybe judged
#: with and without content (:class:`ContentViews`).
Network = SequenceDetector | EnsembleDetector | ContentViews


def content_view_weight(network: Network) -> float:
    """The weight of the no-content view (0 for a network judged on content alone)."""
    return network.weight if isinstance(network, ContentViews) else 0.0


def with_content_views(network: Network, weight: float) -> Network:
    """``network`` judged with the no-content view at ``weight`` (0: on content alone)."""
    base = network.inner if isinstance(network, ContentViews) else network
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"content view weight must be in [0, 1), got {weight}")
    return base if weight == 0 else ContentViews(base, weight).eval()


def base_network(network: Network) -> SequenceDetector | EnsembleDetector:
    """The trained weights' network (what ``weights.pt`` holds)."""
    return network.inner if isinstance(network, ContentViews) else network


def build_network(config: NetworkConfig, n_members: int = 1) -> Network:
    """An untrained network (``n_members`` > 1: an ensemble), e.g. to load saved weights."""
    if n_members < 1:
        raise ValueError(f"a network needs at least 1 member, got {n_members}")
    return SequenceDetector(config) if n_members == 1 else EnsembleDetector(config, n_members)
