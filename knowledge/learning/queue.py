"""The learning queue: items are deduplicated on the way in and auto-approved when confident."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from knowledge.access import Principal
from knowledge.answering.retrieval import cache_of, choose_path, nearest_entries
from knowledge.errors import Invalid, NotFound
from knowledge.learning.dedup import same_answer, same_question
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Conn, Queryable, Vector, in_transaction
from knowledge.store.entries import entry_with_answer
from knowledge.store.shops import Shop

PRIORITY_CONFIDENCE = {"low": 70, "normal": 80, "high": 90, "urgent": 95}
NEGATIVE_FEEDBACK_CONFIDENCE = 50
# Each merged observation adds this much confidence, up to MERGED_CONFIDENCE_CAP: repetition is
# evidence, but never enough on its own to skip review when it started low.
MERGE_STEP = 5
MERGED_CONFIDENCE_CAP = 90
NEIGHBOURS = 5

KINDS = ("answer", "gap", "improve")
SOURCES = ("feedback", "correction", "transcript", "manual", "gap", "handover")


@dataclass(slots=True)
class ItemDraft:
    """A signal's proposal, before deduplication."""

    kind: str
    source_type: str
    question: str
    answer: str | None = None
    source_id: UUID | None = None
    confidence: int = 50
    priority: str = "normal"
    category: str | None = None
    target_entry_id: UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: UUID
    shop_id: int
    status: str
    kind: str
    source_type: str
    source_id: UUID | None
    question: str | None
    proposed_content: str | None
    category: str | None
    confidence_score: int
    priority: str
    observations: int
    conflict_entry_id: UUID | None
    nearest_entry_id: UUID | None
    nearest_similarity: float | None
    target_entry_id: UUID | None
    merged_into: UUID | None
    applied_knowledge_id: UUID | None
    review_note: str | None
    signals: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    reviewed_at: datetime | None
    applied_at: datetime | None

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "kind": self.kind, "question": self.question,
                "proposed_content": self.proposed_content,
                "confidence": self.confidence_score, "observations": self.observations}


@dataclass(frozen=True, slots=True)
class Submitted:
    """What became of a draft: new, merged, dropped (already known), conflict, or
    rejected_before (matched a dismissed suggestion)."""

    outcome: str
    item: QueueItem | None
    auto_approved: bool = False
    # Dropped: the live entry that already gives this answer to this question.
    known_entry_id: UUID | None = None


_COLUMNS = ("id, shop_id, status, kind, source_type, source_id, question, proposed_content, "
            "category, confidence_score, priority, observations, conflict_entry_id, "
            "nearest_entry_id, nearest_similarity, target_entry_id, merged_into, "
            "applied_knowledge_id, review_note, signals, metadata, created_at, updated_at, "
            "reviewed_at, applied_at")
COLUMNS = _COLUMNS
_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))


def columns_of(alias: str) -> str:
    """The item's columns qualified by a table alias, for queries that join or self-update."""
    return ", ".join(f"{alias}.{name}" for name in _NAMES)


# A shop's open items of one kind (rejected ones kept as a negative cache), the nearest first.
# The status list is the predicate of idx_learning_open_hnsw, word for word.
_OPEN_ITEMS = """
SELECT id, status, kind, question, proposed_content, 1 - distance AS similarity
FROM (SELECT id, status, kind, question, proposed_content, embedding <=> $2 AS distance
      FROM learning_queue
      WHERE shop_id = $1 AND status IN ('pending', 'approved', 'rejected') AND kind = $3
        {also}
      {scan}) AS open_items
ORDER BY distance
{limit}
"""
# Exactly (OFFSET 0 keeps the planner from walking the HNSW index and filtering afterwards)
# while they are few ...
NEAREST_ITEMS = _OPEN_ITEMS.format(also="", scan="OFFSET 0", limit="LIMIT $4")
# ... and through idx_learning_open_hnsw with iterative scans (relaxed order, so re-sorted) once
# they are many and a fair share of the index.
NEAREST_ITEMS_HNSW = _OPEN_ITEMS.format(also="", scan="ORDER BY embedding <=> $2 LIMIT $4",
                                        limit="")
