"""Benchmark at a million entries: 1,000 shops of very different sizes, bulk-loaded with COPY.

Builds the knowledge of `--shops` shops holding `--entries` entries between them: one shop
holds 30% of the rows, one 1%, and the rest share what is left by a Zipf-like law (from tens of
thousands of entries down to a few dozen). Questions come from the benchmarks' generator. Shops
sell much the same things and ask much the same questions, so entries are drawn from a pool of
`--distinct` texts (distinct within every shop; the 30% shop takes the first 300,000): a bulk
import embeds each text once, as the embedder's cache does.

Phases, each timed: embed the pool (kept in the data directory as .npy, so a rerun skips it),
create the shops, COPY the entries and their vectors with the search indexes dropped, build
the indexes again (HNSW graph and full text) and ANALYZE. Then it reports table and index sizes
and the memory PostgreSQL holds, recall@10 of the served retrieval against exact search and
served /v1/answer latency for the 30% shop, the 1% shop, the largest of the rest and a
median one, and throughput under concurrency over all of them.

    .venv/bin/python -m benchmarks.million --data-dir /tmp/million
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.answer_latency import drive, recall_at_10
from benchmarks.bulk_load import ShopLoad, copy_shops, missing_indexes
from benchmarks.common import (
    benchmark_parser,
    data_dir,
    publish,
    questions,
    served,
    summary,
)
from evaluation.instance import free_port
from knowledge.access import Role
from knowledge.answering.retrieval import cache_of
from knowledge.errors import NotFound
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops

SLUG = "m{:04d}"
LARGE_SHARE, ONE_PERCENT = 0.30, 0.01
JITTER = 0.0005   # per dimension, on unit vectors of 384 dimensions
SIZES = """
SELECT c.relname AS name, c.relkind AS kind, pg_relation_size(c.oid) AS bytes
FROM pg_class AS c
WHERE c.relname = ANY($1::text[])
   OR c.oid IN (SELECT indexrelid FROM pg_index
                WHERE indrelid = ANY(ARRAY['knowledge_base_rag'::regclass,
                                           'knowledge_vectors'::regclass]))
ORDER BY bytes DESC
"""
SETTINGS_SHOWN = ("shared_buffers", "work_mem", "effective_cache_size")


def shop_sizes(entries: int, count: int) -> list[int]:
    """Entries per shop: 30%, 1%, then a Zipf-like share of the rest, largest first."""
    large, one = round(entries * LARGE_SHARE), round(entries * ONE_PERCENT)
    rest = entries - large - one
    weights = [1 / (rank ** 0.9) for rank in range(1, count - 1)]
    scale = rest / sum(weights)
    sizes = [max(20, int(w * scale)) for w in weights]
    sizes[0] += rest - sum(sizes)   # what rounding left goes to the largest of the rest
    return [large, one, *sizes]


def text_pool(count: int, seed: int) -> list[str]:
    """`count` distinct generated questions."""
    pool: dict[str, None] = {}
    batch = 0
    while len(pool) < count:
        pool.update(dict.fromkeys(questions(count, seed + batch)))
        batch += 1
    return list(pool)[:count]


async def pool_vectors(rt: Runtime, texts: list[str], folder: Path) -> tuple[np.ndarray, float]:
    """The pool's vectors, from the data directory when an earlier run made them."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = folder / f"million-vectors-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path), 0.0
    started = time.perf_counter()
    vectors = np.stack(await rt.embedder.embed_many(texts, chunk=256))
    seconds = time.perf_counter() - started
    np.save(path, vectors)
    return vectors, seconds


def shop_loads(shop_ids: list[int], sizes: list[int], texts: list[str],
               vectors: np.ndarray) -> Iterator[ShopLoad]:
    """Each shop's questions: the 30% shop holds the pool's first texts, every other shop
    draws its own (the same draw on every run, so a stopped load resumes the same data).

    pgvector keeps identical vectors as one point of its graph, so a text asked in several
    shops would make the graph smaller than a million distinct questions would. Each shop
    after the first moves its vectors by a jitter of JITTER (cosine to the model's vector
    above 0.9999): every entry is a point of its own, and what it is near is unchanged."""
    rng = random.Random(7)
    noise = np.random.default_rng(7)
    for rank, (shop_id, size) in enumerate(zip(shop_ids, sizes, strict=True)):
        picks = list(range(size)) if rank == 0 else rng.sample(range(len(texts)), size)
        chosen = vectors[picks]
        if rank:
            chosen = chosen + noise.normal(0, JITTER, chosen.shape).astype(np.float32)
            chosen /= np.linalg.norm(chosen, axis=1, keepdims=True)
        yield shop_id, [texts[p] for p in picks], chosen


def postgres_memory() -> dict[str, float]:
    """What PostgreSQL's processes hold (proportional set size, shared pages split among the
    processes that map them) and the machine's page cache, in MiB."""
    pss = 0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "postgres":
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                pss += process.memory_full_info().pss
    cached = getattr(psutil.virtual_memory(), "cached", 0)
    return {"postgres_pss_mib": round(pss / 2**20), "page_cache_mib": round(cached / 2**20)}


