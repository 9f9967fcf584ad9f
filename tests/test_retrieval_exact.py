"""Vector retrieval returns what an exact search would, for a small shop and for a large one."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from knowledge.access import CLI_ADMIN
from knowledge.answering.retrieval import EXACT_VECTORS_OF_SHOP, cache_of, search
from knowledge.runtime import Runtime
from knowledge.store.entries import EntryDraft, add_entries
from tests.conftest import make_shop

PRODUCTS = ["grinder", "kettle", "espresso machine", "milk frother", "scale", "tamper",
            "dripper", "coffee beans", "filter papers", "thermometer", "cup", "carafe"]
TOPICS = ["warranty", "delivery time", "return policy", "price", "cleaning", "spare parts",
          "colour options", "power usage", "noise level", "size", "discount", "availability",
          "instructions", "compatibility", "gift wrapping", "reviews"]
FORMS = ["What is the {t} of the {p} {n}?", "Tell me about {t} for model {n} {p}",
         "{p} {n}: how does {t} work?", "Question on {t} regarding the {p} series {n}"]


def _questions(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(FORMS).format(t=rng.choice(TOPICS), p=rng.choice(PRODUCTS),
                                     n=rng.randint(100, 999)) for _ in range(count)]


async def _exact_top(rt: Runtime, shop_id: int, query: np.ndarray, k: int) -> list[str]:
    rows = await rt.pool.fetch(EXACT_VECTORS_OF_SHOP, shop_id)
    best: dict[str, float] = {}
    for row in rows:
        sim = float(np.dot(row["embedding"], query))
        key = str(row["entry_id"])
        best[key] = max(best.get(key, -2.0), sim)
    return [e for e, _ in sorted(best.items(), key=lambda x: -x[1])[:k]]


@pytest.mark.parametrize("mode", ["exact", "hnsw", "default", "wide"])
async def test_small_and_large_shops_match_exact_search(runtime: Runtime, mode: str) -> None:
    large = await make_shop(runtime, "large")
    small = await make_shop(runtime, "small")
    # The small shop holds 1% of the rows.
    await add_entries(runtime, large.shop_id, [
        EntryDraft(answer=f"answer {i}", question=q)
        for i, q in enumerate(_questions(2_970, seed=1))], CLI_ADMIN)
    await add_entries(runtime, small.shop_id, [
        EntryDraft(answer=f"answer {i}", question=q)
        for i, q in enumerate(_questions(30, seed=2))], CLI_ADMIN)
    # Force the index path for both shops, or the exact path, or let the shop sizes decide.
    overrides = {"exact": {"exact_search_max_vectors": 1_000_000},
                 "hnsw": {"exact_search_max_vectors": 10, "hnsw_min_shop_fraction": 0.0},
                 "default": {"exact_search_max_vectors": 1_000},
                 # The index path with the wider search of a large table.
                 "wide": {"exact_search_max_vectors": 10, "hnsw_min_shop_fraction": 0.0,
                          "hnsw_large_table_vectors": 0, "hnsw_ef_search_large": 400}}[mode]
    rt = dataclasses.replace(runtime, settings=runtime.settings.with_overrides(**overrides))
    cache_of(rt).forget()
    queries = _questions(25, seed=3)
    vectors = await rt.embedder.embed_many(queries)
    for shop_id, name in ((small.shop_id, "small"), (large.shop_id, "large")):
        recalls = []
        for text, vector in zip(queries, vectors, strict=True):
            # Full-text hits are left out by asking with no words, so only vectors rank.
            result = await search(rt, shop_id, "", vector, limit=10)
            expected = {"default": "hnsw" if name == "large" else "exact",
                        "wide": "hnsw"}.get(mode, mode)
            assert result.path == expected
            got = [str(c.entry.entry_id) for c in result.candidates]
            want = await _exact_top(rt, shop_id, vector, 10)
            recalls.append(len(set(got) & set(want)) / len(want))
            assert text
        recall = sum(recalls) / len(recalls)
        floor = 0.98 if result.path == "hnsw" else 1.0
        assert recall >= floor, (name, mode, recall)
    # The wider search was for its own transaction: pooled connections keep the usual breadth.
    for _ in range(runtime.settings.pool_max_size):
        assert await rt.pool.fetchval("SHOW hnsw.ef_search") == str(rt.settings.hnsw_ef_search)