COUNT_OPEN_ITEMS = """
SELECT count(*) AS shop,
       greatest((SELECT reltuples FROM pg_class
                 WHERE oid = 'idx_learning_open_hnsw'::regclass), count(*))::bigint AS total
FROM learning_queue
WHERE shop_id = $1 AND status IN ('pending', 'approved', 'rejected') AND kind = $2
"""
# Up to this many open items of a shop and kind are compared exactly: a queue row is wide, and
# an exact scan costs about 2.6 us an item (5.4 ms at 2,000), the index about 1 ms at any size.
QUEUE_EXACT_MAX_ITEMS = 300
# For the signal's transaction only:
# - deduplication asks for the few nearest items and entries of a question, and a duplicate
#   lies very near: a narrower HNSW search than answering's finds it (at 2,000 items recall@5
#   was 1.0 at 40, and the knowledge search 1.4 ms instead of 2.4 ms at 100);
# - no lock is waited for longer than LOCK_WAIT: a new item is inserted before the queue lock
#   is taken, and the second look under it sees items inserted in the last RECENT_SECONDS, so
#   insertion to commit must stay well inside that (a transaction that times out is retried).
LOCK_WAIT = "5s"
RECENT_SECONDS = 10
DEDUP_SETTINGS = f"""
SELECT set_config('hnsw.ef_search', '40', true), set_config('lock_timeout', '{LOCK_WAIT}', true)
"""
# The second look, under the lock, need only see items the first one could not: committed
# since it began. A new item's created_at is the moment of its insertion, at most LOCK_WAIT
# (and a few milliseconds) before its commit, so items stamped in the last RECENT_SECONDS are
# enough. $5, the caller's own new item, is not a duplicate of itself.
RECENT_ITEMS = _OPEN_ITEMS.format(
    also=f"AND created_at > now() - interval '{RECENT_SECONDS} seconds' AND id <> $5",
    scan="OFFSET 0", limit="LIMIT $4")
WITHDRAW_ITEM = "DELETE FROM learning_queue WHERE shop_id = $1 AND id = $2"
INSERT_ITEM = f"""
INSERT INTO learning_queue (shop_id, status, kind, source_type, source_id, question,
    proposed_content, category, embedding, confidence_score, priority, conflict_entry_id,
    nearest_entry_id, nearest_similarity, target_entry_id, signals, metadata, reviewed_at,
    created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
        CASE WHEN $2::varchar = 'approved' THEN now() END, clock_timestamp())
RETURNING {_COLUMNS}
"""
# An item keeps its first KEPT_SIGNALS source signals; `observations` counts all of them. A gap
# asked ten thousand times must not rewrite an ever longer array on every repeat.
KEPT_SIGNALS = 100
MERGE_INTO = f"""
UPDATE learning_queue
SET observations = observations + 1,
    confidence_score = CASE WHEN status = 'rejected' THEN confidence_score
                            ELSE greatest(confidence_score,
                                          least($4, confidence_score + $5), $6) END,
    priority = CASE WHEN $7::varchar = 'urgent' OR (priority <> 'urgent' AND $7::varchar = 'high')
                    THEN $7::varchar ELSE priority END,
    signals = CASE WHEN jsonb_array_length(signals) < {KEPT_SIGNALS} THEN signals || $3
                   ELSE signals END
WHERE shop_id = $1 AND id = $2 AND status IN ('pending', 'approved', 'rejected')
RETURNING {_COLUMNS}
"""
# Inserting a new item takes a transaction-scoped lock (class, shop), one class per kind:
# items are only ever compared with items of their own kind.
QUEUE_LOCK_CLASS = {kind: 0x1EA5 + i for i, kind in enumerate(KINDS)}
LOCK_NEW_ITEMS = "SELECT pg_advisory_xact_lock($1::integer, $2::integer)"
# $3: the item that carries the turn's answer, or NULL when live knowledge already gives it
# ($4 then says which entry, for a reader of the item).
SETTLE_TURN_ITEMS = """
UPDATE learning_queue SET status = 'merged', merged_into = $3, reviewed_at = now(),
       review_note = coalesce($4, review_note)
WHERE shop_id = $1 AND status = 'pending' AND kind IN ('improve', 'gap')
  AND (metadata ->> 'turn_id' = $2
       OR signals @> jsonb_build_array(jsonb_build_object('turn_id', $2::text))
       -- a fallback's gap names its turn as its source
       OR (kind = 'gap' AND (source_id = $2::uuid
           OR signals @> jsonb_build_array(jsonb_build_object('source_id', $2::text)))))
RETURNING id
"""
PROMOTE = f"""
UPDATE learning_queue SET status = 'approved', reviewed_at = now()
WHERE shop_id = $1 AND id = $2 AND status = 'pending'
RETURNING {_COLUMNS}
"""
SELECT_ITEM = f"SELECT {_COLUMNS} FROM learning_queue WHERE shop_id = $1 AND id = $2"
# An admin acting across shops names an item by its id alone: its shop is looked up first (on
# PostgreSQL 18 a skip scan of the (shop_id, id) key, one descent per shop), and the item is
# then read, locked and changed within that shop, as for everyone else.
SHOP_OF_ITEM = "SELECT shop_id FROM learning_queue WHERE id = $1"
COUNT_ITEMS = """
SELECT count(*) FROM learning_queue WHERE shop_id = $1 AND ($2::text IS NULL OR status = $2)
"""


