"""Reviewing the learning queue: list with filters, approve (with edits), reject, merge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from knowledge.access import Principal
from knowledge.errors import Conflict, Invalid, NotFound
from knowledge.learning.queue import (
    COLUMNS,
    KEPT_SIGNALS,
    QueueItem,
    columns_of,
    get_item,
    item_from_row,
    shop_of_item,
)
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Conn, Queryable

# Each sort's terms over the columns of learning_queue_listing, the narrow copy of every item's
# filter and sort columns that triggers keep (migration 0024), with an index for each order.
SORTS = {
    "priority": ("priority_rank", "observations DESC", "created_at"),
    "observations": ("observations DESC", "created_at"),
    "age": ("created_at",),
    "newest": ("created_at DESC",),
    "confidence": ("confidence_score DESC", "created_at"),
    # Closest to existing knowledge first: the likeliest duplicates and conflicts.
    "similarity": ("nearest_similarity DESC NULLS LAST", "created_at"),
}
# Ties broken by id, so that pages of one listing neither repeat nor skip an item.
ORDER_BY = {name: (*terms, "id") for name, terms in SORTS.items()}
STATUSES = ("pending", "approved", "rejected", "applied", "merged")
PRIORITIES = ("urgent", "high", "normal", "low")
MAX_NOTE = 1_000

# The queue's filters, shared by the list and its count. {shop} is the scope: one shop's items
# (written out, not `$1 IS NULL OR shop_id = $1`, so that a plan PostgreSQL keeps for the
# prepared statement still reads that shop's index entries only), or every shop's.
_FILTERS = """
WHERE {shop}
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR source_type = $3)
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::boolean IS NULL OR conflict = $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
  AND ($8::text IS NULL OR priority = $8)
"""
SCOPES = {True: "shop_id = $1", False: "$1::integer IS NULL"}
# One constant per sort order and scope: ORDER BY cannot take a parameter. The page is chosen
# in the sort's index and counted on narrow rows; only the page's items are read from
# learning_queue, whose rows are wide (a vector, signals, metadata).
_LIST = """
WITH page AS (
    SELECT shop_id, {keys} FROM learning_queue_listing
    {filters}
    ORDER BY {order}
    LIMIT $9 OFFSET $10
)
SELECT {columns}, (SELECT count(*) FROM learning_queue_listing {filters}) AS total
FROM page JOIN learning_queue AS q ON q.shop_id = page.shop_id AND q.id = page.id
ORDER BY {page_order}
"""


def _list_sql(terms: tuple[str, ...], scope: str) -> str:
    return _LIST.format(keys=", ".join(t.split()[0] for t in terms),
                        filters=_FILTERS.format(shop=scope), order=", ".join(terms),
                        columns=columns_of("q"),
                        page_order=", ".join(f"page.{t}" for t in terms))


LIST_BY_SORT = {(name, one_shop): _list_sql(terms, scope)
                for name, terms in ORDER_BY.items() for one_shop, scope in SCOPES.items()}
COUNT_FILTERED = {one_shop: "SELECT count(*) FROM learning_queue_listing"
                  + _FILTERS.format(shop=scope) for one_shop, scope in SCOPES.items()}
# The live versions of (shop, entry) pairs: the items listed may be of several shops.
NEAREST_KNOWLEDGE = """
SELECT kb.shop_id, kb.entry_id, kb.id, kb.version, kb.question, kb.answer
FROM unnest($1::integer[], $2::uuid[]) AS wanted(shop_id, entry_id)
JOIN knowledge_base_rag AS kb
  ON kb.shop_id = wanted.shop_id AND kb.entry_id = wanted.entry_id AND kb.valid_to IS NULL
"""
LOCK_ITEM = f"SELECT {COLUMNS} FROM learning_queue WHERE shop_id = $1 AND id = $2 FOR UPDATE"
APPROVE = f"""
UPDATE learning_queue
SET status = 'approved', kind = 'answer', reviewed_at = now(), reviewed_by = $3,
    question = coalesce($4, question), proposed_content = coalesce($5, proposed_content),
    category = coalesce($6, category), review_note = coalesce($7, review_note),
    confidence_score = greatest(confidence_score, 100 * $8::integer)
WHERE shop_id = $1 AND id = $2
RETURNING {COLUMNS}
"""
REJECT = f"""
UPDATE learning_queue
SET status = 'rejected', reviewed_at = now(), reviewed_by = $3, review_note = $4
WHERE shop_id = $1 AND id = $2
RETURNING {COLUMNS}
"""
MERGE = f"""
WITH source AS (
    UPDATE learning_queue SET status = 'merged', merged_into = $3, reviewed_at = now(),
                              reviewed_by = $4
    WHERE shop_id = $1 AND id = $2
    RETURNING observations, signals
)
UPDATE learning_queue AS target
SET observations = target.observations + source.observations,
    signals = (SELECT coalesce(jsonb_agg(e ORDER BY i), '[]'::jsonb)
               FROM jsonb_array_elements(target.signals || source.signals)
                    WITH ORDINALITY AS kept(e, i)
               WHERE i <= {KEPT_SIGNALS})