async def storage(rt: Runtime) -> dict[str, Any]:
    rows = await rt.pool.fetch(SIZES, ["knowledge_base_rag", "knowledge_vectors"])
    shown = {name: await rt.pool.fetchval(f"SHOW {name}") for name in SETTINGS_SHOWN}
    return {"relations_mib": {r["name"]: round(r["bytes"] / 2**20, 1) for r in rows},
            "settings": shown}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    rt = await open_runtime(settings)
    report: dict[str, Any] = {"entries": args.entries, "shops": args.shops,
                              "distinct_texts": args.distinct, "cpus": psutil.cpu_count(),
                              "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    try:
        sizes = shop_sizes(args.entries, args.shops)
        report["shop_sizes"] = {"largest": sizes[0], "one_percent": sizes[1],
                                "largest_of_rest": sizes[2],
                                "median": int(statistics.median(sizes)), "smallest": min(sizes)}
        build_started = time.perf_counter()
        texts = text_pool(args.distinct, seed=1000)
        vectors, embed_s = await pool_vectors(rt, texts, data)
        report["embed_seconds"] = (round(embed_s, 1) if embed_s
                                   else "reused (vectors kept in the data directory)")
        report["embed_texts_per_second"] = round(len(texts) / embed_s, 1) if embed_s else None
        started = time.perf_counter()
        shop_ids = []
        for rank in range(args.shops):
            slug = SLUG.format(rank)
            try:
                shop_ids.append((await shops.get_shop(rt.pool, slug)).id)
            except NotFound:   # not created by an earlier run
                shop_ids.append((await shops.create_shop(rt.pool, slug, slug)).id)
        report["create_shops_seconds"] = round(time.perf_counter() - started, 1)
        loaded = await rt.pool.fetchval("SELECT count(*) FROM knowledge_vectors")
        if loaded < args.entries or await missing_indexes(rt.pool):
            report.update(await copy_shops(rt.database_url,
                                           shop_loads(shop_ids, sizes, texts, vectors),
                                           rt.embedder.model_name, data))
            report["build_seconds"] = round(time.perf_counter() - build_started, 1)
        else:
            report["build_seconds"] = "reused (built by an earlier run)"
        report["vectors_in_table"] = await rt.pool.fetchval(
            "SELECT count(*) FROM knowledge_vectors")
        report["storage"] = await storage(rt)
        cache_of(rt).forget()

        probes = questions(args.queries, seed=99)
        measured = {"shop_30_percent": 0, "shop_1_percent": 1, "largest_of_rest": 2,
                    "median_shop": len(sizes) // 2}
        recall: dict[str, Any] = {}
        for name, rank in measured.items():
            value, path = await recall_at_10(rt, shop_ids[rank], probes[:100])
            recall[name] = {"entries": sizes[rank], "recall_at_10": round(value, 4),
                            "path": path}
        report["recall"] = recall
        bot_keys = {name: (await keys.create_key(rt.pool, Role.BOT, shop_ids[rank],
                                                 "million")).secret
                    for name, rank in measured.items()}
        served_report: dict[str, Any] = {}
        with served(rt.database_url, data, free_port()) as (base, pid):
            # Each shop is asked its own questions: the server's embedding cache would
            # answer a repeated one without the model.
            for seed, (name, key) in enumerate(bot_keys.items(), start=100):
                await drive(base, key, questions(30, seed=seed + 50), 1, pid)   # warm-up
                single, rps, cpu = await drive(base, key, questions(args.queries, seed=seed),
                                               1, pid)
                served_report[name] = {**{k: round(v, 2) for k, v in summary(single).items()},
                                       "rps": round(rps, 1), **cpu}
            many, many_rps, _ = await drive(
                base, bot_keys["shop_30_percent"], questions(args.queries * 2, seed=200),
                args.concurrency, pid)
            served_report[f"shop_30_percent_{args.concurrency}_concurrent"] = {
                **{k: round(v, 2) for k, v in summary(many).items()}, "rps": round(many_rps, 1)}
        report["served_answer_ms"] = served_report
        report["memory_after_queries"] = postgres_memory()
    finally:
        await rt.close()
    return report


def summarize(report: dict[str, Any]) -> str:
    served_ms = report["served_answer_ms"]
    lines = [f"{report['entries']:,} entries in {report['shops']:,} shops "
             f"({report['cpus']} cores, {report['memory_gib']} GiB)"]
    if "copy_seconds" in report:
        indexes = {k.removeprefix("build_").removesuffix("_seconds"): v
                   for k, v in report.items() if k.startswith("build_idx")}
        lines.append(f"build {report['build_seconds']} s (target < 1800 s with the embedding): "
                     f"embed {report['embed_seconds']} s, copy {report['copy_seconds']} s, "
                     f"indexes {indexes}")
    else:
        lines.append("build: reused (built by an earlier run)")
    for name, figures in report["recall"].items():
        answer = served_ms[name]
        ok_recall = figures["recall_at_10"] >= 0.98
        ok_p50 = answer["p50"] <= 20
        lines.append(f"{name:18} {figures['entries']:>8,} entries, {figures['path']:5}: "
                     f"recall@10 {figures['recall_at_10']:.3f} "
                     f"[{'OK' if ok_recall else 'MISS'}], answer p50 {answer['p50']:.1f} ms "
                     f"p95 {answer['p95']:.1f} ms [{'OK' if ok_p50 else 'MISS'}]")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = benchmark_parser(__doc__, entries=1_000_000)
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=400_000)
    parser.add_argument("--queries", type=int, default=200)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    publish(arguments.out, "million", result, summarize(result))