def item_from_row(row: asyncpg.Record | None) -> QueueItem:
    assert row is not None
    return QueueItem(**{name: row[name] for name in _NAMES})


def _signal(draft: ItemDraft) -> dict[str, Any]:
    signal = {"source_type": draft.source_type,
              "source_id": str(draft.source_id) if draft.source_id else None,
              "confidence": draft.confidence, "answer": draft.answer}
    if draft.metadata.get("turn_id"):
        signal["turn_id"] = draft.metadata["turn_id"]
    # A call's pair shows where in the call it was said, for each call that said it.
    for key in ("excerpt", "start", "end"):
        if draft.metadata.get(key) is not None:
            signal[key] = draft.metadata[key]
    return signal


async def submit(rt: Runtime, shop: Shop, draft: ItemDraft, actor: Principal,
                 conn: Conn | None = None, vector: Vector | None = None) -> Submitted:
    """Deduplicate a draft against the shop's queue and knowledge, then store it."""
    if draft.kind not in KINDS:
        raise Invalid(f"kind is one of {', '.join(KINDS)}", field="kind")
    if not draft.question.strip():
        raise Invalid("a learning item needs the question it is about", field="question")
    if vector is None:
        vector = await rt.embedder.embed(draft.question)
    if conn is None:
        known = vector
        return await in_transaction(
            rt.pool, lambda own: _submit(rt, own, shop, draft, actor, known))
    return await _submit(rt, conn, shop, draft, actor, vector)


def _open_items_key(shop_id: int, kind: str) -> tuple[object, ...]:
    return ("queue", shop_id, kind)


async def _nearest_items_query(rt: Runtime, conn: Conn, shop_id: int, kind: str) -> str:
    size, total = await cache_of(rt).counted(conn, _open_items_key(shop_id, kind),
                                             COUNT_OPEN_ITEMS, shop_id, kind)
    path = choose_path(size, total, QUEUE_EXACT_MAX_ITEMS, rt.settings.hnsw_min_shop_fraction)
    return NEAREST_ITEMS if path == "exact" else NEAREST_ITEMS_HNSW


async def _merge_existing(rt: Runtime, conn: Conn, shop: Shop, draft: ItemDraft,
                          actor: Principal, vector: Vector, signal: dict[str, Any],
                          inserted: UUID | None = None) -> Submitted | None:
    """The same question already in the queue: merge (or count it on a dismissed item).

    With `inserted` (the item just inserted for this draft), only items committed since the
    first look are compared: the second look, under the lock."""
    if inserted is None:
        query = await _nearest_items_query(rt, conn, shop.id, draft.kind)
        rows = await conn.fetch(query, shop.id, vector, draft.kind, NEIGHBOURS)
    else:
        rows = await conn.fetch(RECENT_ITEMS, shop.id, vector, draft.kind, NEIGHBOURS, inserted)
    for row in rows:
        if not same_question(row["similarity"], row["question"], draft.question, shop):
            continue
        if draft.kind == "answer" and not same_answer(row["proposed_content"], draft.answer,
                                                    shop.dedup_answer_ratio):
            continue  # same question, another answer: a proposal of its own
        updated = await conn.fetchrow(
            MERGE_INTO, shop.id, row["id"], [signal], MERGED_CONFIDENCE_CAP, MERGE_STEP,
            draft.confidence, draft.priority)
        if updated is None:
            continue  # applied or merged meanwhile: no longer open
        merged = item_from_row(updated)
        outcome = "rejected_before" if merged.status == "rejected" else "merged"
        await audit.record(conn, shop_id=shop.id, actor=actor, action=f"queue.{outcome}",
                           subject_type="queue", subject_id=merged.id, after=merged.summary())
        approved = await _maybe_approve(conn, shop, merged, actor, settles_conflict(draft))
        return Submitted(outcome, approved or merged, auto_approved=approved is not None)
    return None


