"""The start-up check that stored vectors and the loaded model live in the same space."""

from __future__ import annotations

import logging

import asyncpg
import numpy as np

from knowledge.errors import Unavailable
from knowledge.model.embedding import PROBE_TEXT, Embedder

log = logging.getLogger(__name__)

# Vectors of the same model through another backend agree to ~1e-6; a different model does not.
SAME_SPACE_COSINE = 0.999

SELECT_MODELS = "SELECT name, dimensions, backend, probe_vector FROM embedding_models"
INSERT_MODEL = """
INSERT INTO embedding_models (name, dimensions, backend, probe_text, probe_vector)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING
"""
TOUCH_MODEL = "UPDATE embedding_models SET checked_at = now(), backend = $2 WHERE name = $1"
COUNT_OTHER_MODEL_ROWS = """
SELECT count(*) FROM knowledge_base_rag
WHERE valid_to IS NULL AND embedding_model IS DISTINCT FROM $1
"""


async def check_embedding_space(pool: asyncpg.Pool, embedder: Embedder) -> None:
    """Record the model on first start; afterwards refuse vectors from another model."""
    probe = (await embedder.embed(PROBE_TEXT)).astype(np.float32)
    rows = await pool.fetch(SELECT_MODELS)
    known = {r["name"]: r for r in rows}
    if embedder.model_name not in known:
        await pool.execute(INSERT_MODEL, embedder.model_name, embedder.dimensions,
                           embedder.backend, PROBE_TEXT, probe)
    else:
        stored = np.asarray(known[embedder.model_name]["probe_vector"], dtype=np.float32)
        cosine = float(np.dot(stored, probe))
        if cosine < SAME_SPACE_COSINE:
            raise Unavailable(
                f"the loaded model ({embedder.model_name}, {embedder.backend}) gives vectors "
                f"unlike the stored ones (probe cosine {cosine:.4f}); re-embed the knowledge "
                "base with `learnkb jobs run reembed`"
            )
        await pool.execute(TOUCH_MODEL, embedder.model_name, embedder.backend)
    stale = await pool.fetchval(COUNT_OTHER_MODEL_ROWS, embedder.model_name)
    if stale:
        log.warning("%d live knowledge entries were embedded by another model; run "
                    "`learnkb jobs run reembed`", stale)
