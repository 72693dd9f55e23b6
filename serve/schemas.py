"""Every request and response body of the HTTP API, with its limits (CONTRACT §1, §3, §4).

What it knows: the contract's event fields as pydantic models, so that a bad event is
answered 422 naming the exact field (``events.3.ts``); the score, fleet and model shapes
the service answers, with examples for the OpenAPI docs.

What it does not know: scoring, storage, settings-dependent limits (body size and events
per request are enforced by the middleware and the routes).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from model.events import MAX_ACCOUNT_ID_CHARS, Event, parse_ts

#: Epoch seconds the event reader accepts (years 1677-2262; see ``model.events.parse_ts``).
#: RFC 3339 strings of years 1678-2261 (what the reader takes, whatever the offset).
TS_YEARS_PATTERN = r"^\s*(167[89]|16[89]\d|1[7-9]\d\d|2[01]\d\d|22[0-5]\d|226[01])-"
MIN_EPOCH_S = -9_223_372_036.0
MAX_EPOCH_S = 9_223_372_036.0
#: Largest ``max_tokens``: the largest integer every JSON client holds exactly (2**53 - 1).
MAX_TOKENS = 2**53 - 1
#: Most fleets one ``GET /v1/fleets`` answers (``limit``), and its default.
MAX_FLEETS_LIMIT = 10_000
DEFAULT_FLEETS_LIMIT = 1_000

AccountId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ACCOUNT_ID_CHARS,
        description="the API account that sent the request",
        examples=["a-17"],
    ),
]

EVENT_EXAMPLE: JsonDict = {
    "account_id": "a-17",
    "ts": "2026-04-03T12:00:00Z",
    "prompt": "Solve step by step and show all your reasoning: what is 17 * 24?",
    "conversation_id": "c-1",
    "model": "frontier-large",
    "max_tokens": 2048,
    "user_agent": "python-sdk/1.42.0",
}
SCORE_EXAMPLE: JsonDict = {
    "account_id": "a-17",
    "score": 0.97,
    "flagged": True,
    "n_events": 212,
    "first_flag_event": 31,
    "fleet_id": None,
    "reasons": ["chain-of-thought elicitation in 78% of prompts (organic p95: 9%)"],
}


class EventIn(BaseModel):
    """One API request of one account (CONTRACT §1); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [EVENT_EXAMPLE]})

    account_id: AccountId
    ts: str | float = Field(
        description=(
            "arrival time: RFC 3339 with an offset (`2026-04-03T12:00:00Z`) or Unix epoch "
            "seconds; years 1677-2262"
        ),
        examples=["2026-04-03T12:00:00Z", 1775217600.0],
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date-time", "pattern": TS_YEARS_PATTERN},
                {"type": "number", "minimum": MIN_EPOCH_S, "maximum": MAX_EPOCH_S},
            ]
        },
    )
    prompt: str = Field(description="the user turn sent to the model (may be very long)")
    conversation_id: str | None = Field(None, description="groups turns of one conversation")
    model: str | None = Field(None, description="target model name")
    max_tokens: int | None = Field(
        None, ge=0, le=MAX_TOKENS, description="output length the client asked for"
    )
    ip: str | None = Field(None, description="client address, or a stable hash / prefix of it")
    user_agent: str | None = Field(None, description="client library / user agent")
    system: str | None = Field(None, description="system prompt, if any")

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> float:
        return parse_ts(value)  # its ValueError names what was expected

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        return value

    def to_event(self, account_id: str | None = None) -> Event:
        return Event(
            account_id=account_id or self.account_id or "",
            ts=float(self.ts),
            prompt=self.prompt,
            conversation_id=self.conversation_id,
            model=self.model,
            max_tokens=self.max_tokens,
            ip=self.ip,
            user_agent=self.user_agent,
            system=self.system,
        )


class StreamEventIn(EventIn):
    """An event of ``POST /v1/score``: ``account_id`` may be left out (it is the request's)."""

    account_id: AccountId | None = None  # type: ignore[assignment]  # optional here


