"""ASGI middleware: request metrics and access log, API-key check, body size limit.

What it knows: what must happen to every request before any route or body parser sees
it. Order, outermost first: metrics (times everything, 401 and 413 included) → API key
(401 before the body is read, so a rejected request touches nothing) → body limit (413 on
``Content-Length`` and on the streamed bytes of a chunked body, before parsing).

What it does not know: routes, the model, the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.routing import Match

from serve.metrics import ServiceMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("distillwatch.access")


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class MetricsMiddleware:
    """Latency histogram per route template (never per raw path) and one access-log line."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            route = self._template(scope)
            self.metrics.observe_request(scope["method"], route, status, seconds)
            access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                },
            )

    @staticmethod
    def _template(scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing (401, 413): find the route it was for
            for candidate in getattr(scope.get("app"), "routes", ()):
                match, _ = candidate.matches(scope)
                if match == Match.FULL:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else "<unmatched>"


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every ``/v1/*`` call when keys are configured.

    Keys are known only by their SHA-256 digests; the presented key is hashed and compared
    with every digest in constant time (``hmac.compare_digest``).
    """

    def __init__(self, app: ASGIApp, key_hashes: tuple[str, ...], prefix: str = "/v1"):
        self.app = app
        self.digests = [bytes.fromhex(h) for h in key_hashes]
        self.prefix = prefix

    def _protected(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def _valid(self, header: bytes | None) -> bool:
        if header is None:
            return False
        scheme, _, token = header.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        digest = hashlib.sha256(token).digest()
        ok = False
        for known in self.digests:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(digest, known)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.digests
            and self._protected(scope["path"])
            and scope["method"] != "OPTIONS"
            and not self._valid(_header(scope, b"authorization"))
        ):
            await send_json(
                send,
                401,
                {"detail": "missing or invalid API key"},
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: by its ``Content-Length`` up front, or while reading.

    The body is read here, up to the limit, and handed on whole, so no parser ever sees
    more than ``max_bytes`` whatever the transfer encoding.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send: Send) -> None:
        await send_json(
            send,
            413,
            {
                "detail": f"request body over the limit of {self.max_bytes} bytes "
                "(DISTILLWATCH_MAX_BODY_BYTES)"
            },
            [(b"connection", b"close")],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_json(send, 400, {"detail": "invalid Content-Length header"})
                return
            if size > self.max_bytes:
                await self._too_large(send)
                return
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone; there is nobody to answer
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
