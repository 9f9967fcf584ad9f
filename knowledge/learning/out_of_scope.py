"""Owners' out-of-scope examples: questions the shop does not answer, with a redirect.

Marking a queue item out of scope dismisses it (a rejected item is deduplication's negative
cache) and records its question here; answering declines questions near it
(knowledge/answering/scope.py) and the calibration learns from it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from knowledge.access import Principal
from knowledge.answering.scope import cache_of
from knowledge.errors import Conflict, Invalid, NotFound
from knowledge.learning.queue import COLUMNS, QueueItem, get_item, item_from_row, shop_of_item
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import ArrayItem, Conn, Queryable, Vector

MAX_REDIRECT = 2_000
MAX_NOTE = 1_000
REEMBED_BATCH = 256

INSERT_EXAMPLE = """
INSERT INTO out_of_scope_examples (shop_id, question, redirect, embedding, model, queue_item_id,
                                   created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, shop_id, question, redirect, queue_item_id, created_at
"""
COUNT_EXAMPLES = "SELECT count(*) FROM out_of_scope_examples WHERE shop_id = $1"
LIST_EXAMPLES = """
SELECT id, shop_id, question, redirect, queue_item_id, created_at, count(*) OVER () AS total
FROM out_of_scope_examples WHERE shop_id = $1
ORDER BY id DESC LIMIT $2 OFFSET $3
"""
DELETE_EXAMPLE = """
DELETE FROM out_of_scope_examples WHERE shop_id = $1 AND id = $2
RETURNING id, question, redirect, queue_item_id
"""
LOCK_ITEM = f"SELECT {COLUMNS} FROM learning_queue WHERE shop_id = $1 AND id = $2 FOR UPDATE"
# The item is dismissed (a rejected item is deduplication's negative cache, so the same
# question is not queued again) and says why.
MARK_ITEM = f"""
UPDATE learning_queue
SET status = 'rejected', reviewed_at = now(), reviewed_by = $3, review_note = $4,
    metadata = metadata || jsonb_build_object('out_of_scope', true, 'redirect', $5::text)
WHERE shop_id = $1 AND id = $2
RETURNING {COLUMNS}
"""
# The owner took the mark back: the item waits for review again instead of silently keeping
# its question out of the queue.
REOPEN_ITEM = f"""
UPDATE learning_queue
SET status = 'pending', reviewed_at = NULL, reviewed_by = NULL,
    review_note = 'out-of-scope mark withdrawn',
    metadata = metadata || '{{"out_of_scope": false}}'::jsonb - 'redirect'
WHERE id = $1 AND shop_id = $2 AND status = 'rejected'
RETURNING {COLUMNS}
"""
# Across shops: each example is carried with its shop, and written back by (shop, id).
STALE_EXAMPLES = """
SELECT shop_id, id, question FROM out_of_scope_examples WHERE model <> $1
ORDER BY shop_id, id LIMIT $2
"""
UPDATE_VECTOR = """
UPDATE out_of_scope_examples AS e SET embedding = t.embedding, model = $1
FROM unnest($2::integer[], $3::bigint[], $4::vector[]) AS t(shop_id, id, embedding)
WHERE e.shop_id = t.shop_id AND e.id = t.id
"""


def _text(value: str | None, name: str, limit: int) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > limit or "\x00" in value:
        raise Invalid(f"{name} is at most {limit} characters of text (no NUL character)",
                      field=name, limit=limit)
    return value.strip()


def _question(rt: Runtime, question: str) -> str:
    limit = rt.settings.max_question_chars
    text = _text(question, "question", limit)
    if text is None:
        raise Invalid("the question is empty", field="question")
    return rt.redactor.redact(text).text


def _redirect(rt: Runtime, redirect: str | None) -> str | None:
    text = _text(redirect, "redirect", MAX_REDIRECT)
    return None if text is None else rt.redactor.redact(text).text


def _example_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "shop_id": row["shop_id"], "question": row["question"],
            "redirect": row["redirect"],
            "queue_item_id": None if row["queue_item_id"] is None else str(row["queue_item_id"]),
            "created_at": row["created_at"].isoformat()}


async def _insert(rt: Runtime, conn: Conn, shop_id: int, question: str, redirect: str | None,
                  vector: Vector, actor: Principal,
                  queue_item_id: UUID | None) -> dict[str, Any]:
    row = await conn.fetchrow(INSERT_EXAMPLE, shop_id, question, redirect, vector,
                              rt.embedder.model_name, queue_item_id, actor.key_id)
    assert row is not None
    example = _example_json(row)
    await audit.record(conn, shop_id=shop_id, actor=actor, action="scope.mark_out_of_scope",
                       subject_type="out_of_scope", subject_id=queue_item_id,
                       after={k: v for k, v in example.items() if k != "created_at"})
    return example


async def add_example(rt: Runtime, shop_id: int, question: str, redirect: str | None,
                      actor: Principal) -> dict[str, Any]:
    """Record a question the shop does not answer (redacted), with an optional redirect."""
    clean = _question(rt, question)
    clean_redirect = _redirect(rt, redirect)
    vector = await rt.embedder.embed(clean)
    async with rt.pool.acquire() as conn, conn.transaction():
        example = await _insert(rt, conn, shop_id, clean, clean_redirect, vector, actor, None)
    # After the commit: a request in between must not cache the example's absence.
    cache_of(rt).forget(shop_id)
    return example


async def mark_item(rt: Runtime, shop_id: int | None, item_id: UUID, actor: Principal,
                    redirect: str | None, note: str | None) -> tuple[QueueItem, dict[str, Any]]:
    """The owner says a pending item (a gap, an answer to improve) is not the shop's business:
    the item is dismissed and its question becomes an out-of-scope example."""
    clean_note = _text(note, "note", MAX_NOTE) or "out of scope"
    clean_redirect = _redirect(rt, redirect)
    async with rt.pool.acquire() as conn:
        seen = await get_item(conn, await shop_of_item(conn, shop_id, item_id), item_id)
    if not seen.question:
        raise Invalid("this item has no question to mark", field="item_id")
    # The model runs before the item is locked, not while its row and a connection are held.
    vector = await rt.embedder.embed(seen.question)
    async with rt.pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchrow(LOCK_ITEM, seen.shop_id, item_id)
        assert locked is not None
        item = item_from_row(locked)
        if item.status not in {"pending", "approved"}:
            raise Conflict(f"queue item {item_id} is {item.status}; only pending or approved "
                           "items can be marked out of scope", item_status=item.status)
        if not item.question:
            raise Invalid("this item has no question to mark", field="item_id")
        if item.question != seen.question:
            vector = await rt.embedder.embed(item.question)  # edited meanwhile
        marked = item_from_row(await conn.fetchrow(MARK_ITEM, item.shop_id, item_id,
                                                   actor.key_id, clean_note, clean_redirect))
        await audit.record(conn, shop_id=item.shop_id, actor=actor,
                           action="queue.out_of_scope", subject_type="queue",
                           subject_id=item_id, before=item.summary(),
                           after={**marked.summary(), "redirect": clean_redirect})
        example = await _insert(rt, conn, item.shop_id, item.question, clean_redirect, vector,
                                actor, item_id)
    cache_of(rt).forget(item.shop_id)
    return marked, example


async def list_examples(conn: Queryable, shop_id: int, limit: int,
                        offset: int) -> tuple[list[dict[str, Any]], int]:
    rows = await conn.fetch(LIST_EXAMPLES, shop_id, limit, offset)
    total = int(rows[0]["total"]) if rows else int(await conn.fetchval(COUNT_EXAMPLES, shop_id))
    return [_example_json(r) for r in rows], total


async def delete_example(rt: Runtime, shop_id: int, example_id: int,
                         actor: Principal) -> None:
    """Forget an example; the queue item it came from waits for review again."""
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(DELETE_EXAMPLE, shop_id, example_id)
        if row is None:
            raise NotFound(f"no out-of-scope example {example_id}")
        reopened = None
        if row["queue_item_id"] is not None:
            reopened = await conn.fetchrow(REOPEN_ITEM, row["queue_item_id"], shop_id)
        await audit.record(conn, shop_id=shop_id, actor=actor,
                           action="scope.delete_example", subject_type="out_of_scope",
                           subject_id=row["queue_item_id"],
                           before={"id": row["id"], "question": row["question"],
                                   "redirect": row["redirect"]},
                           after={"queue_item_reopened": reopened is not None})
    cache_of(rt).forget(shop_id)


async def reembed_examples(rt: Runtime) -> int:
    """Re-embed examples made by another model (after a change of model); how many were."""
    done = 0
    model = rt.embedder.model_name
    while True:
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch(STALE_EXAMPLES, model, REEMBED_BATCH)
            if not rows:
                return done
            vectors = [await rt.embedder.embed(r["question"]) for r in rows]
            await conn.execute(UPDATE_VECTOR, model, [r["shop_id"] for r in rows],
                               [r["id"] for r in rows], [ArrayItem(v) for v in vectors])
        done += len(rows)