class EventsRequest(BaseModel):
    """``POST /v1/events``: events of any accounts, in any order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [EVENT_EXAMPLE]}]})

    events: list[EventIn] = Field(
        description="events to ingest; the per-request limit is DISTILLWATCH_MAX_EVENTS_PER_REQUEST"
    )

    def to_events(self) -> list[Event]:
        return [e.to_event() for e in self.events]


class ScoreRequest(BaseModel):
    """``POST /v1/score``: one account's whole stream, scored alone and not stored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account_id": "a-17",
                    "events": [{k: v for k, v in EVENT_EXAMPLE.items() if k != "account_id"}],
                }
            ]
        }
    )

    account_id: AccountId
    events: list[StreamEventIn] = Field(min_length=1, description="the account's events")

    def foreign_event(self) -> tuple[int, str] | None:
        """(index, account_id) of the first event that names another account, if any."""
        for i, e in enumerate(self.events):
            if e.account_id is not None and e.account_id != self.account_id:
                return i, e.account_id
        return None

    def to_events(self) -> list[Event]:
        return [e.to_event(self.account_id) for e in self.events]


class AccountScoreOut(BaseModel):
    """An account's score (CONTRACT §3 score output)."""

    model_config = ConfigDict(json_schema_extra={"examples": [SCORE_EXAMPLE]})

    account_id: str
    score: float = Field(ge=0.0, le=1.0, description="probability-like; higher = harvesting")
    flagged: bool = Field(description="score >= the model's operating threshold")
    n_events: int = Field(ge=0, description="events of the account seen so far")
    first_flag_event: int | None = Field(
        None, ge=1, description="1-based event after which an online scorer first flagged it"
    )
    fleet_id: str | None = Field(None, description="coordinated cluster, if any")
    reasons: list[str] = Field(description="short evidence, most important first")


class EventsResponse(BaseModel):
    """What ``POST /v1/events`` answers: the updated score of every account it touched."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"n_events": 1, "scores": [SCORE_EXAMPLE]}]}
    )

    n_events: int = Field(ge=0, description="events accepted (and stored) by this request")
    scores: list[AccountScoreOut] = Field(description="one per account, in first-seen order")


FLEET_EXAMPLE: JsonDict = {
    "fleet_id": "f-1",
    "accounts": ["a-17", "a-90", "a-91"],
    "score": 0.99,
    "reasons": ["3 accounts share 1 prompt wrapper across 60 prompts"],
}


class FleetOut(BaseModel):
    """A coordinated cluster (CONTRACT §3 fleet output)."""

    model_config = ConfigDict(json_schema_extra={"examples": [FLEET_EXAMPLE]})

    fleet_id: str = Field(description="f-1, f-2, ... by score; ids are per computation")
    accounts: list[str] = Field(min_length=2, description="member accounts, sorted")
    score: float = Field(
        ge=0.0,
        le=1.0,
        description=(
            "the model's fleet judge: P(the fleet harvests); for a model without a fleet "
            "judge, unjudged: the mean own score of the members"
        ),
    )
    reasons: list[str] = Field(description="checkable evidence, strongest first")


class FleetsResponse(BaseModel):
    """``GET /v1/fleets``: the current coordinated clusters, highest score first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"fleets": [FLEET_EXAMPLE]}]})

    fleets: list[FleetOut]


class FleetsQuery(BaseModel):
    """Query parameters of ``GET /v1/fleets``; an unknown one is refused (422 naming it)."""

    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(0.0, ge=0.0, le=1.0, description="only fleets scored at least this")
    limit: int = Field(
        DEFAULT_FLEETS_LIMIT,
        ge=1,
        le=MAX_FLEETS_LIMIT,
        description="at most this many fleets (the highest scored)",
    )


class ModelInfo(BaseModel):
    """``GET /v1/model``: what the loaded detector is (``Detector.describe()``)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "version": "20260403-120000",
                    "threshold": 0.62,
                    "target_fpr": 0.01,
                    "embedder": "all-MiniLM-L6-v2",
                    "training": {"n_accounts": 4000},
                    "metrics": {"auroc": 0.99},
                    "created": "2026-04-03T12:00:00+00:00",
                }
            ]
        },
    )

    version: str | None
    threshold: float
    target_fpr: float | None = None
    embedder: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: str | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready", "loading", "failed"])
    model_version: str | None = None


class ErrorResponse(BaseModel):
    """Every error answer: a human-readable ``detail``, nothing internal."""

    detail: str = Field(examples=["missing or invalid API key"])


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending field", examples=["events.3.ts"])
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: list[FieldError]
