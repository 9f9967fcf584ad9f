"""The one exception hierarchy of learnkb; app/ maps it to RFC 9457 problem details."""

from __future__ import annotations

from typing import Any


class LearnkbError(Exception):
    """Base of every error learnkb raises on purpose."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Invalid(LearnkbError):
    """The caller sent something malformed or out of range."""

    status = 422
    title = "Invalid input"


class TooLarge(LearnkbError):
    """The caller sent more than a stated limit allows."""

    status = 413
    title = "Content too large"


class Unsupported(LearnkbError):
    """A media type or format learnkb cannot read."""

    status = 415
    title = "Unsupported media type"


class Unauthorized(LearnkbError):
    """No credential, or one that is unknown or revoked."""

    status = 401
    title = "Unauthorized"


class Forbidden(LearnkbError):
    """A valid credential whose role may not do this."""

    status = 403
    title = "Forbidden"


class NotFound(LearnkbError):
    """Nothing of that id, or nothing the caller's shop may see."""

    status = 404
    title = "Not found"


class Conflict(LearnkbError):
    """The change contradicts the current state (a duplicate slug, a stale version...)."""

    status = 409
    title = "Conflict"


class TooManyRequests(LearnkbError):
    """A key sent more requests than its shop's rate limit allows; `retry_after` says when."""

    status = 429
    title = "Too many requests"


class Overloaded(LearnkbError):
    """More work is waiting than learnkb takes on at once: shed now rather than queue without
    bound; `retry_after` says when to try again."""

    status = 503
    title = "Overloaded"


class Unavailable(LearnkbError):
    """A dependency (database, model) is not ready."""

    status = 503
    title = "Service unavailable"
