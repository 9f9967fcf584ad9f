"""A change of embedding model is caught at start-up and resolved by the reembed job."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from knowledge.access import CLI_ADMIN
from knowledge.answering.retrieval import search
from knowledge.errors import Unavailable
from knowledge.model.embedding import PROBE_TEXT
from knowledge.model.reembed import reembed
from knowledge.runtime import open_runtime
from knowledge.settings import Settings
from knowledge.store.db import ensure_database, with_database
from knowledge.store.entries import EntryDraft, add_entries
from knowledge.store.shops import create_shop


async def test_other_models_vectors_are_refused_until_reembedded(database_url: str,
                                                                 settings: Settings) -> None:
    url = await ensure_database(with_database(database_url, "postgres"),
                                f"learnkb_model_{uuid.uuid4().hex[:8]}")
    own = settings.with_overrides(database_url=url)
    rt = await open_runtime(own)
    try:
        shop = await create_shop(rt.pool, "models", "Models")
        await add_entries(rt, shop.id, [
            EntryDraft(question="Do you ship to Norway?", answer="Yes, in 5 days.",
                       variants=["delivery to Norway"]),
            EntryDraft(question="Can I pay with Klarna?", answer="Yes, over 150.")], CLI_ADMIN)
        # Pretend the stored vectors came from another model.
        other = np.random.default_rng(1).normal(size=384).astype(np.float32)
        await rt.pool.execute("UPDATE embedding_models SET probe_vector = $1",
                              other / np.linalg.norm(other))
        await rt.pool.execute("UPDATE knowledge_base_rag SET embedding_model = 'old/model'")
        await rt.pool.execute("DELETE FROM knowledge_vectors")
    finally:
        await rt.close()
    with pytest.raises(Unavailable, match="reembed"):
        await open_runtime(own)
    rt = await open_runtime(own, check_vectors=False)
    try:
        assert await reembed(rt) == 2
        assert await reembed(rt) == 0  # nothing left: idempotent
        vectors = await rt.pool.fetchval("SELECT count(*) FROM knowledge_vectors")
        assert vectors == 3
    finally:
        await rt.close()
    rt = await open_runtime(own)  # the check passes again
    try:
        query = await rt.embedder.embed("deliveries to Norway?")
        result = await search(rt, shop.id, "deliveries to Norway?", query)
        assert result.candidates[0].entry.question == "Do you ship to Norway?"
        probe = await rt.pool.fetchval("SELECT probe_text FROM embedding_models")
        assert probe == PROBE_TEXT
    finally:
        await rt.close()
