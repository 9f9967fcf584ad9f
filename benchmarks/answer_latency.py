"""Benchmark of the answer path: served latency and throughput against raw embedding + raw SQL.

Loads N entries into one shop among several (plus a shop with 1% of its size), serves learnkb
in its own process, and prints: the raw cost of one embedding and one SQL vector query, served
/v1/answer p50/p95/p99 one at a time and under concurrency, and recall@10 of the served
retrieval against exact search for the large and the small shop.

    .venv/bin/python -m benchmarks.answer_latency --entries 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from benchmarks.bulk_load import copy_shops
from benchmarks.common import (
    benchmark_parser,
    cpu_per_request,
    cpu_snapshot,
    data_dir,
    questions,
    served,
    summary,
    write_report,
)
from evaluation.instance import free_port
from knowledge.access import CLI_ADMIN, Role
from knowledge.answering.retrieval import EXACT_VECTORS_OF_SHOP, cache_of, search
from knowledge.errors import NotFound
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops
from knowledge.store.entries import EntryDraft, add_entries

BATCH = 8

# The plain query a first implementation would send: HNSW order, shop filter.
RAW_VECTOR_QUERY = """
SELECT entry_id FROM knowledge_vectors WHERE shop_id = $1
ORDER BY embedding <=> $2 LIMIT 10
"""


async def load_shop(rt: Runtime, slug: str, count: int, seed: int) -> int:
    shop = await shops.create_shop(rt.pool, slug, slug)
    texts = questions(count, seed)
    for start in range(0, count, 1000):
        batch = texts[start:start + 1000]
        await add_entries(rt, shop.id, [
            EntryDraft(answer=f"Answer {start + i}: {t}", question=t)
            for i, t in enumerate(batch)], CLI_ADMIN)
    return shop.id


async def bulk_load_shops(rt: Runtime, wanted: list[tuple[str, int, int]],
                          folder: Path) -> list[int]:
    """The same shops as load_shop makes, embedded in bulk and written by COPY (minutes
    instead of the better part of an hour at 100,000 entries)."""
    loads = []
    for slug, count, seed in wanted:
        texts = questions(count, seed)
        vectors = np.stack(await rt.embedder.embed_many(texts, chunk=256))
        loads.append(((await shops.create_shop(rt.pool, slug, slug)).id, texts, vectors))
    await copy_shops(rt.database_url, loads, rt.embedder.model_name, folder)
    return [shop_id for shop_id, _, _ in loads]


async def exact_top(rt: Runtime, shop_vectors: dict[int, tuple[list[str], np.ndarray]],
                    shop_id: int, query: np.ndarray, k: int = 10) -> list[str]:
    if shop_id not in shop_vectors:
        rows = await rt.pool.fetch(EXACT_VECTORS_OF_SHOP, shop_id)
        shop_vectors[shop_id] = ([str(r["entry_id"]) for r in rows],
                                 np.stack([r["embedding"] for r in rows]))
    ids, matrix = shop_vectors[shop_id]
    sims = matrix @ query
    best: dict[str, float] = {}
    for index in np.argsort(-sims)[: k * 4]:
        best.setdefault(ids[index], float(sims[index]))
    return sorted(best, key=lambda e: -best[e])[:k]


async def recall_at_10(rt: Runtime, shop_id: int, probes: list[str]) -> tuple[float, str]:
    vectors = await rt.embedder.embed_many(probes)
    cache: dict[int, tuple[list[str], np.ndarray]] = {}
    recalls, path = [], ""
    for vector in vectors:
        result = await search(rt, shop_id, "", vector, limit=10)
        path = result.path
        got = {str(c.entry.entry_id) for c in result.candidates}
        want = await exact_top(rt, cache, shop_id, vector)
        recalls.append(len(got & set(want)) / len(want))
    return statistics.fmean(recalls), path


async def raw_costs(rt: Runtime, shop_id: int, probes: list[str]) -> dict[str, float]:
    embed_ms, sql_ms, batched_ms = [], [], []
    for text in probes:
        started = time.perf_counter()
        vector = rt.embedder.encode_sync([text])[0]
        embed_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await rt.pool.fetch(RAW_VECTOR_QUERY, shop_id, vector)
        sql_ms.append((time.perf_counter() - started) * 1000)
    # What batching can save at most: the model's time per question in a batch of 8.
    for start in range(0, max(len(probes) - BATCH, 0) + 1, BATCH):
        batch = probes[start:start + BATCH]
        started = time.perf_counter()
        rt.embedder.encode_sync(batch)
        batched_ms.append((time.perf_counter() - started) * 1000 / len(batch))
    return {"embedding_ms": statistics.median(embed_ms), "sql_ms": statistics.median(sql_ms),
            "batched_ms": statistics.median(batched_ms)}


async def drive(base: str, key: str, texts: list[str], concurrency: int, server_pid: int
                ) -> tuple[list[float], float, dict[str, float]]:
    """Send every text once over `concurrency` keep-alive connections (aiohttp: a client
    cheap enough not to be what is measured)."""
    queue = list(texts)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            async with session.post(f"{base}/v1/answer", json={"question": text}) as r:
                await r.read()
                r.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

    before = cpu_snapshot(server_pid)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, len(texts) / elapsed, cpu_per_request(before, server_pid, len(texts))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    rt = await open_runtime(settings)
    try:
        started = time.perf_counter()
        try:
            # A data directory from an earlier run with the same --entries is reused as is.
            large = (await shops.get_shop(rt.pool, "bench-large")).id
            small = (await shops.get_shop(rt.pool, "bench-small")).id
        except NotFound:
            wanted = [("bench-large", args.entries, 1),
                      ("bench-small", max(10, args.entries // 100), 2),
                      *[(f"bench-other-{i}", args.entries // 4, 10 + i)
                        for i in range(args.other_shops)]]
            if args.bulk:
                ids = await bulk_load_shops(rt, wanted, data)
            else:
                ids = [await load_shop(rt, slug, count, seed) for slug, count, seed in wanted]
            large, small = ids[0], ids[1]
            await rt.pool.execute("ANALYZE")
        load_s = time.perf_counter() - started
        key = (await keys.create_key(rt.pool, Role.BOT, large, "bench")).secret
        probes = questions(args.queries, seed=99)
        raw = await raw_costs(rt, large, probes[:100])
        recall_large, path_large = await recall_at_10(rt, large, probes[:100])
        cache_of(rt).forget()
        recall_small, path_small = await recall_at_10(rt, small, probes[:100])
        total_rows = await rt.pool.fetchval("SELECT count(*) FROM knowledge_vectors")
        url = rt.database_url
        with served(url, data, free_port()) as (base, pid):
            await drive(base, key, questions(40, seed=7), 1, pid)  # warm-up
            single, single_rps, single_cpu = await drive(
                base, key, questions(args.queries, seed=100), 1, pid)
            many, many_rps, many_cpu = await drive(
                base, key, questions(args.queries * 2, seed=101), args.concurrency, pid)
        raw_total = raw["embedding_ms"] + raw["sql_ms"]
        report = {
            "entries_in_large_shop": args.entries, "vectors_in_table": total_rows,
            "load_seconds": round(load_s, 1),
            "raw_embedding_ms_p50": round(raw["embedding_ms"], 2),
            "raw_sql_vector_query_ms_p50": round(raw["sql_ms"], 2),
            f"raw_embedding_ms_per_question_in_batch_of_{BATCH}": round(raw["batched_ms"], 2),
            # If the model were all the work and every core ran it: the most any server could
            # gain under concurrency over one question at a time on this machine.
            "model_only_throughput_ratio_ceiling": round(
                len(os.sched_getaffinity(0)) * raw["embedding_ms"] / raw["batched_ms"], 2),
            "served_one_at_a_time": {k: round(v, 2) for k, v in summary(single).items()},
            "served_one_at_a_time_rps": round(single_rps, 1),
            "cpu_per_request_one_at_a_time": single_cpu,
            f"served_{args.concurrency}_concurrent": {k: round(v, 2)
                                                      for k, v in summary(many).items()},
            f"served_{args.concurrency}_concurrent_rps": round(many_rps, 1),
            f"cpu_per_request_{args.concurrency}_concurrent": many_cpu,
            "throughput_ratio": round(many_rps / single_rps, 2),
            "served_p50_over_raw": round(statistics.median(single) / raw_total, 2),
            "recall_at_10_large_shop": round(recall_large, 4), "path_large_shop": path_large,
            "recall_at_10_small_shop": round(recall_small, 4), "path_small_shop": path_small,
            "embedder_backend": rt.embedder.backend,
        }
    finally:
        await rt.close()
    return report


if __name__ == "__main__":
    parser = benchmark_parser(__doc__)
    parser.add_argument("--other-shops", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--bulk", action="store_true",
                        help="load the shops by COPY (benchmarks/bulk_load.py) instead of "
                             "through the knowledge API")
    arguments = parser.parse_args()
    write_report(arguments.out, f"answer_latency_{arguments.entries}.json",
                 asyncio.run(main(arguments)))
