"""The FastAPI app of ``distillwatch serve``: factory, lifespan, error answers, ``run``.

What it knows: how the pieces are put together — settings → metrics → scoring service →
routes and middleware — and what every error looks like on the wire: 401 / 413 from the
middleware, 422 naming the offending field, 503 while the model loads, and for anything
unexpected a bare 500 ``{"detail": "internal error"}`` (the exception goes to the log,
never to the client).

The model loads once, in the lifespan: in a background thread by default, so ``/healthz``
answers at once and ``/readyz`` says 503 until the detector is ready.

Example::

    app = create_app(load_settings(model="my_model/", db="state.sqlite3"))
    # or, from the shell: distillwatch serve --model my_model/ --db state.sqlite3
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.metrics import ServiceMetrics
from serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware
from serve.routes import build_router
from serve.service import NotReady, ScoringService
from serve.settings import ServiceSettings, load_settings

log = logging.getLogger("distillwatch.serve")

DESCRIPTION = """\
Scores each API account's prompt stream for distillation (capability-harvesting) attacks.

`POST /v1/events` ingests live traffic and keeps every account's state; `POST /v1/score`
scores one stream without storing anything. Every `/v1/*` call needs
`Authorization: Bearer <key>` when API keys are configured.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distillwatch")
    except PackageNotFoundError:
        return "unknown"


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input: where (``events.3.ts``), what, which kind."""
    out = []
    for err in exc.errors():
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        path = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
        out.append(
            {
                "field": ".".join(str(p) for p in path) or "body",
                "loc": loc,
                "msg": str(err.get("msg", "invalid value")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return out


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _field_errors(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8)
            body = [
                {
                    "field": "body",
                    "loc": ["body"],
                    "msg": "body is not valid UTF-8 JSON",
                    "type": "json_invalid",
                }
            ]
            return JSONResponse({"detail": body}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        failed = str(exc) == "failed"
        detail = (
            "the model failed to load; see the service log" if failed else "the model is loading"
        )
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"method": request.method, "path": request.url.path},
        )
        return JSONResponse({"detail": "internal error"}, status_code=500)


def create_app(
    settings: ServiceSettings | None = None, *, load_in_background: bool = True
) -> FastAPI:
    """A new, independent app (own metrics registry, own store connection).

    ``load_in_background=False`` loads the model inside the lifespan startup instead, so
    the app is ready as soon as it starts (handy in tests and notebooks).
    """
    settings = settings if settings is not None else load_settings()
    metrics = ServiceMetrics()
    service = ScoringService(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(service.open)
        if load_in_background:
            threading.Thread(
                target=service.load_model, name="distillwatch-load-model", daemon=True
            ).start()
        else:
            await anyio.to_thread.run_sync(partial(service.load_model, raise_errors=True))
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="distillwatch",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "scoring", "description": "live ingest, stateless scoring, account scores"},
            {"name": "model", "description": "the loaded detector"},
            {"name": "operations", "description": "health, readiness, metrics"},
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = service
    app.include_router(build_router(auth=settings.auth_required))
    _install_error_handlers(app)
    # Added innermost first: a request meets metrics, then the key check, then the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, key_hashes=settings.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def check_startup(settings: ServiceSettings) -> None:
    """Fail fast, with one line, on what the lifespan would refuse: bad model dir or store."""
    service = ScoringService(settings, ServiceMetrics())
    try:
        service.open()
    finally:
        service.close()


def run(
    model: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    db: Path | None = None,
    workers: int | None = None,
) -> None:
    """Serve until interrupted (``distillwatch serve``); flags win over ``DISTILLWATCH_*``."""
    import torch
    import uvicorn

    from serve.logs import configure_logging

    settings = load_settings(model=model, host=host, port=port, db=db, workers=workers)
    configure_logging(settings.log_level)
    torch.set_num_threads(settings.torch_threads)  # process-wide: only here, never in create_app
    check_startup(settings)
    app = create_app(settings)
    log.info(
        "starting",
        extra={
            "host": settings.host,
            "port": settings.port,
            "db": str(settings.db),
            "auth": settings.auth_required,
            "workers": settings.workers,
        },
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
