"""The turn log: answered turns written after the answer, in batches, never lost on the way."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import numpy as np
import pytest

from knowledge.answering.turn_log import Turn, TurnLog, turn_log_of
from knowledge.errors import Unavailable
from knowledge.runtime import Runtime
from knowledge.store.db import create_pool
from tests.conftest import ShopKeys


def _turn(shop_id: int, conversation: str = "c") -> Turn:
    vector = np.random.default_rng().normal(size=384).astype(np.float32)
    return Turn(id=uuid.uuid4(), shop_id=shop_id, conversation_id=conversation, user_id=None,
                channel="chat", question="how long does shipping take", answer="Two days.",
                tier="answer", confidence=0.9, sources=[], vector=vector / np.linalg.norm(vector),
                metadata={}, latency_ms=12, ab_variant="A", metrics={"confidence": 0.9})


async def _written(pool: asyncpg.Pool, turns: list[Turn]) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM conversation_memory AS m JOIN response_analytics AS a "
        "ON a.conversation_id = m.id WHERE m.id = ANY($1::uuid[])", [t.id for t in turns]))


async def _small_pool(runtime: Runtime) -> asyncpg.Pool:
    return await create_pool(runtime.database_url, runtime.settings.with_overrides(
        pool_min_size=1, pool_max_size=1))


async def test_turns_queued_together_are_written_together(runtime: Runtime,
                                                          shop: ShopKeys) -> None:
    pool = await _small_pool(runtime)
    log = TurnLog(pool)
    try:
        # The writer needs the pool's only connection: while it is held, turns gather.
        held = await pool.acquire()
        turns = [_turn(shop.shop_id) for _ in range(40)]
        for turn in turns:
            await log.add(turn)
        await asyncio.sleep(0.05)
        assert log.pending == 40 and await _written(runtime.pool, turns) == 0
        await pool.release(held)
        await log.flush()
        assert await _written(runtime.pool, turns) == 40
        assert log.written == 40 and log.batches == 1
    finally:
        await log.aclose()
        pool.terminate()


async def test_reading_a_turn_waits_until_it_is_written(runtime: Runtime,
                                                        shop: ShopKeys) -> None:
    pool = await _small_pool(runtime)
    log = TurnLog(pool)
    try:
        held = await pool.acquire()
        first, second, elsewhere = (_turn(shop.shop_id, "talk"), _turn(shop.shop_id, "talk"),
                                    _turn(shop.shop_id, "other"))
        for turn in (first, second, elsewhere):
            await log.add(turn)
        by_turn = asyncio.create_task(log.settled(first.id))
        by_conversation = asyncio.create_task(log.settled(conversation=(shop.shop_id, "talk")))
        await asyncio.sleep(0.05)
        assert not by_turn.done() and not by_conversation.done()
        # Nothing queued: no wait.
        await asyncio.wait_for(log.settled(uuid.uuid4(), (shop.shop_id, "quiet")), 1)
        await pool.release(held)
        await asyncio.wait_for(asyncio.gather(by_turn, by_conversation), 10)
        assert await _written(runtime.pool, [first, second]) == 2
    finally:
        await log.aclose()
        pool.terminate()


async def test_a_refused_turn_does_not_hold_back_the_others(runtime: Runtime,
                                                            shop: ShopKeys) -> None:
    log = TurnLog(runtime.pool)
    good = [_turn(shop.shop_id) for _ in range(3)]
    orphan = _turn(2_000_000_000)  # no such shop
    for turn in (good[0], orphan, *good[1:]):
        await log.add(turn)
    await asyncio.wait_for(log.flush(), 10)
    assert await _written(runtime.pool, good) == 3
    assert log.dropped == 1 and log.written == 3
    await log.aclose()


async def test_closing_writes_what_is_queued(runtime: Runtime, shop: ShopKeys) -> None:
    pool = await _small_pool(runtime)
    log = TurnLog(pool)
    held = await pool.acquire()
    turns = [_turn(shop.shop_id) for _ in range(5)]
    for turn in turns:
        await log.add(turn)
    closing = asyncio.create_task(log.aclose())
    await asyncio.sleep(0.05)
    await pool.release(held)
    await asyncio.wait_for(closing, 10)
    pool.terminate()
    assert await _written(runtime.pool, turns) == 5
    with pytest.raises(Unavailable):  # a 503, not a turn queued for nobody
        await log.add(_turn(shop.shop_id))


async def test_a_full_log_makes_answering_wait(runtime: Runtime, shop: ShopKeys) -> None:
    pool = await _small_pool(runtime)
    log = TurnLog(pool, pending_max=3)
    try:
        held = await pool.acquire()
        for _ in range(3):
            await log.add(_turn(shop.shop_id))
        fourth = asyncio.create_task(log.add(_turn(shop.shop_id)))
        await asyncio.sleep(0.05)
        assert not fourth.done()
        await pool.release(held)
        await asyncio.wait_for(fourth, 10)
        await log.flush()
        assert log.written == 4
    finally:
        await log.aclose()
        pool.terminate()


async def test_signals_and_repeats_wait_for_a_turn_still_on_its_way(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    """The answer goes out before its turn is written: feedback on it, and the next question
    of its conversation, wait for the turn instead of missing it."""
    r = await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "How long does shipping take?", "answer": "Two to three working days."})
    assert r.status_code == 201, r.text
    pool = await _small_pool(runtime)
    usual = runtime.extras["turn_log"] = turn_log_of(runtime)
    stalled = runtime.extras["turn_log"] = TurnLog(pool)
    held = await pool.acquire()  # the log cannot write until it is released
    try:
        asked = {"question": "how long does shipping take?", "conversation_id": "slow-log"}
        first = (await client.post("/v1/answer", headers=shop.bot, json=asked)).json()
        assert first["tier"] == "answer" and stalled.pending == 1
        rated = asyncio.create_task(client.post("/v1/feedback", headers=shop.bot, json={
            "turn_id": first["turn_id"], "type": "thumbs_down"}))
        again = asyncio.create_task(client.post("/v1/answer", headers=shop.bot, json=asked))
        await asyncio.sleep(0.3)
        assert not rated.done() and not again.done()
        await pool.release(held)
        assert (await rated).status_code == 201
        # It counted the first turn: a question asked again is acknowledged and clarified.
        assert (await again).json()["tier"] == "clarify"
    finally:
        runtime.extras["turn_log"] = usual
        await stalled.aclose()
        pool.terminate()  # the held connection too, if the test failed before releasing it


async def test_readiness_reports_the_turn_log(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    assert checks["database"] == "ok" and checks["turn_log"].startswith("ok (")


async def test_readiness_says_when_the_log_is_behind(client: httpx.AsyncClient,
                                                     runtime: Runtime, shop: ShopKeys) -> None:
    pool = await _small_pool(runtime)
    usual = runtime.extras["turn_log"] = turn_log_of(runtime)
    stalled = runtime.extras["turn_log"] = TurnLog(pool, pending_max=2)
    held = await pool.acquire()
    try:
        for _ in range(2):
            await stalled.add(_turn(shop.shop_id))
        r = await client.get("/ready")
        assert r.status_code == 503 and r.json()["checks"]["turn_log"].startswith("behind")
    finally:
        runtime.extras["turn_log"] = usual
        await pool.release(held)
        await stalled.aclose()
        pool.terminate()


async def test_a_turn_is_stored_with_the_time_it_was_answered(runtime: Runtime,
                                                              shop: ShopKeys) -> None:
    log = TurnLog(runtime.pool)
    turn = _turn(shop.shop_id)
    await asyncio.sleep(0.2)
    await log.add(turn)
    await log.aclose()
    stored = await runtime.pool.fetchval(
        "SELECT created_at FROM conversation_memory WHERE id = $1", turn.id)
    assert stored == turn.answered_at
