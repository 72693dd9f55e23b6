"""The HTTP routes of CONTRACT §4: each a few lines that call :class:`ScoringService`.

Sync routes on purpose: uvicorn runs them in its thread pool, so a request that embeds
prompts or waits for an fsync does not block the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    Security,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from model.events import MAX_ACCOUNT_ID_CHARS
from serve.schemas import (
    AccountScoreOut,
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    FleetsQuery,
    FleetsResponse,
    Health,
    ModelInfo,
    Readiness,
    ScoreRequest,
    ValidationErrorResponse,
)
from serve.service import ScoringService

JSON = "application/json"

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    503: {"model": ErrorResponse, "description": "the model is still loading"},
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    413: {"model": ErrorResponse, "description": "body or event count over the limit"},
    422: {"model": ValidationErrorResponse, "description": "bad input; names the field"},
}


def get_service(request: Request) -> ScoringService:
    service: ScoringService = request.app.state.service
    return service


Service = Annotated[ScoringService, Depends(get_service)]


def build_router(*, auth: bool) -> APIRouter:
    """The ``/v1`` API (documented as needing a bearer key when ``auth``) and the ops routes.

    The key itself is checked by ``ApiKeyMiddleware`` before the body is read; the
    security scheme here only documents it (and lets /docs send it).
    """
    v1_deps = [Security(HTTPBearer(auto_error=False, description="an API key"))] if auth else []
    v1 = APIRouter(prefix="/v1", dependencies=v1_deps)
    ops = APIRouter()

    @v1.post(
        "/events",
        response_model=EventsResponse,
        responses=_BODY_ERRORS,
        tags=["scoring"],
        summary="Ingest events; answer each touched account's updated score",
    )
    def ingest_events(body: EventsRequest, service: Service) -> Response:
        """Events are grouped by account and sorted by time within this request; each
        account's stored state is extended by its new events only. An event older than its
        account's last stored event is still accepted and processed after it (arrival
        order). The answer is sent only after the new states are durably stored."""
        limit = service.settings.max_events_per_request
        if len(body.events) > limit:
            raise HTTPException(
                413,
                f"{len(body.events)} events in one request, the limit is {limit} "
                "(DISTILLWATCH_MAX_EVENTS_PER_REQUEST); split the batch",
            )
        result = service.ingest(body.to_events())
        return Response(result.to_json(), media_type=JSON)

    @v1.post(
        "/score",
        response_model=AccountScoreOut,
        responses=_BODY_ERRORS,
        tags=["scoring"],
        summary="Score one account's stream alone (stateless; nothing is stored)",
    )
    def score_stream(body: ScoreRequest, service: Service) -> JSONResponse:
        limit = service.settings.max_events_per_request
        if len(body.events) > limit:
            raise HTTPException(
                413, f"{len(body.events)} events in one request, the limit is {limit}"
            )
        foreign = body.foreign_event()
        if foreign is not None:
            i, other = foreign
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", "events", i, "account_id"),
                        "msg": f"event of account {other!r} in the stream of {body.account_id!r}",
                    }
                ]
            )
        return JSONResponse(service.score_stream(body.to_events()))

    @v1.get(
        "/accounts/{account_id}",
        response_model=AccountScoreOut,
        responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "unknown account"}},
        tags=["scoring"],
        summary="An account's current score",
    )
    def get_account(
        account_id: Annotated[str, Path(min_length=1, max_length=MAX_ACCOUNT_ID_CHARS)],
        service: Service,
    ) -> Response:
        score = service.account_score_json(account_id)
        if score is None:
            raise HTTPException(404, "unknown account")
        return Response(score, media_type=JSON)

    @v1.get(
        "/fleets",
        response_model=FleetsResponse,
        responses={
            **_ERRORS,
            422: {"model": ValidationErrorResponse, "description": "bad query; names it"},
        },
        tags=["scoring"],
        summary="Current coordinated clusters",
    )
    def get_fleets(query: Annotated[FleetsQuery, Query()], service: Service) -> Response:
        """Accounts linked by shared prompt wrappers and near-duplicate prompts (IP prefix
        and user agent only as support), over each account's recent prompts. Scored by the
        model's fleet judge; a model without one answers unjudged fleets (score = mean own
        score of the members). Cached for DISTILLWATCH_FLEET_CACHE_SECONDS while events
        arrive; fleet ids are per computation."""
        fleets = service.fleets(min_score=query.min_score, limit=query.limit)
        return Response(orjson.dumps({"fleets": fleets}), media_type=JSON)

    @v1.get(
        "/model",
        response_model=ModelInfo,
        responses=_ERRORS,
        tags=["model"],
        summary="Model version, training data summary, threshold, metrics",
    )
    def get_model(service: Service) -> dict[str, Any]:
        return service.model_info()

    @ops.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @ops.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "model loading or failed"}},
        tags=["operations"],
        summary="Readiness: 200 once the model is loaded",
    )
    def readyz(service: Service) -> JSONResponse:
        version = service.detector.meta.get("version") if service.detector is not None else None
        body = {"status": service.status, "model_version": version}
        return JSONResponse(body, status_code=200 if service.status == "ready" else 503)

    @ops.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text format",
            }
        },
        tags=["operations"],
        summary="Prometheus metrics",
    )
    def metrics(request: Request) -> Response:
        m = request.app.state.metrics
        return Response(m.render(), media_type=m.content_type)

    router = APIRouter()
    router.include_router(v1)
    router.include_router(ops)
    return router
