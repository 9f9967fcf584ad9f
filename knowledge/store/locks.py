"""PostgreSQL advisory locks, so a batch job runs in one replica at a time."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from knowledge.store.db import Conn

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a job name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@asynccontextmanager
async def try_advisory_lock(pool: asyncpg.Pool, name: str) -> AsyncIterator[
        Conn | None]:
    """Yield a connection holding the lock, or None when another process holds it."""
    key = lock_key(name)
    async with pool.acquire() as conn:
        if not await conn.fetchval(TRY_LOCK, key):
            yield None
            return
        try:
            yield conn
        finally:
            await conn.fetchval(UNLOCK, key)
