"""Bulk loading for the benchmarks: shops' entries and their question vectors by COPY, with
the search indexes dropped for the load and built again after it, as an import of a large
knowledge base would be done."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import numpy as np

from knowledge.access import CLI_ADMIN
from knowledge.store.db import _init_connection
from knowledge.store.entries import EntryDraft, content_of

# A shop to load: its id, its questions and their vectors (one row each, in order).
ShopLoad = tuple[int, list[str], np.ndarray]

# The search indexes rebuilt after the load: maintained row by row during a COPY they would
# cost many times their bulk build.
REBUILT = ("idx_kv_embedding_hnsw", "idx_kb_search_tsv")
INDEX_DEFINITIONS = """
SELECT indexname, indexdef FROM pg_indexes
WHERE schemaname = current_schema() AND indexname = ANY($1::text[])
"""
ENTRY_COLUMNS = ("id", "entry_id", "shop_id", "question", "answer", "content", "embedding",
                 "embedding_model", "source", "created_by")
VECTOR_COLUMNS = ("shop_id", "entry_id", "knowledge_id", "kind", "text", "embedding")
LOADED_SHOPS = "SELECT DISTINCT shop_id FROM knowledge_vectors"


def shop_rows(shop_id: int, texts: list[str], vectors: np.ndarray, model: str
              ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows add_entries would write for these questions (one version, one vector each)."""
    entries, vector_rows = [], []
    for n, (question, vector) in enumerate(zip(texts, vectors, strict=True)):
        draft = EntryDraft(answer=f"Answer {n} of shop {shop_id}: {question}",
                           question=question, source="import")
        knowledge_id, entry_id = uuid4(), uuid4()
        entries.append((knowledge_id, entry_id, shop_id, question, draft.answer,
                        content_of(draft), vector, model, "import", CLI_ADMIN.actor))
        vector_rows.append((shop_id, entry_id, knowledge_id, "question", question, vector))
    return entries, vector_rows


async def missing_indexes(conn: asyncpg.Pool | asyncpg.Connection) -> bool:
    """Whether a load stopped part way left the search indexes dropped."""
    return len(await conn.fetch(INDEX_DEFINITIONS, list(REBUILT))) < len(REBUILT)


async def copy_shops(url: str, shops: Iterable[ShopLoad], model: str,
                     folder: Path) -> dict[str, float]:
    """COPY every shop not loaded yet, then build the search indexes and ANALYZE. Shops are
    taken from `shops` one at a time, so a million rows are never all in memory."""
    conn = await asyncpg.connect(url)
    await _init_connection(conn)
    # Kept beside the data: a run stopped after dropping the indexes rebuilds them next time.
    saved = folder / "bulk-load-indexes.json"
    try:
        definitions = json.loads(saved.read_text()) if saved.exists() else {}
        definitions.update({r["indexname"]: r["indexdef"]
                            for r in await conn.fetch(INDEX_DEFINITIONS, list(REBUILT))})
        saved.write_text(json.dumps(definitions))
        for name in definitions:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")
        loaded = {r["shop_id"] for r in await conn.fetch(LOADED_SHOPS)}
        rows = 0
        started = time.perf_counter()
        for shop_id, texts, vectors in shops:
            if shop_id in loaded:
                continue   # loaded by an earlier run that stopped part way
            entries, vector_rows = shop_rows(shop_id, texts, vectors, model)
            async with conn.transaction():
                await conn.copy_records_to_table("knowledge_base_rag", records=entries,
                                                 columns=ENTRY_COLUMNS, timeout=None)
                await conn.copy_records_to_table("knowledge_vectors", records=vector_rows,
                                                 columns=VECTOR_COLUMNS, timeout=None)
            rows += len(entries)
        copy_s = time.perf_counter() - started
        # Both cores for the graph, and room for all of it: a graph that outgrows
        # maintenance_work_mem is built an order of magnitude slower.
        await conn.execute("SET maintenance_work_mem = '6GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        built: dict[str, float] = {}
        for name, definition in definitions.items():
            started = time.perf_counter()
            await conn.execute(definition, timeout=None)
            built[name] = time.perf_counter() - started
        started = time.perf_counter()
        # As after any bulk import: statistics for the planner, and the visibility map set so
        # autovacuum does not scan a million new rows while the benchmark measures.
        await conn.execute("VACUUM (ANALYZE) knowledge_base_rag", timeout=None)
        await conn.execute("VACUUM (ANALYZE) knowledge_vectors", timeout=None)
        analyze_s = time.perf_counter() - started
    finally:
        await conn.close()
    return {"copied_entries": rows, "copy_seconds": round(copy_s, 1),
            "copy_entries_per_second": round(rows / copy_s) if copy_s else 0,
            **{f"build_{name}_seconds": round(s, 1) for name, s in built.items()},
            "vacuum_analyze_seconds": round(analyze_s, 1)}
