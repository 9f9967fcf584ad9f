"""The turn log: answered turns written after the answer, in batches, never lost on the way."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import numpy as np

from knowledge.db import create_pool
from knowledge.runtime import Runtime
from knowledge.turn_log import Turn, TurnLog, turn_log_of
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
        await pool.close()


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
        await pool.close()


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
    await pool.close()
    assert await _written(runtime.pool, turns) == 5


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
        await pool.close()


async def test_feedback_sent_with_the_answer_finds_its_turn(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    """The answer goes out before its turn is written; feedback sent at once still finds it."""
    r = await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "How long does shipping take?", "answer": "Two to three working days."})
    assert r.status_code == 201, r.text
    log = turn_log_of(runtime)
    for _ in range(5):
        answered, rated = await _answer_then_rate(client, shop)
        assert rated.status_code == 201, rated.text
        assert answered["tier"] == "answer"
    assert log.dropped == 0


async def _answer_then_rate(client: httpx.AsyncClient,
                            shop: ShopKeys) -> tuple[dict[str, str], httpx.Response]:
    answered = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how long does shipping take?"})).json()
    rated = await client.post("/v1/feedback", headers=shop.bot, json={
        "turn_id": answered["turn_id"], "type": "thumbs_up"})
    return answered, rated


async def test_readiness_reports_the_turn_log(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    assert checks["database"] == "ok" and checks["turn_log"].startswith("ok (")
