"""Deduplication's search of a large queue (HNSW with iterative scans) finds what an exact
scan finds, and a repeat still merges on that path."""

from __future__ import annotations

import asyncio

from knowledge.access import CLI_ADMIN
from knowledge.answering.retrieval import cache_of
from knowledge.learning.queue import (
    DEDUP_SETTINGS,
    KEPT_SIGNALS,
    NEAREST_ITEMS,
    NEAREST_ITEMS_HNSW,
    NEIGHBOURS,
    QUEUE_EXACT_MAX_ITEMS,
    ItemDraft,
    _nearest_items_query,
    submit,
)
from knowledge.runtime import Runtime
from knowledge.store import shops
from tests.conftest import make_shop
from tests.test_retrieval_exact import _questions


async def test_a_large_queue_is_searched_through_the_index_as_well_as_exactly(
        runtime: Runtime) -> None:
    keys = await make_shop(runtime, "bigqueue")
    shop = await shops.get_shop(runtime.pool, keys.shop_id)
    count = QUEUE_EXACT_MAX_ITEMS + 200
    texts = list(dict.fromkeys(_questions(count + 400, seed=11)))[:count]
    vectors = await runtime.embedder.embed_many(texts)
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> str:
        async with gate:
            queued = await submit(runtime, shop, ItemDraft(
                kind="answer", source_type="manual", question=texts[i],
                answer=f"Answer number {i}.", confidence=60), CLI_ADMIN, vector=vectors[i])
            return queued.outcome

    outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    assert outcomes.count("new") >= count * 0.95
    cache_of(runtime).forget(shop.id)
    async with runtime.pool.acquire() as conn, conn.transaction():
        assert await _nearest_items_query(runtime, conn, shop.id, "answer") == NEAREST_ITEMS_HNSW
        await conn.execute(DEDUP_SETTINGS)  # as deduplication searches
        probes = await runtime.embedder.embed_many(_questions(30, seed=12))
        recalls = []
        for probe in probes:
            exact = [r["id"] for r in await conn.fetch(NEAREST_ITEMS, shop.id, probe, "answer",
                                                       NEIGHBOURS)]
            indexed = [r["id"] for r in await conn.fetch(NEAREST_ITEMS_HNSW, shop.id, probe,
                                                         "answer", NEIGHBOURS)]
            recalls.append(len(set(exact) & set(indexed)) / len(exact))
    assert sum(recalls) / len(recalls) >= 0.95, recalls

    # The same question with the same answer, on the index path: merged, not a new item.
    again = await submit(runtime, shop, ItemDraft(
        kind="answer", source_type="manual", question=texts[7], answer="Answer number 7.",
        confidence=60), CLI_ADMIN)
    assert again.outcome == "merged" and again.item is not None
    assert again.item.observations == 2


async def test_an_item_counts_every_repeat_but_keeps_a_bounded_list_of_signals(
        runtime: Runtime) -> None:
    keys = await make_shop(runtime, "popular")
    shop = await shops.get_shop(runtime.pool, keys.shop_id)
    draft = ItemDraft(kind="gap", source_type="gap", question="Do you deliver on Sundays?")
    for _ in range(KEPT_SIGNALS + 5):
        last = await submit(runtime, shop, draft, CLI_ADMIN)
    assert last.item is not None
    assert last.item.observations == KEPT_SIGNALS + 5
    assert len(last.item.signals) == KEPT_SIGNALS


async def test_a_merge_rewrites_no_index_entry(runtime: Runtime) -> None:
    """Merging a repeat into its item is a HOT update: no new entry in the table's indexes,
    the open-items HNSW graph included (an insertion there, and a dead copy of the vector
    for later searches to pass over)."""
    keys = await make_shop(runtime, "hot")
    shop = await shops.get_shop(runtime.pool, keys.shop_id)
    draft = ItemDraft(kind="gap", source_type="gap", question="Can I pay with a gift card?",
                      confidence=50)
    await submit(runtime, shop, draft, CLI_ADMIN)
    changes = []
    stats = ("SELECT pg_stat_get_xact_tuples_updated('learning_queue'::regclass), "
             "pg_stat_get_xact_tuples_hot_updated('learning_queue'::regclass)")
    async with runtime.pool.acquire() as conn:
        for _ in range(5):  # each in a transaction of its own, as signals arrive
            async with conn.transaction():
                before = await conn.fetchrow(stats)
                merged = await submit(runtime, shop, draft, CLI_ADMIN, conn=conn)
                assert merged.outcome == "merged"
                after = await conn.fetchrow(stats)
                changes.append((after[0] - before[0], after[1] - before[1]))
    assert changes == [(1, 1)] * 5, changes  # (updates, of which HOT)