# Marks an item that only adds its question to the entry that already gives its answer: apply
# must not touch that entry's answer (it may have been edited since).
PHRASING_ONLY = "phrasing_only"
# Signals written by the shop's own people (an owner's correction, an owner's or admin's
# suggestion), as opposed to customers' feedback and gaps.
OWNER_SOURCES = frozenset({"correction", "manual"})


def settles_conflict(draft: ItemDraft) -> bool:
    """Only an owner's urgent correction overrides live knowledge without review."""
    return draft.priority == "urgent" and draft.source_type == "correction"


async def _submit(rt: Runtime, conn: Conn, shop: Shop, draft: ItemDraft, actor: Principal,
                  vector: Vector) -> Submitted:
    signal = _signal(draft)
    await conn.execute(DEDUP_SETTINGS)
    # 1. The same question already in the queue.
    merged = await _merge_existing(rt, conn, shop, draft, actor, vector, signal)
    if merged is not None:
        return merged
    # 2. Compare with live knowledge.
    nearest = await nearest_entries(rt, conn, shop.id, vector, NEIGHBOURS)
    nearest_id: UUID | None = None
    nearest_similarity: float | None = None
    conflict_id: UUID | None = None
    target = draft.target_entry_id
    # An answer the knowledge base already gives, word for word: the question is one more
    # way of asking that entry (the bot picked the wrong entry), not a new entry, and not a
    # reason to change the entry that was served.
    answered_by = (await entry_with_answer(conn, shop.id, draft.answer)
                   if draft.kind == "answer" and draft.answer else None)
    for entry in nearest:
        entry_id, similarity = entry.entry_id, entry.similarity
        if nearest_id is None:
            nearest_id, nearest_similarity = entry_id, similarity
        asked = [entry.question, *entry.variants]
        if not any(same_question(similarity, q, draft.question, shop) for q in asked if q):
            continue
        if draft.kind == "answer" and same_answer(entry.answer, draft.answer,
                                                shop.dedup_answer_ratio):
            if (draft.metadata.get("turn_id") and draft.question not in asked
                    and entry_id == answered_by):
                # The entry says it word for word, yet the bot served something else for this
                # phrasing (the owner corrected a real turn): the phrasing joins the entry.
                break
            await audit.record(conn, shop_id=shop.id, actor=actor, action="queue.dropped",
                               subject_type="knowledge", subject_id=entry_id,
                               after={"question": draft.question, "reason": "already known",
                                      "signal": signal})
            return Submitted("dropped", None, known_entry_id=entry_id)
        if draft.kind == "answer" and answered_by is None:
            conflict_id = entry_id
            target = target or entry_id
        break
    routed = answered_by is not None and conflict_id is None
    if routed:
        target = answered_by
    # Approved at once when confident enough, unless it contradicts live knowledge.
    confident = draft.confidence >= shop.auto_approve_threshold and draft.kind == "answer"
    if conflict_id is not None:
        confident = confident and settles_conflict(draft)
    elif answered_by is not None and draft.source_type in OWNER_SOURCES:
        # An owner pointing a question at an answer the shop already gives adds no new text,
        # only a phrasing to an entry they vouch for: nothing for a reviewer to check, unless
        # the shop wants a person to approve everything (a threshold of 100).
        confident = shop.auto_approve_threshold < 100 and draft.kind == "answer"
    status = "approved" if confident else "pending"
    # 3. New. The row (and its index entries, the costly part) is written first; then, under a
    # lock per shop and kind, the queue is looked at again for items committed since the first
    # look. Two identical signals at the same moment thus cannot both stay: the later one to
    # take the lock sees the other's committed item, merges into it and withdraws its own.
    item = item_from_row(await conn.fetchrow(
        INSERT_ITEM, shop.id, status, draft.kind, draft.source_type, draft.source_id,
        draft.question, draft.answer, draft.category, vector, draft.confidence, draft.priority,
        conflict_id, nearest_id, nearest_similarity, target, [signal],
        {**draft.metadata, PHRASING_ONLY: True} if routed else draft.metadata))
    await conn.execute(LOCK_NEW_ITEMS, QUEUE_LOCK_CLASS[draft.kind], shop.id)
    merged = await _merge_existing(rt, conn, shop, draft, actor, vector, signal,
                                   inserted=item.id)
    if merged is not None:
        await conn.execute(WITHDRAW_ITEM, shop.id, item.id)
        return merged
    cache_of(rt).grew(_open_items_key(shop.id, draft.kind))
    outcome = "conflict" if conflict_id is not None else "new"
    await audit.record(conn, shop_id=shop.id, actor=actor, action=f"queue.{outcome}",
                       subject_type="queue", subject_id=item.id, after=item.summary())
    if confident:
        why = ({"reason": "an owner's answer the shop already gives", "entry": str(target)}
               if answered_by is not None and conflict_id is None
               else {"confidence": item.confidence_score,
                     "threshold": shop.auto_approve_threshold})
        await audit.record(conn, shop_id=shop.id, actor=actor, action="queue.auto_approve",
                           subject_type="queue", subject_id=item.id, after=why)
    return Submitted(outcome, item, auto_approved=confident)


