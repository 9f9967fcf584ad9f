"""Re-embedding the knowledge base after a change of model, in batches, resumable."""

from __future__ import annotations

import logging

import numpy as np

from knowledge.model.embedding import PROBE_TEXT
from knowledge.runtime import Runtime
from knowledge.store.db import ArrayItem
from knowledge.store.entries import COLUMNS as ENTRY_COLUMNS
from knowledge.store.entries import EntryDraft, embed_drafts, entry_from_row, insert_vectors
from knowledge.store.locks import try_advisory_lock

log = logging.getLogger(__name__)

BATCH = 256

CLAIM_STALE = f"""
SELECT {ENTRY_COLUMNS} FROM knowledge_base_rag
WHERE valid_to IS NULL AND embedding_model IS DISTINCT FROM $1
ORDER BY shop_id, id LIMIT $2
FOR UPDATE SKIP LOCKED
"""
# A batch may span shops: versions and their vectors are named by (shop, version).
DROP_VECTORS = """
DELETE FROM knowledge_vectors AS kv
USING unnest($1::integer[], $2::uuid[]) AS t(shop_id, knowledge_id)
WHERE kv.shop_id = t.shop_id AND kv.knowledge_id = t.knowledge_id
"""
MARK_EMBEDDED = """
UPDATE knowledge_base_rag AS kb SET embedding = t.embedding, embedding_model = $1
FROM unnest($2::integer[], $3::uuid[], $4::vector[]) AS t(shop_id, id, embedding)
WHERE kb.shop_id = t.shop_id AND kb.id = t.id
"""
RESET_MODELS = "DELETE FROM embedding_models WHERE name <> $1 OR probe_text <> $2"
UPSERT_MODEL = """
INSERT INTO embedding_models (name, dimensions, backend, probe_text, probe_vector)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET backend = EXCLUDED.backend, probe_vector = EXCLUDED.probe_vector,
                                 checked_at = now()
"""


async def reembed(rt: Runtime) -> int:
    """Re-embed every live entry not embedded by the loaded model; returns how many were."""
    async with try_advisory_lock(rt.pool, "job:reembed") as locked:
        if locked is None:
            return 0
        done = 0
        model = rt.embedder.model_name
        while True:
            async with rt.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(CLAIM_STALE, model, BATCH)
                if not rows:
                    break
                entries = [entry_from_row(r) for r in rows]
                embedded = await embed_drafts(rt, [EntryDraft(
                    answer=e.answer, question=e.question, variants=e.variants)
                    for e in entries])
                await conn.execute(DROP_VECTORS, [e.shop_id for e in entries],
                                   [e.id for e in entries])
                await insert_vectors(conn, entries, embedded)
                await conn.execute(MARK_EMBEDDED, model, [e.shop_id for e in entries],
                                   [e.id for e in entries],
                                   [ArrayItem(vectors[0][2]) for vectors in embedded])
                done += len(entries)
        probe = (await rt.embedder.embed(PROBE_TEXT)).astype(np.float32)
        async with rt.pool.acquire() as conn, conn.transaction():
            await conn.execute(RESET_MODELS, model, PROBE_TEXT)
            await conn.execute(UPSERT_MODEL, model, rt.embedder.dimensions, rt.embedder.backend,
                               PROBE_TEXT, probe)
        log.info("re-embedded %d entries with %s", done, model)
        return done
