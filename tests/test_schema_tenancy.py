"""Every tenant table is keyed by its shop (migration 0023), read from the catalog: its primary
and unique keys lead with shop_id, shop_id is never NULL, and no foreign key can join two shops'
rows. That is what distributing the tenant tables by shop_id (Citus) needs."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from knowledge.runtime import Runtime
from knowledge.store.db import Queryable, ensure_database, with_database
from knowledge.store.migrate import MIGRATIONS_DIR, migrate

# Small tables read before a shop is known, or belonging to no shop: reference tables under
# Citus. Every other table has a shop_id and is distributed by it.
GLOBAL_TABLES = frozenset({"shops", "api_keys", "web_sessions", "embedding_models", "job_runs",
                           "schema_migrations", "admin_audit_log"})
KEYED_BY_SHOP = "0023"

RELATIONS = """
SELECT c.oid, c.relname, c.relkind::text AS relkind, a.attnum AS shop_attnum,
       a.attnotnull AS shop_not_null
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute AS a
       ON a.attrelid = c.oid AND a.attname = 'shop_id' AND NOT a.attisdropped
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')
"""
UNIQUE_INDEXES = """
SELECT i.indrelid, ic.relname AS name, i.indisprimary AS primary_key, i.indkey[0] AS first,
       pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index AS i JOIN pg_class AS ic ON ic.oid = i.indexrelid
WHERE i.indisunique
"""
FOREIGN_KEYS = """
SELECT conname AS name, conrelid, confrelid, conkey, confkey, confdeltype::text AS on_delete,
       confdelsetcols, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE contype = 'f' AND connamespace = current_schema()::regnamespace
"""


async def violations(conn: Queryable) -> list[str]:
    """What keeps the schema from being distributed by shop_id, one line each."""
    relations = {r["oid"]: r for r in await conn.fetch(RELATIONS)}
    tenant = {oid: r for oid, r in relations.items()
              if r["shop_attnum"] is not None and r["relname"] not in GLOBAL_TABLES}
    found = []
    for r in relations.values():
        if r["relkind"] != "m" and r["shop_attnum"] is None \
                and r["relname"] not in GLOBAL_TABLES:
            found.append(f"{r['relname']}: neither global nor keyed by shop (no shop_id)")
    for r in tenant.values():
        # A materialized view's columns cannot be declared NOT NULL; its rows come from tables
        # whose shop_id is.
        if r["relkind"] != "m" and not r["shop_not_null"]:
            found.append(f"{r['relname']}: shop_id may be NULL")
    has_primary_key = set()
    for index in await conn.fetch(UNIQUE_INDEXES):
        owner = tenant.get(index["indrelid"])
        if owner is None:
            continue
        if index["primary_key"]:
            has_primary_key.add(owner["relname"])
        if index["first"] != owner["shop_attnum"]:
            kind = "primary key" if index["primary_key"] else "unique index"
            found.append(f"{owner['relname']}: {kind} {index['name']} does not lead with "
                         f"shop_id: {index['definition']}")
    for r in tenant.values():
        if r["relkind"] != "m" and r["relname"] not in has_primary_key:
            found.append(f"{r['relname']}: no primary key")
    for fk in await conn.fetch(FOREIGN_KEYS):
        source, target = relations[fk["conrelid"]], relations[fk["confrelid"]]
        if fk["conrelid"] in tenant and fk["confrelid"] in tenant:
            pairs = set(zip(fk["conkey"], fk["confkey"], strict=True))
            if (source["shop_attnum"], target["shop_attnum"]) not in pairs:
                found.append(f"{source['relname']}: foreign key {fk['name']} to "
                             f"{target['relname']} does not include shop_id on both sides: "
                             f"{fk['definition']}")
            # ON DELETE SET NULL (or DEFAULT) names the reference alone: the row keeps its shop.
            elif fk["on_delete"] in {"n", "d"} and source["shop_attnum"] in (
                    fk["confdelsetcols"] or fk["conkey"]):
                found.append(f"{source['relname']}: foreign key {fk['name']} would clear "
                             f"shop_id: {fk['definition']}")
        elif fk["confrelid"] in tenant:
            found.append(f"{source['relname']}: global table with foreign key {fk['name']} "
                         f"into tenant table {target['relname']}")
    return sorted(found)


async def test_every_tenant_key_leads_with_the_shop(runtime: Runtime) -> None:
    assert await violations(runtime.pool) == []


async def _fresh_database(database_url: str) -> str:
    admin = with_database(database_url, "postgres")
    return await ensure_database(admin, f"learnkb_tenancy_{uuid.uuid4().hex[:8]}")


def _migrations_before(version: str, into: Path) -> Path:
    into.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name[:4] < version:
            shutil.copy(path, into / path.name)
    return into


# A populated database of two shops as the code before migration 0023 wrote it: versions of an
# entry, its vectors, a document chunk, a turn with analytics, feedback, a correction and a
# call, queue items (one merged into another, one applied), an out-of-scope example from an
# item, helpfulness counts, and audit rows of a shop and of none (an admin's sign-in).
SEED = """
INSERT INTO shops (slug, name) VALUES ('tenancy-a', 'A'), ('tenancy-b', 'B');
INSERT INTO api_keys (shop_id, role, prefix, key_hash) VALUES (NULL, 'admin', 'lk_x', '\\x01');
INSERT INTO documents (id, shop_id, name, media_type, content_hash, byte_size)
SELECT '00000000-0000-0000-0000-00000000d0c0', id, 'faq.md', 'text/markdown', 'h', 1
FROM shops WHERE slug = 'tenancy-a';
INSERT INTO knowledge_base_rag (id, entry_id, version, shop_id, question, answer, content,
                                valid_to, document_id)
