"""Every error as RFC 9457 problem details, mapped once from knowledge's exception hierarchy."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from knowledge.errors import LearnkbError
from knowledge.store.db import TRANSIENT_ERRORS, UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# What a 503 asks a client to wait before sending again.
RETRY_AFTER_SECONDS = 2
_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
          405: "method-not-allowed", 409: "conflict", 413: "content-too-large",
          415: "unsupported-media-type", 422: "invalid-input", 429: "too-many-requests",
          500: "internal-error", 503: "unavailable"}


class Problem(msgspec.Struct):
    """RFC 9457 problem details, as every error response of the API carries them."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    # The limit that was exceeded, and the input field at fault, where there is one.
    limit: int | None = None
    field: str | None = None
    # A validation failure's individual errors.
    errors: list[dict[str, Any]] | None = None


def problem(request: Request[Any, Any, Any], status: int, title: str, detail: str,
            **extra: Any) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"https://learnkb.dev/problems/{_SLUGS.get(status, str(status))}",
        "title": title, "status": status, "detail": detail, "instance": request.url.path,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": 'Bearer realm="learnkb"'} if status == 401 else None
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_RESERVED = frozenset({"type", "title", "status", "detail", "instance", "request"})


def learnkb_error(request: Request[Any, Any, Any], exc: LearnkbError) -> Response[Any]:
    if exc.status >= 500:
        log.error("%s: %s", type(exc).__name__, exc.detail)
    # An extra member named like a problem's own (an item's "status") must not replace it.
    extra = {f"subject_{k}" if k in _RESERVED else k: v for k, v in exc.extra.items()}
    response = problem(request, exc.status, exc.title, exc.detail, **extra)
    if exc.status in {429, 503}:
        response.headers["Retry-After"] = str(exc.extra.get("retry_after") or RETRY_AFTER_SECONDS)
    return response


def validation_error(request: Request[Any, Any, Any],
                     exc: ValidationException) -> Response[Any]:
    errors = exc.extra if isinstance(exc.extra, list) else None
    detail = exc.detail or "the request is not valid"
    if errors:
        detail = "; ".join(f"{e.get('key') or 'body'}: {e.get('message')}"
                           for e in errors if isinstance(e, dict)) or detail
    return problem(request, 422, "Invalid input", detail, errors=errors)


def unstorable_text(request: Request[Any, Any, Any],
                    exc: asyncpg.exceptions.DataError) -> Response[Any]:
    """PostgreSQL refuses some values (a NUL character in text or JSON, a number out of
    range): that is the caller's input, so a 422 that says so, not a 500."""
    return problem(request, 422, "Invalid input",
                   f"a value cannot be stored: {exc.__class__.__name__}: {exc}")


def contention(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Writers kept colliding even after retries: the colliding write was rolled back."""
    log.warning("gave up after repeated deadlocks on %s %s: %s", request.method,
                request.url.path, exc)
    response = problem(request, 503, "Busy", "concurrent requests collided and this one was "
                       "not completed (what it had not done was not stored); send it again")
    response.headers["Retry-After"] = "1"
    return response


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = exc.detail or "error"
    extra: dict[str, Any] = {}
    if status == 413:
        settings = request.app.state.settings
        limit = (settings.max_document_bytes if request.url.path.startswith("/v1/documents")
                 else settings.max_request_bytes)
        detail = f"the request body is larger than the limit of {limit} bytes"
        extra["limit"] = limit
    return problem(request, status, _SLUGS.get(status, "error").replace("-", " ").capitalize(),
                   detail, **extra)


def database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database is away or overloaded: nothing of this request was stored; say when to
    try again instead of failing as if it were a fault."""
    log.warning("database unavailable on %s %s: %s: %s", request.method, request.url.path,
                type(exc).__name__, exc)
    response = problem(request, 503, "Service unavailable",
                       "the database is not reachable right now; nothing of this request was "
                       "stored: send it again shortly")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "Internal error",
                   "an unexpected error happened on our side and was logged")


def as_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The problem response the API gives for `exc`: the handler of its closest class, as
    Litestar picks it (the review pages show the same verdict as a page)."""
    for kind in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(kind)
        if handler is not None:
            response: Response[Any] = handler(request, exc)
            return response
    return unexpected_error(request, exc)


_DESCRIPTIONS = {
    400: "The request is malformed (a body that is not JSON, a broken multipart form)",
    401: "No API key, or one that is unknown or revoked",
    403: "The key's role may not do this",
    404: "Nothing of that id, or nothing the key's shop may see",
    409: "The change contradicts the current state",
    413: "The body is larger than the limit named in the problem",
    415: "A media type or format learnkb cannot read",
    422: "The input is invalid or out of range; the problem names the field and the limit",
    503: "Busy or not ready: send the request again",
}
# Every API operation may fail with these; those that change something, also with these.
_ANY_OPERATION: tuple[int, ...] = (400, 401, 403, 404, 422, 503)
_WITH_BODY = (409, 413, 415)


def document_problems(app: Litestar) -> None:
    """Declare the problem responses of every API operation in the OpenAPI document (built
    lazily, on its first request), instead of Litestar's default 400 of another shape."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not route.path.startswith("/v1/"):
                continue
            statuses = _ANY_OPERATION
            if handler.http_methods & {"POST", "PUT", "PATCH", "DELETE"}:
                statuses += _WITH_BODY
            handler.responses = {
                **{status: ResponseSpec(Problem, description=_DESCRIPTIONS[status],
                                        media_type=PROBLEM_JSON, generate_examples=False)
                   for status in sorted(statuses)},
                **(handler.responses or {})}


EXCEPTION_HANDLERS: dict[Any, Any] = {
    LearnkbError: learnkb_error,
    ValidationException: validation_error,
    asyncpg.exceptions.DataError: unstorable_text,
    **dict.fromkeys(TRANSIENT_ERRORS, contention),
    **dict.fromkeys(UNAVAILABLE_ERRORS, database_unavailable),
    HTTPException: http_error,
    Exception: unexpected_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "MediaType", "Problem", "document_problems",
           "problem"]
