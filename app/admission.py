"""Admission control: a bounded number of requests in flight; the rest are refused at once.

Past capacity, queueing only makes every request slow (each waits for the model and for one of
the pool's connections behind all the others). Refusing what exceeds the bound, before any
work and without touching the database, keeps the accepted requests fast and tells the
others when to come back."""

from __future__ import annotations

import json

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)
from prometheus_client import Counter

SHED = Counter("learnkb_requests_shed", "Requests refused at once because too many were in "
               "flight", ["path"])
# Probes and static files cost nothing and must answer under load.
EXEMPT = ("/health", "/ready", "/metrics", "/admin/static/")
RETRY_AFTER_SECONDS = 1


class InFlight:
    """The count shared by every route of one app (Litestar wraps each route on its own)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0


def admission(limit: int) -> type[Admission]:
    shared = InFlight(limit)

    class Bounded(Admission):
        in_flight = shared

    return Bounded


class Admission:
    in_flight = InFlight(64)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == ScopeType.HTTP else ""
        if not path or path.startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        counter = self.in_flight
        if counter.count >= counter.limit:
            SHED.labels(path="/v1" if path.startswith("/v1") else "other").inc()
            await self._refuse(path, send, counter.limit)
            return
        counter.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            counter.count -= 1

    async def _refuse(self, path: str, send: Send, limit: int) -> None:
        body = json.dumps({
            "type": "https://learnkb.dev/problems/unavailable", "title": "Overloaded",
            "status": 503, "instance": path, "limit": limit,
            "detail": f"{limit} requests are already in progress, the most "
                      "learnkb takes on at once; nothing of this one was done: send it again "
                      "shortly"}).encode()
        start: HTTPResponseStartEvent = {
            "type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"content-length", str(len(body)).encode())]}
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                      "more_body": False}
        await send(start)
        await send(end)