FROM source
WHERE target.shop_id = $1 AND target.id = $3
RETURNING {columns_of("target")}
"""


@dataclass(frozen=True, slots=True)
class ReviewView:
    """An item beside the live knowledge it is closest to (or contradicts)."""

    item: QueueItem
    nearest: dict[str, Any] | None
    conflict: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class QueueFilter:
    status: str | None = None
    source_type: str | None = None
    kind: str | None = None
    conflict: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "priority"
    priority: str | None = None


async def list_items(conn: Queryable, shop_id: int | None, f: QueueFilter, limit: int = 50,
                     offset: int = 0) -> tuple[list[ReviewView], int]:
    if f.sort not in SORTS:
        raise Invalid(f"sort is one of {', '.join(SORTS)}", field="sort")
    if f.status is not None and f.status not in STATUSES:
        raise Invalid(f"status is one of {', '.join(STATUSES)}", field="status")
    if f.priority is not None and f.priority not in PRIORITIES:
        raise Invalid(f"priority is one of {', '.join(PRIORITIES)}", field="priority")
    one_shop = shop_id is not None
    rows = await conn.fetch(LIST_BY_SORT[f.sort, one_shop], shop_id, f.status, f.source_type,
                            f.kind, f.conflict, f.since, f.until, f.priority, limit, offset)
    items = [item_from_row(r) for r in rows]
    if rows:
        total = int(rows[0]["total"])
    else:  # past the last page there is no row to read the count from
        total = int(await conn.fetchval(COUNT_FILTERED[one_shop], shop_id, f.status,
                                        f.source_type, f.kind, f.conflict, f.since, f.until,
                                        f.priority))
    return await with_knowledge(conn, items), total


async def with_knowledge(conn: Queryable, items: list[QueueItem]) -> list[ReviewView]:
    wanted = {(item.shop_id, i) for item in items
              for i in (item.nearest_entry_id, item.conflict_entry_id) if i is not None}
    live = {(r["shop_id"], r["entry_id"]): {
        "entry_id": str(r["entry_id"]), "knowledge_id": str(r["id"]), "version": r["version"],
        "question": r["question"], "answer": r["answer"]}
        for r in await conn.fetch(NEAREST_KNOWLEDGE, [s for s, _ in wanted],
                                  [e for _, e in wanted])} if wanted else {}
    return [ReviewView(
        item,
        live.get((item.shop_id, item.nearest_entry_id)) if item.nearest_entry_id else None,
        live.get((item.shop_id, item.conflict_entry_id)) if item.conflict_entry_id else None)
        for item in items]


# The conversation turns items came from, shown beside them to a reviewer; only turns of the
# items' own shops, whatever a signal names.
TURNS_OF_ITEMS = """
SELECT id, shop_id, conversation_id, question, answer, tier, confidence, created_at
FROM conversation_memory WHERE id = ANY($1::uuid[]) AND shop_id = ANY($2::integer[])
"""


def _turn_ids(item: QueueItem, signals: int | None) -> set[UUID]:
    found = set()
    for signal in item.signals[:signals]:
        try:
            found.add(UUID(str(signal["turn_id"])))
        except (KeyError, ValueError):
            continue
    if item.kind == "gap" and item.source_type in {"gap", "handover"} and item.source_id:
        found.add(item.source_id)  # a fallback's gap names its turn as its source
    return found


async def turns_of(conn: Queryable, items: list[QueueItem],
                   signals: int | None = None) -> dict[UUID, list[dict[str, Any]]]:
    """Each item's conversation turns (those of its first `signals` signals; of all without),
    oldest first."""
    wanted = {item.id: _turn_ids(item, signals) for item in items}
    ids = set().union(*wanted.values()) if wanted else set()
    if not ids:
        return {}
    rows = {(r["id"], r["shop_id"]): dict(r) for r in await conn.fetch(
        TURNS_OF_ITEMS, list(ids), list({item.shop_id for item in items}))}
    return {item.id: sorted((rows[(t, item.shop_id)] for t in wanted[item.id]
                             if (t, item.shop_id) in rows), key=lambda r: r["created_at"])
            for item in items}


async def _lock(conn: Conn, shop_id: int | None, item_id: UUID) -> QueueItem:
    row = await conn.fetchrow(LOCK_ITEM, await shop_of_item(conn, shop_id, item_id), item_id)
    if row is None:
        raise NotFound(f"no queue item {item_id}")
    return item_from_row(row)


def _open(item: QueueItem, action: str) -> None:
    if item.status not in {"pending", "approved"}:
        raise Conflict(f"queue item {item.id} is {item.status}; only pending or approved items "
                       f"can be {action}", item_status=item.status)


async def approve(rt: Runtime, shop_id: int | None, item_id: UUID, actor: Principal, *,
                  question: str | None = None, answer: str | None = None,
                  category: str | None = None, note: str | None = None,
                  gap_only: bool = False) -> QueueItem:
    """Approve an item, optionally edited first; a gap becomes an answer once it has one.
    With gap_only, only an item that asks for an answer (a gap, or an answer to improve)."""
    if answer is not None and not answer.strip():
        raise Invalid("the answer is empty", field="answer")
    if question is not None and not question.strip():
        raise Invalid("the question is empty", field="question")
    s = rt.settings
    for name, value, limit in (("question", question, s.max_question_chars),
                               ("answer", answer, s.max_answer_chars),
                               ("note", note, MAX_NOTE)):
        if value is not None and len(value) > limit:
            raise Invalid(f"{name} is longer than {limit} characters", field=name, limit=limit)
    async with rt.pool.acquire() as conn, conn.transaction():
        item = await _lock(conn, shop_id, item_id)
        _open(item, "approved")
        if gap_only and item.kind == "answer":
            raise Conflict(f"queue item {item_id} already proposes an answer: approve or edit it",
                           kind=item.kind)
        clean_answer = rt.redactor.redact(answer.strip()).text if answer else None
        if not (clean_answer or item.proposed_content):
            raise Invalid("this item has no answer yet: approve it with one", field="answer")
        clean_question = rt.redactor.redact(question.strip()).text if question else None
        # Limits hold for what is stored: redaction can lengthen a text a little.
        for name, value, limit in (("question", clean_question, s.max_question_chars),
                                   ("answer", clean_answer, s.max_answer_chars)):
            if value is not None and len(value) > limit:
                raise Invalid(f"{name} is longer than {limit} characters once redacted",
                              field=name, limit=limit)
        edited = clean_answer is not None or clean_question is not None
        row = await conn.fetchrow(APPROVE, item.shop_id, item_id, actor.key_id, clean_question,
                                  clean_answer, category, note, int(edited))
        approved = item_from_row(row)
        await audit.record(conn, shop_id=approved.shop_id, actor=actor,
                           action="queue.edit_approve" if edited else "queue.approve",
                           subject_type="queue", subject_id=item_id, before=item.summary(),
                           after=approved.summary())
        return approved


async def reject(rt: Runtime, shop_id: int | None, item_id: UUID, actor: Principal,
                 reason: str) -> QueueItem:
    """Reject with a reason; the item stays as a negative cache for the same suggestion."""
    if not reason.strip() or len(reason) > MAX_NOTE:
        raise Invalid(f"a rejection gives a reason of 1 to {MAX_NOTE} characters",
                      field="reason", limit=MAX_NOTE)
    async with rt.pool.acquire() as conn, conn.transaction():
        item = await _lock(conn, shop_id, item_id)
        _open(item, "rejected")
        rejected = item_from_row(await conn.fetchrow(REJECT, item.shop_id, item_id,
                                                     actor.key_id, reason.strip()))
        await audit.record(conn, shop_id=rejected.shop_id, actor=actor, action="queue.reject",
                           subject_type="queue", subject_id=item_id, before=item.summary(),
                           after={**rejected.summary(), "reason": reason.strip()})
        return rejected


async def merge(rt: Runtime, shop_id: int | None, source_id: UUID, into_id: UUID,
                actor: Principal) -> QueueItem:
    """Fold one item into another of the same shop: its observations and signals move."""
    async with rt.pool.acquire() as conn, conn.transaction():
        # Lock in id order, so two opposite merges cannot deadlock.
        first, second = sorted([source_id, into_id], key=str)
        locked = {first: await _lock(conn, shop_id, first),
                  second: await _lock(conn, shop_id, second)}
        if source_id == into_id:
            raise Invalid("an item cannot be merged into itself", field="into")
        source, target = locked[source_id], locked[into_id]
        if source.shop_id != target.shop_id:
            raise NotFound(f"no queue item {into_id}")
        _open(source, "merged")
        _open(target, "merged into")
        merged = item_from_row(await conn.fetchrow(MERGE, source.shop_id, source_id, into_id,
                                                   actor.key_id))
        await audit.record(conn, shop_id=merged.shop_id, actor=actor, action="queue.merge",
                           subject_type="queue", subject_id=source_id, before=source.summary(),
                           after={"merged_into": str(into_id),
                                  "observations": merged.observations})
        return merged


async def get_any(conn: Queryable, shop_id: int | None, item_id: UUID) -> QueueItem:
    """An item of the given shop (any shop for None)."""
    return await get_item(conn, await shop_of_item(conn, shop_id, item_id), item_id)