async def settle_turn_items(conn: Conn, shop_id: int, turn_id: UUID, answer: Submitted,
                            actor: Principal) -> int:
    """The owner answered this turn: the "needs a better answer" items its feedback opened or
    was merged into are folded into that answer, not left for a reviewer to dismiss.

    Only an answer that is on its way (pending or approved, disputing nothing) or one that live
    knowledge already gives settles them: folded into a rejected or a disputed item, they would
    vanish from review."""
    item = answer.item
    if item is not None:
        if item.status not in {"pending", "approved"} or item.conflict_entry_id is not None:
            return 0
        into, known, after = item.id, None, {"status": "merged", "into": str(item.id)}
    elif answer.known_entry_id is not None:
        into, known = None, f"already answered by entry {answer.known_entry_id}"
        after = {"status": "merged", "already_known_by": str(answer.known_entry_id)}
    else:
        return 0
    settled = [r["id"] for r in await conn.fetch(SETTLE_TURN_ITEMS, shop_id, str(turn_id),
                                                  into, known)]
    await audit.record_many(conn, shop_id=shop_id, actor=actor, action="queue.settled",
                            subject_type="queue",
                            changes=[(i, {"status": "pending"}, after) for i in settled])
    return len(settled)


async def _maybe_approve(conn: Conn, shop: Shop, item: QueueItem, actor: Principal,
                         settles: bool) -> QueueItem | None:
    """A merged item whose confidence now reaches the threshold is approved (a conflict with
    live knowledge only by an urgent owner correction)."""
    if (item.status != "pending" or item.kind != "answer"
            or (item.conflict_entry_id is not None and not settles)
            or item.confidence_score < shop.auto_approve_threshold):
        return None
    row = await conn.fetchrow(PROMOTE, item.shop_id, item.id)
    if row is None:
        return None
    await audit.record(conn, shop_id=shop.id, actor=actor, action="queue.auto_approve",
                       subject_type="queue", subject_id=item.id,
                       after={"confidence": item.confidence_score,
                              "threshold": shop.auto_approve_threshold})
    return item_from_row(row)


async def shop_of_item(conn: Queryable, shop_id: int | None, item_id: UUID) -> int:
    """The shop to find an item in: the caller's, or (None: an admin acting across shops) the
    item's own."""
    if shop_id is not None:
        return shop_id
    found = await conn.fetchval(SHOP_OF_ITEM, item_id)
    if found is None:
        raise NotFound(f"no queue item {item_id}")
    return int(found)


async def get_item(conn: Queryable, shop_id: int, item_id: UUID) -> QueueItem:
    row = await conn.fetchrow(SELECT_ITEM, shop_id, item_id)
    if row is None:
        raise NotFound(f"no queue item {item_id}")
    return item_from_row(row)


async def count_items(conn: Queryable, shop_id: int, status: str | None = None) -> int:
    return int(await conn.fetchval(COUNT_ITEMS, shop_id, status))