SELECT k.id::uuid, k.entry::uuid, k.version, s.id, 'q', 'a', 'q a',
       CASE WHEN k.version = 1 AND k.entry LIKE '%e1' THEN now() END, k.document::uuid
FROM shops AS s, (VALUES
    ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000e1', 1, NULL),
    ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-0000000000e1', 2, NULL),
    ('00000000-0000-0000-0000-0000000000a3', '00000000-0000-0000-0000-0000000000e2', 1,
     '00000000-0000-0000-0000-00000000d0c0')) AS k(id, entry, version, document)
WHERE s.slug = 'tenancy-a';
UPDATE knowledge_base_rag SET superseded_by = '00000000-0000-0000-0000-0000000000a2'
WHERE id = '00000000-0000-0000-0000-0000000000a1';
UPDATE knowledge_base_rag SET supersedes = '00000000-0000-0000-0000-0000000000a1'
WHERE id = '00000000-0000-0000-0000-0000000000a2';
INSERT INTO knowledge_vectors (shop_id, entry_id, knowledge_id, kind, text, embedding)
SELECT shop_id, entry_id, id, 'question', 'q', array_fill(0.1, ARRAY[384])::vector
FROM knowledge_base_rag WHERE valid_to IS NULL;
INSERT INTO entry_stats (entry_id, shop_id, helpful)
SELECT entry_id, shop_id, 1 FROM knowledge_base_rag WHERE valid_to IS NULL;
INSERT INTO conversation_memory (id, shop_id, conversation_id, question, answer)
SELECT '00000000-0000-0000-0000-0000000000c1', id, 'c1', 'q', 'a'
FROM shops WHERE slug = 'tenancy-a';
INSERT INTO response_analytics (shop_id, conversation_id, response_type)
SELECT shop_id, id, 'answer' FROM conversation_memory;
INSERT INTO conversation_feedback (shop_id, conversation_id, feedback_type)
SELECT shop_id, id, 'thumbs_down' FROM conversation_memory;
INSERT INTO owner_corrections (shop_id, conversation_id, corrected_answer)
SELECT shop_id, id, 'better' FROM conversation_memory;
INSERT INTO voice_transcripts (shop_id, conversation_id, transcript)
SELECT shop_id, id, 'Customer: hi' FROM conversation_memory;
INSERT INTO learning_queue (id, shop_id, status, source_type, question, applied_knowledge_id)
SELECT q.id::uuid, s.id, q.status, 'manual', 'q', q.knowledge::uuid
FROM shops AS s, (VALUES
    ('00000000-0000-0000-0000-0000000000f1', 'pending', NULL),
    ('00000000-0000-0000-0000-0000000000f2', 'applied', '00000000-0000-0000-0000-0000000000a2'),
    ('00000000-0000-0000-0000-0000000000f3', 'rejected', NULL),
    ('00000000-0000-0000-0000-0000000000f4', 'merged', NULL)) AS q(id, status, knowledge)
