"""The migration runner: in order, once each, safe twice and with two processes at once."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from knowledge.errors import Conflict
from knowledge.store.db import ensure_database, with_database
from knowledge.store.migrate import MIGRATIONS_DIR, load_migrations, migrate

EXPECTED_TABLES = {
    "shops", "api_keys", "documents", "knowledge_base_rag", "knowledge_vectors",
    "conversation_memory", "response_analytics", "conversation_feedback", "owner_corrections",
    "learning_queue", "voice_transcripts", "learning_audit_log", "schema_migrations",
    "embedding_models",
}


async def _fresh_database(database_url: str) -> str:
    admin = with_database(database_url, "postgres")
    return await ensure_database(admin, f"learnkb_migrate_{uuid.uuid4().hex[:8]}")


async def test_two_processes_migrating_at_once_apply_each_file_once(database_url: str) -> None:
    url = await _fresh_database(database_url)
    first, second = await asyncio.gather(migrate(url), migrate(url))
    names = [m.name for m in load_migrations()]
    assert sorted(first + second) == names  # every file applied exactly once between them
    assert await migrate(url) == []  # and a third run has nothing to do
    conn = await asyncpg.connect(url)
    try:
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        views = {r["matviewname"] for r in await conn.fetch(
            "SELECT matviewname FROM pg_matviews")}
        indexes = {r["indexname"]: r["indexdef"] for r in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")}
    finally:
        await conn.close()
    assert tables >= EXPECTED_TABLES
    assert {"daily_learning_metrics", "response_performance_metrics"} <= views
    assert "hnsw" in indexes["idx_kv_embedding_hnsw"]
    # Built for near-copy questions (migration 0012).
    assert "ef_construction='128'" in indexes["idx_kv_embedding_hnsw"]
    # The queue's HNSW index holds open items only (migration 0010).
    assert "hnsw" in indexes["idx_learning_open_hnsw"]
    assert "WHERE" in indexes["idx_learning_open_hnsw"]
    assert "hnsw" in indexes["idx_transcripts_embedding_hnsw"]
    assert "gin" in indexes["idx_kb_search_tsv"]
    assert "WHERE" in indexes["idx_learning_pending"]
    # Indexes no query used, which every signal paid for, are gone (migration 0026).
    assert not {"idx_learning_status", "idx_learning_shop", "idx_corrections_pending",
                "idx_feedback_type"} & set(indexes)
    assert "WHERE" in indexes["idx_learning_merged_into"]
    assert "WHERE" in indexes["idx_transcripts_negative"]


async def test_an_applied_migration_that_changed_is_refused(database_url: str,
                                                            tmp_path: Path) -> None:
    url = await _fresh_database(database_url)
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    await migrate(url, copy)
    first = sorted(copy.glob("*.sql"))[1]
    first.write_text(first.read_text() + "\n-- edited afterwards\n")
    with pytest.raises(Conflict, match="forward-only"):
        await migrate(url, copy)
    (copy / "9999_more.sql").write_text("CREATE TABLE later_addition (id integer);")
    first.write_text(first.read_text().replace("\n-- edited afterwards\n", ""))
    assert await migrate(url, copy) == ["9999_more.sql"]
