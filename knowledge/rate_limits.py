"""Per-key rate limits: a token bucket per API key, refilled at its shop's rate."""

from __future__ import annotations

import time
from uuid import UUID

from knowledge.errors import TooManyRequests

# A key may send this many seconds' worth of requests at once after a quiet spell.
BURST_SECONDS = 2.0
# Buckets kept before the idle ones are dropped (a full bucket needs no memory to be full).
MAX_BUCKETS = 100_000


class RateLimiter:
    """In one process: with several processes a key gets the limit in each."""

    def __init__(self) -> None:
        self._buckets: dict[UUID, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: UUID, per_second: float) -> None:
        """Spend one token of `key`'s bucket, or refuse with when the next one will be there."""
        now = time.monotonic()
        capacity = max(1.0, per_second * BURST_SECONDS)
        tokens, at = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * per_second)
        if tokens < 1.0:
            wait = (1.0 - tokens) / per_second
            self._buckets[key] = (tokens, now)
            raise TooManyRequests(
                f"this key may send {per_second:g} requests per second (bursts of "
                f"{capacity:g}); try again in {wait:.2f} s", limit=per_second,
                retry_after=max(1, round(wait + 0.5)))
        if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (tokens - 1.0, now)

    def _prune(self, now: float) -> None:
        # Buckets untouched for a minute are full again at any rate of at least 1/30 s.
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
