"""Revocations are pushed: a process trusts the keys it verified without a query per request
while it listens, drops a key revoked anywhere as soon as it is told, and asks the database per
request whenever it cannot be sure it was told."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from knowledge.access import Role
from knowledge.errors import Unauthorized
from knowledge.runtime import Runtime
from knowledge.store import keys
from knowledge.store.key_revocations import Revocations
from tests.conftest import ShopKeys


class CountingConn:
    """The pool, counting what is asked of the database."""

    def __init__(self, runtime: Runtime) -> None:
        self.pool, self.queries = runtime.pool, 0

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.queries += 1
        return await self.pool.fetchval(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.queries += 1
        return await self.pool.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self.queries += 1
        return await self.pool.execute(sql, *args)


async def _until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def revocations(runtime: Runtime) -> Any:
    # Back 3 s after a lost connection: time for the test to act while it is down.
    listener = Revocations(runtime.database_url, retry_seconds=3.0)
    listener.start()
    await _until(lambda: listener.listening_since is not None)
    yield listener
    await listener.aclose()


async def test_a_listening_process_trusts_its_cached_keys_and_drops_a_revoked_one_when_told(
        runtime: Runtime, shop: ShopKeys, revocations: Revocations) -> None:
    made = await keys.create_key(runtime.pool, Role.BOT, shop.shop_id, "pushed")
    cache, conn = keys.KeyCache(300, revocations), CountingConn(runtime)
    await cache.authenticate(conn, made.secret)
    asked = conn.queries
    for _ in range(20):
        await cache.authenticate(conn, made.secret)
    assert conn.queries == asked, "a cached key was asked about while the listener was up"

    # Revoked by another process (plain SQL here): no request of this one has to ask.
    await runtime.pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1",
                               made.key.id)
    await _until(lambda: made.key.id in revocations.revoked)
    with pytest.raises(Unauthorized):
        await cache.authenticate(conn, made.secret)
    assert conn.queries == asked


async def test_a_deleted_key_is_announced_too(runtime: Runtime, shop: ShopKeys,
                                              revocations: Revocations) -> None:
    made = await keys.create_key(runtime.pool, Role.BOT, shop.shop_id, "deleted")
    await runtime.pool.execute("DELETE FROM api_keys WHERE id = $1", made.key.id)
    await _until(lambda: made.key.id in revocations.revoked)


async def test_while_the_listener_is_down_every_request_asks_and_it_comes_back(
        runtime: Runtime, shop: ShopKeys, revocations: Revocations) -> None:
    made = await keys.create_key(runtime.pool, Role.BOT, shop.shop_id, "unsure")
    cache, conn = keys.KeyCache(300, revocations), CountingConn(runtime)
    await cache.authenticate(conn, made.secret)
    await runtime.pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'learnkb-listener'")
    await _until(lambda: revocations.listening_since is None, 2.0)
    # A revocation it cannot have heard of while down is found by asking.
    await runtime.pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1",
                               made.key.id)
    asked = conn.queries
    with pytest.raises(Unauthorized):
        await cache.authenticate(conn, made.secret)
    assert conn.queries == asked + 1

    # Back up: a key found valid after the listener returned is trusted again, and one found
    # valid before it returned is asked about once more first.
    other = await keys.create_key(runtime.pool, Role.BOT, shop.shop_id, "after")
    assert revocations.listening_since is None
    await cache.authenticate(conn, other.secret)
    await _until(lambda: revocations.listening_since is not None, 10.0)
    asked = conn.queries
    await cache.authenticate(conn, other.secret)
    await cache.authenticate(conn, other.secret)
    assert conn.queries == asked + 1
