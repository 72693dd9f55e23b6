"""Account labels: the contract's training / evaluation input, validated.

What it knows: ``{"account_id", "label", "campaign"?, "kind"?, "harvest_prompts"?}`` records
in JSON Lines, and how to report a bad one by file, line and field. ``harvest_prompts``
(an extension of the contract, optional) names the prompts of a harvesting account that are
known to be harvesting prompts, by the SHA-256 hex digest of their UTF-8 text
(:func:`prompt_digest`); the account's other prompts are then known to be cover traffic.
Training uses it to teach the network which prompts carry the evidence. What it does not
know: events.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from model.events import EventError, OnError, ReadStats


@dataclass(frozen=True)
class Label:
    account_id: str
    label: int
    campaign: str | None = None
    kind: str | None = None
    #: SHA-256 hex digests of the account's known harvesting prompts (None: not known).
    harvest_prompts: frozenset[str] | None = None


def prompt_digest(prompt: str) -> str:
    """The SHA-256 hex digest of a prompt's UTF-8 text, as ``harvest_prompts`` lists them.

    >>> prompt_digest("hi")[:16]
    '8f434346648f6b96'
    """
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def parse_label(rec: Any, source: str, line: int) -> Label:
    def fail(field: str | None, msg: str) -> EventError:
        return EventError(source, line, field, msg)

    if not isinstance(rec, dict):
        raise fail(None, f"expected a JSON object, got {type(rec).__name__}")
    acc = rec.get("account_id")
    if not isinstance(acc, str) or not 1 <= len(acc) <= 128:
        raise fail("account_id", "required string of 1-128 characters")
    label = rec.get("label")
    if isinstance(label, bool) or label not in (0, 1):
        raise fail("label", f"must be 0 (organic) or 1 (harvesting), got {label!r}")
    out = {}
    for name in ("campaign", "kind"):
        value = rec.get(name)
        if value is not None and not isinstance(value, str):
            raise fail(name, f"expected a string, got {type(value).__name__}")
        out[name] = value
    digests = rec.get("harvest_prompts")
    harvest_prompts = None
    if digests is not None:
        if not isinstance(digests, list):
            raise fail("harvest_prompts", f"expected a list, got {type(digests).__name__}")
        for i, d in enumerate(digests):
            if not isinstance(d, str) or _DIGEST_RE.fullmatch(d) is None:
                raise fail(
                    "harvest_prompts",
                    f"item {i}: expected a lower-case SHA-256 hex digest of a prompt, got {d!r}",
                )
        if label == 0 and digests:
            raise fail("harvest_prompts", "an organic (label 0) account has no harvesting prompts")
        harvest_prompts = frozenset(digests)
    return Label(account_id=acc, label=int(label), harvest_prompts=harvest_prompts, **out)


def read_labels(
    path: str | Path, *, on_error: OnError = "raise"
) -> tuple[dict[str, Label], ReadStats]:
    """Labels by account id. A repeated account id with a different label is an error."""
    p = Path(path)
    if not p.exists():
        raise EventError(str(p), None, None, "file not found")
    opener = gzip.open if p.name.endswith(".gz") else open
    labels: dict[str, Label] = {}
    stats = ReadStats()
    with opener(p, "rb") as fh:  # type: ignore[operator]
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise EventError(str(p), line_no, None, f"not valid JSON ({exc})") from None
                lab = parse_label(rec, str(p), line_no)
                old = labels.get(lab.account_id)
                if old is not None and old.label != lab.label:
                    raise EventError(
                        str(p),
                        line_no,
                        "label",
                        f"conflicts with an earlier line for {lab.account_id!r}",
                    )
            except EventError as exc:
                if on_error == "raise":
                    raise
                stats.skip(exc)
                continue
            labels[lab.account_id] = lab
            stats.n_read += 1
    return labels, stats
