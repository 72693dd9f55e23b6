"""Human-checkable evidence for a score: account statistics compared with organic traffic.

What it knows: the account-level statistics a reviewer can verify by reading the prompts
(share of prompts with reasoning elicitation, reused wrappers, requested output size, rate,
topic spread, ...) and, for each, the distribution seen over organic training accounts.
A statistic becomes a reason when the account sits far in the organic tail; reasons are
ordered by how rare the value is among organic accounts.

What it does not know: the network. Reasons are evidence, never a restated score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.features import CONTEXT_RESENT_CHARS, FeatureState

#: Statistics with the direction that looks like harvesting (+1: high is suspicious).
STAT_NAMES: tuple[str, ...] = (
    "share_elicitation",
    "share_rubric",
    "share_answer_format",
    "share_template",
    "share_near_duplicate",
    "mean_max_tokens",
    "events_per_active_hour",
    "topics_covered",
    "share_long_document",
    "share_context_resent",
    "round_the_clock",
    "harvest_prompts",
)


#: How a statistic's organic p95 is written in a reason when not as ``{:,.1f}`` (shares are
#: written as percentages): the unit the reason states the account's own value in.
REFERENCE_FORMATS: dict[str, str] = {
    "events_per_active_hour": "{:,.1f} per hour",
    "round_the_clock": "{:.2f}",
}


def account_stats(state: FeatureState, prompt_count: float | None = None) -> dict[str, float]:
    """The reviewer-facing statistics of an account, from its feature state.

    ``prompt_count`` (the network's estimated count of harvesting prompts, where it has a
    prompt head) becomes ``harvest_prompts``; without it the statistic is absent.
    """
    n = max(state.n, 1)
    c = state.counts
    span_h = max((state.last_ts - state.first_ts) / 3600.0, 0.0) if state.n > 1 else 0.0
    reused_heads = sum(v for v in state.head_keys.values() if v >= 2)
    reused_tails = sum(v for v in state.tail_keys.values() if v >= 2)
    return {
        "n_events": float(state.n),
        "share_elicitation": c["elicitation"] / n,
        "share_rubric": c["rubric"] / n,
        "share_answer_format": c["answer_format"] / n,
        "share_template": c["template"] / n,
        "n_templates": float(
            max(
                sum(1 for v in state.head_keys.values() if v >= 2),
                sum(1 for v in state.tail_keys.values() if v >= 2),
            )
        ),
        "template_prompts": float(max(reused_heads, reused_tails)),
        "share_near_duplicate": c["near_dup"] / n,
        "mean_max_tokens": c["max_tokens_sum"] / c["n_max_tokens"] if c["n_max_tokens"] else 0.0,
        "events_per_active_hour": state.n / max(span_h, 1.0),
        "span_hours": span_h,
        "topics_covered": float((state.topic_counts > 0).sum()),
        "n_topics": float(len(state.topic_counts)),
        "share_long_document": c["long"] / n,
        "share_context_resent": c["context_resent"] / n,  # 0 without context reuse
        "context_resent_prompts": c["context_resent"],
        "context_sources": float(len(state.context_sources)),
        "round_the_clock": 1.0 - math.hypot(state.hour_cos, state.hour_sin) / n
        if state.n >= 10
        else 0.0,
        **({} if prompt_count is None else {"harvest_prompts": float(prompt_count)}),
    }


def prompt_positions(probs: np.ndarray, limit: int = 5, min_prob: float = 0.5) -> str | None:
    """The 1-based positions of the prompts most likely to harvest, for a reviewer to open:
    ``"prompts 4, 17 and 33"``, strongest first (None when no prompt reaches ``min_prob``)."""
    order = [int(i) for i in np.argsort(-probs, kind="stable") if probs[i] >= min_prob]
    if not order:
        return None
    shown = [str(i + 1) for i in order[:limit]]
    if len(shown) == 1:
        return f"prompt {shown[0]}"
    if len(order) > limit:
        return f"prompts {', '.join(shown)} and {len(order) - limit} more"
    return f"prompts {', '.join(shown[:-1])} and {shown[-1]}"


def _pct(x: float, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}%"


def _span(hours: float) -> str:
    """A duration as a reviewer would write it: 40 s, 12 min, 3.5 h, 6.2 days.

    The rate statistic counts a span under an hour as one hour, so "120 prompts in 12 min"
    is 120 "per hour" there; printing both would read as a contradiction."""
    seconds = max(hours, 0.0) * 3600.0
    if seconds < 60:
        return f"{seconds:.0f} s"
    if hours < 1.0:
        return f"{seconds / 60:.0f} min"
    if hours < 48.0:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def _describe(name: str, s: Mapping[str, float], digits: int = 0) -> str:
    """The sentence of one statistic; shares with ``digits`` decimals."""
    n = int(s["n_events"])
    if name == "share_elicitation":
        return f"chain-of-thought / reasoning elicitation in {_pct(s[name], digits)} of {n} prompts"
    if name == "share_rubric":
        return f"grading / rubric requests in {_pct(s[name], digits)} of prompts"
    if name == "share_answer_format":
        return f"fixed answer-format demands (final answer, JSON, \\boxed) in {_pct(s[name], digits)} of prompts"
    if name == "share_template":
        return (
            f"{int(s['n_templates'])} prompt wrappers reused across "
            f"{int(s['template_prompts'])} of {n} prompts"
        )
    if name == "share_near_duplicate":
        return f"{_pct(s[name], digits)} of prompts near-duplicate an earlier prompt of the account"
    if name == "mean_max_tokens":
        return f"requests long outputs: mean max_tokens {s[name]:,.0f}"
    if name == "events_per_active_hour":
        return f"{n} prompts in {_span(s['span_hours'])}" + (
            f" ({s[name]:.0f} per hour)" if s["span_hours"] >= 1.0 else ""
        )
    if name == "topics_covered":
        return f"prompts span {int(s[name])} of {int(s['n_topics'])} topic clusters"
    if name == "share_long_document":
        return f"long documents (> 3,000 chars) in {_pct(s[name], digits)} of prompts"
    if name == "share_context_resent":
        k = int(s.get("context_sources", 0))
        return (
            f"{int(s['context_resent_prompts'])} of {n} prompts re-send at least "
            f"{CONTEXT_RESENT_CHARS:,} characters the account already sent in another "
            f"conversation (text first sent in {k} earlier conversation{'' if k == 1 else 's'})"
        )
    if name == "round_the_clock":
        return (
            f"activity spread around the clock, not in one person's waking hours (hour-of-day "
            f"spread {s[name]:.2f}, where 0 is one hour of the day and 1 even over all 24)"
        )
    if name == "harvest_prompts":
        return (
            f"about {s[name]:.0f} of {n} prompts look like known harvesting prompts to the "
            "per-prompt model"
        )
    raise KeyError(name)


@dataclass
class OrganicReference:
    """Quantiles (0..100) of each statistic over organic training accounts.

    A statistic that some of the fitted accounts lack (``harvest_prompts`` of a network
    without a prompt head) is left out of the reference and never becomes a reason.
    """

    quantiles: dict[str, list[float]]

    @classmethod
    def fit(cls, stats: list[dict[str, float]]) -> OrganicReference:
        if not stats:
            raise ValueError("need organic accounts to build the reference")
        q = np.linspace(0, 100, 101)
        names = [k for k in STAT_NAMES if all(k in s for s in stats)]
        return cls({k: np.percentile([s[k] for s in stats], q).round(6).tolist() for k in names})

    def percentile(self, name: str, value: float) -> float:
        """Share of organic accounts with a value below ``value`` (0..1)."""
        qs = self.quantiles[name]
        return float(np.searchsorted(qs, value, side="left")) / len(qs)

    def reasons(
        self,
        s: Mapping[str, float],
        limit: int = 4,
        min_pct: float = 0.95,
        examples: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Statistics in the organic tail, rarest first, as sentences a reviewer can check.

        ``examples`` adds where to look to a statistic's sentence (e.g. which prompts).
        """
        examples = examples or {}
        ranked = []
        for name in STAT_NAMES:
            value = s.get(name, 0.0)
            if value <= 0 or name not in self.quantiles:
                continue
            pct = self.percentile(name, value)
            if pct >= min_pct and value > self.quantiles[name][50]:
                ranked.append((pct, name))
        ranked.sort(key=lambda x: -x[0])
        out = []
        for pct, name in ranked[:limit]:
            p95 = self.quantiles[name][95]
            digits = 0  # enough decimals that the account's share and the p95 differ
            while digits < 2 and _pct(s[name], digits) == _pct(p95, digits):
                digits += 1
            if name.startswith("share_"):
                ref = _pct(p95, digits)
            else:
                ref = REFERENCE_FORMATS.get(name, "{:,.1f}").format(p95)
            tail = "above every organic account" if pct >= 1.0 else f"organic p95: {ref}"
            where = f", e.g. {examples[name]}" if name in examples else ""
            out.append(f"{_describe(name, s, digits)}{where} ({tail})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"quantiles": self.quantiles}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OrganicReference:
        return cls({k: list(v) for k, v in d["quantiles"].items()})