WHERE s.slug = 'tenancy-a';
UPDATE learning_queue SET merged_into = '00000000-0000-0000-0000-0000000000f1'
WHERE id = '00000000-0000-0000-0000-0000000000f4';
INSERT INTO out_of_scope_examples (shop_id, question, embedding, model, queue_item_id)
SELECT shop_id, 'q', array_fill(0.1, ARRAY[384])::vector, 'm', id
FROM learning_queue WHERE status = 'rejected';
INSERT INTO learning_audit_log (shop_id, actor, action, subject_type)
SELECT id, 'owner', 'knowledge.create', 'knowledge' FROM shops WHERE slug = 'tenancy-a'
UNION ALL SELECT NULL, 'admin:lk_x', 'sign_in', 'session';
"""
# Feedback of shop B on a turn of shop A: nothing writes this; a foreign key by id alone let it.
CROSS_SHOP = """
INSERT INTO conversation_feedback (shop_id, conversation_id, feedback_type)
SELECT s.id, m.id, 'thumbs_up' FROM shops AS s, conversation_memory AS m
WHERE s.slug = 'tenancy-b'
"""
COUNTS = """
SELECT (SELECT count(*) FROM knowledge_base_rag) AS versions,
       (SELECT count(*) FROM knowledge_vectors) AS vectors,
       (SELECT count(*) FROM conversation_feedback) AS feedback,
       (SELECT count(*) FROM learning_queue WHERE merged_into IS NOT NULL) AS merged,
       (SELECT count(*) FROM out_of_scope_examples WHERE queue_item_id IS NOT NULL) AS examples,
       (SELECT count(*) FROM entry_stats) AS stats,
       (SELECT count(*) FROM learning_audit_log) AS audit
"""


async def test_migration_0023_keys_a_populated_database_by_shop(database_url: str,
                                                                tmp_path: Path) -> None:
    url = await _fresh_database(database_url)
    await migrate(url, _migrations_before(KEYED_BY_SHOP, tmp_path / "before"))
    conn = await asyncpg.connect(url)
    try:
        before = await violations(conn)
        # The check finds what the migration changes (it is not true of any schema).
        for expected in ("learning_audit_log: shop_id may be NULL",
                         "knowledge_base_rag: primary key knowledge_base_rag_pkey does not lead",
                         "knowledge_base_rag: unique index idx_kb_live_entry does not lead",
                         "entry_stats: primary key entry_stats_pkey does not lead",
                         "daily_learning_metrics: unique index idx_daily_learning_metrics",
                         "knowledge_vectors: foreign key knowledge_vectors_knowledge_id_fkey",
                         "owner_corrections: foreign key owner_corrections_conversation_id_fkey"):
            assert any(v.startswith(expected) for v in before), (expected, before)
        await conn.execute(SEED)
        await conn.execute(CROSS_SHOP)
        # A reference across shops fails the migration, which changes nothing.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await migrate(conn)
        assert await conn.fetchval("SELECT to_regclass('admin_audit_log')") is None
        assert await conn.fetchval(
            "SELECT count(*) FROM learning_audit_log WHERE shop_id IS NULL") == 1
        await conn.execute("DELETE FROM conversation_feedback WHERE feedback_type = 'thumbs_up'")
        counts = dict(await conn.fetchrow(COUNTS) or {})

        assert KEYED_BY_SHOP in "".join(await migrate(conn))
        assert await violations(conn) == []
        # Every row stays, except the admin's sign-in, which moves to the global trail.
        assert dict(await conn.fetchrow(COUNTS) or {}) == {**counts, "audit": counts["audit"] - 1}
        moved = await conn.fetchrow("SELECT actor, action, subject_type FROM admin_audit_log")
        assert moved is not None
        assert dict(moved) == {"actor": "admin:lk_x", "action": "sign_in",
                               "subject_type": "session"}
        # ON DELETE as before, and a reference set to NULL leaves the row's shop alone.
        await conn.execute("DELETE FROM conversation_memory")
        assert await conn.fetchval("SELECT count(*) FROM conversation_feedback") == 0
        assert await conn.fetchval("SELECT count(*) FROM response_analytics") == 0
        shop_a = await conn.fetchval("SELECT id FROM shops WHERE slug = 'tenancy-a'")
        assert [tuple(r) for r in await conn.fetch(
            "SELECT shop_id, conversation_id FROM owner_corrections "
            "UNION ALL SELECT shop_id, conversation_id FROM voice_transcripts")] == [
            (shop_a, None)] * 2
        await conn.execute("DELETE FROM learning_queue WHERE status = 'rejected'")
        assert await conn.fetchval(
            "SELECT count(*) FROM out_of_scope_examples WHERE queue_item_id IS NULL "
            "AND shop_id IS NOT NULL") == 1
        # ... and a new reference across shops is refused.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO knowledge_vectors (shop_id, entry_id, knowledge_id, kind, text, "
                "embedding) SELECT s.id, k.entry_id, k.id, 'question', 'q', "
                "array_fill(0.1, ARRAY[384])::vector "
                "FROM shops AS s, knowledge_base_rag AS k "
                "WHERE s.slug = 'tenancy-b' AND k.valid_to IS NULL LIMIT 1")
    finally:
        await conn.close()
