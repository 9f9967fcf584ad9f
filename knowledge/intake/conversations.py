"""Whole conversations the bot handled, logged in bulk, and one conversation read back.

A batch is written in one statement, idempotent on the client's turn ids, with the questions
redacted and no model call on the way in: the embed-turns job gives logged questions their
vectors a moment later (so they count for repeated-question handling and search) and opens a
knowledge gap for each low-confidence or handed-over turn, as answering does for its own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from knowledge.access import SYSTEM
from knowledge.errors import Invalid, NotFound
from knowledge.learning.queue import ItemDraft, submit
from knowledge.runtime import Runtime
from knowledge.store.db import ArrayItem, Queryable
from knowledge.store.shops import Shop, get_shop

log = logging.getLogger(__name__)

MAX_TURNS_PER_BATCH = 1_000
MAX_ID = 200
TIERS = ("answer", "options", "clarify", "fallback", "handover")
# The turns the bot could not answer: each opens a knowledge gap, as a fallback does live.
GAP_TIERS = frozenset({"clarify", "fallback", "handover"})
# An answer time beyond a day is a clock error, not a measurement.
MAX_LATENCY_MS = 86_400_000
# Turns the embed job takes at once (one forward pass of the model per batch).
EMBED_BATCH = 256

INSERT_LOGGED = """
WITH turn AS (
    INSERT INTO conversation_memory (shop_id, client_turn_id, conversation_id, user_id, channel,
                                     question, answer, tier, confidence, metadata, created_at,
                                     logged)
    SELECT $1, t.client_id, t.conversation_id, t.user_id, t.channel, t.question, t.answer,
           t.tier, t.confidence, t.metadata::jsonb, t.at, true
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::real[], $10::text[], $11::timestamptz[])
         AS t(client_id, conversation_id, user_id, channel, question, answer, tier, confidence,
              metadata, at)
    ON CONFLICT (shop_id, client_turn_id) WHERE client_turn_id IS NOT NULL DO NOTHING
    RETURNING id, client_turn_id, answer, tier, created_at
),
analytics AS (
    INSERT INTO response_analytics (shop_id, conversation_id, response_text, response_type,
                                    response_time_ms, ab_test_variant, metrics, created_at)
    SELECT $1, turn.id, turn.answer, turn.tier, t.latency_ms, t.variant,
           jsonb_build_object('logged', true, 'confidence', t.confidence), turn.created_at
    FROM turn JOIN unnest($2::text[], $12::integer[], $13::text[], $9::real[])
         AS t(client_id, latency_ms, variant, confidence) ON t.client_id = turn.client_turn_id
)
SELECT id, client_turn_id FROM turn
"""
SELECT_BY_CLIENT_ID = """
SELECT id, client_turn_id FROM conversation_memory
WHERE shop_id = $1 AND client_turn_id = ANY($2::text[])
"""
CLAIM_UNEMBEDDED = """
SELECT shop_id, id, question FROM conversation_memory
WHERE logged AND embedding IS NULL
ORDER BY created_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
# One turn at a time, each gap in a transaction of its own: a batch of gaps in one transaction
# would hold the shop's queue lock (and a live fallback waiting on it) for the whole batch.
CLAIM_GAP = """
SELECT id, shop_id, conversation_id, question, tier, confidence, embedding
FROM conversation_memory
WHERE logged AND metadata ? 'gap_pending' AND embedding IS NOT NULL
ORDER BY created_at
LIMIT 1
FOR UPDATE SKIP LOCKED
"""
GAP_OPENED = """
UPDATE conversation_memory SET metadata = metadata - 'gap_pending' WHERE shop_id = $1 AND id = $2
"""
SET_EMBEDDINGS = """
UPDATE conversation_memory AS m SET embedding = t.embedding
FROM unnest($1::integer[], $2::uuid[], $3::vector[]) AS t(shop_id, id, embedding)
WHERE m.shop_id = t.shop_id AND m.id = t.id
"""
SELECT_CONVERSATION = """
SELECT id, client_turn_id, conversation_id, user_id, channel, question, answer, tier,
       confidence, sources, logged, created_at
FROM conversation_memory
WHERE shop_id = $1 AND conversation_id = $2
ORDER BY created_at, id
LIMIT $3
"""
FEEDBACK_OF_TURNS = """
SELECT id, conversation_id AS turn_id, feedback_type, rating, reason, created_at
FROM conversation_feedback WHERE shop_id = $1 AND conversation_id = ANY($2::uuid[])
ORDER BY created_at, id
"""
CORRECTIONS_OF_TURNS = """
SELECT id, conversation_id AS turn_id, corrected_answer, priority, created_at
FROM owner_corrections WHERE shop_id = $1 AND conversation_id = ANY($2::uuid[])
ORDER BY created_at, id
"""
MAX_CONVERSATION_TURNS = 1_000


@dataclass(frozen=True, slots=True)
class LoggedTurn:
    turn_id: str                  # the client's own id: a retried batch is not stored twice
    conversation_id: str
    message: str
    answer: str
    confidence: float
    user_id: str | None = None
    channel: str = "chat"
    tier: str | None = None
    handed_over: bool = False
    ab_variant: str | None = None
    asked_at: datetime | None = None
    answered_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Logged:
    stored: int
    already: int
    turn_ids: dict[str, UUID]


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC (so naive and aware times can be compared)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def tier_of(turn: LoggedTurn, shop: Shop) -> str:
    """The tier the bot's confidence puts a logged turn in, as for answered ones."""
    if turn.handed_over:
        return "handover"
    if turn.tier is not None:
        return turn.tier
    if turn.confidence >= shop.answer_threshold:
        return "answer"
    if turn.confidence >= shop.options_threshold:
        return "options"
    return "clarify"


def _checked(rt: Runtime, number: int, t: LoggedTurn) -> None:
    where = f"turns[{number}]"
    for name, value, limit in (("turn_id", t.turn_id, MAX_ID),
                               ("conversation_id", t.conversation_id, MAX_ID),
                               ("user_id", t.user_id, MAX_ID),
                               ("message", t.message, rt.settings.max_question_chars),
                               ("answer", t.answer, rt.settings.max_answer_chars)):
        if value is None:
            continue
        if "\x00" in value:
            raise Invalid(f"{where}.{name} contains a NUL character", field=f"{where}.{name}")
        if len(value) > limit:
            raise Invalid(f"{where}.{name} is longer than {limit} characters",
                          field=f"{where}.{name}", limit=limit)
    if not t.turn_id.strip() or not t.conversation_id.strip() or not t.message.strip():
        raise Invalid(f"{where}: turn_id, conversation_id and message are not empty",
                      field=where)
    if not 0.0 <= t.confidence <= 1.0:
        raise Invalid(f"{where}.confidence is between 0 and 1", field=f"{where}.confidence")
    if t.tier is not None and t.tier not in TIERS:
        raise Invalid(f"{where}.tier is one of {', '.join(TIERS)}", field=f"{where}.tier")


async def log_turns(rt: Runtime, shop: Shop, turns: list[LoggedTurn]) -> Logged:
    """Store a batch of turns the bot handled; turns whose id was stored before are skipped."""
    if not turns:
        raise Invalid("a batch has at least one turn", field="turns")
    if len(turns) > MAX_TURNS_PER_BATCH:
        raise Invalid(f"a batch has at most {MAX_TURNS_PER_BATCH} turns", field="turns",
                      limit=MAX_TURNS_PER_BATCH)
    seen: set[str] = set()
    for number, t in enumerate(turns):
        _checked(rt, number, t)
        if t.turn_id in seen:
            raise Invalid(f"turn_id {t.turn_id!r} appears twice in the batch", field="turns")
        seen.add(t.turn_id)
    now = datetime.now(UTC)
    redact = rt.redactor.redact
    asked = [_utc(t.asked_at) for t in turns]
    answered = [_utc(t.answered_at) for t in turns]
    questions = [redact(t.message.strip()) for t in turns]
    answers = [redact(t.answer) for t in turns]
    latency = [None if a is None or b is None
               else min(MAX_LATENCY_MS, max(0, int((b - a).total_seconds() * 1000)))
               for a, b in zip(asked, answered, strict=True)]
    tiers = [tier_of(t, shop) for t in turns]
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            INSERT_LOGGED, shop.id, [t.turn_id for t in turns],
            [t.conversation_id for t in turns], [t.user_id for t in turns],
            [t.channel for t in turns], [q.text for q in questions], [a.text for a in answers],
            tiers, [t.confidence for t in turns],
            [json.dumps({**t.metadata, "redacted": {**q.counts, **a.counts},
                         **({"gap_pending": True} if tier in GAP_TIERS else {})})
             for t, q, a, tier in zip(turns, questions, answers, tiers, strict=True)],
            # Turns without a time keep the batch's order (a microsecond apart).
            [b or a or now + timedelta(microseconds=i)
             for i, (a, b) in enumerate(zip(asked, answered, strict=True))], latency,
            [t.ab_variant for t in turns])
        ids = {str(r["client_turn_id"]): r["id"] for r in rows}
        missing = [t.turn_id for t in turns if t.turn_id not in ids]
        if missing:  # stored by an earlier try of this batch
            for r in await conn.fetch(SELECT_BY_CLIENT_ID, shop.id, missing):
                ids[str(r["client_turn_id"])] = r["id"]
    return Logged(stored=len(rows), already=len(turns) - len(rows), turn_ids=ids)


async def embed_logged(rt: Runtime) -> tuple[int, int]:
    """Give logged questions their vectors, and open a knowledge gap for each turn the bot was
    unsure of, fell back on or handed over: (turns embedded, gaps submitted)."""
    embedded = gaps = 0
    while True:
        async with rt.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_UNEMBEDDED, EMBED_BATCH)
            if not rows:
                break
            vectors = await rt.embedder.embed_many([r["question"] or "" for r in rows])
            await conn.execute(SET_EMBEDDINGS, [r["shop_id"] for r in rows],
                               [r["id"] for r in rows], [ArrayItem(v) for v in vectors])
        embedded += len(rows)
    shops: dict[int, Shop] = {}
    while True:
        async with rt.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(CLAIM_GAP)
            if row is None:
                break
            # The gap and the turn's mark commit together: each turn opens its gap once.
            if row["question"]:
                shop = shops.get(row["shop_id"]) or await get_shop(conn, row["shop_id"])
                shops[shop.id] = shop
                handover = row["tier"] == "handover"
                await submit(rt, shop, ItemDraft(
                    kind="gap", source_type="handover" if handover else "gap",
                    question=row["question"], source_id=row["id"],
                    priority="high" if handover else "normal",
                    metadata={"turn_id": str(row["id"]),
                              "conversation_id": row["conversation_id"], "logged": True,
                              "confidence": row["confidence"]}),
                    SYSTEM, conn=conn, vector=row["embedding"])
                gaps += 1
            await conn.execute(GAP_OPENED, row["shop_id"], row["id"])
    return embedded, gaps


async def conversation(conn: Queryable, shop_id: int, conversation_id: str) -> dict[str, Any]:
    """A conversation's turns, answered and logged, each with its feedback and corrections."""
    rows = await conn.fetch(SELECT_CONVERSATION, shop_id, conversation_id,
                            MAX_CONVERSATION_TURNS)
    if not rows:
        raise NotFound(f"no conversation {conversation_id!r}")
    ids = [r["id"] for r in rows]
    feedback: dict[UUID, list[dict[str, Any]]] = {}
    for f in await conn.fetch(FEEDBACK_OF_TURNS, shop_id, ids):
        feedback.setdefault(f["turn_id"], []).append(
            {"id": str(f["id"]), "type": f["feedback_type"], "rating": f["rating"],
             "reason": f["reason"], "created_at": f["created_at"].isoformat()})
    corrections: dict[UUID, list[dict[str, Any]]] = {}
    for c in await conn.fetch(CORRECTIONS_OF_TURNS, shop_id, ids):
        corrections.setdefault(c["turn_id"], []).append(
            {"id": str(c["id"]), "corrected_answer": c["corrected_answer"],
             "priority": c["priority"], "created_at": c["created_at"].isoformat()})
    return {"conversation_id": conversation_id, "turns": [
        {"turn_id": str(r["id"]), "client_turn_id": r["client_turn_id"],
         "user_id": r["user_id"], "channel": r["channel"], "question": r["question"],
         "answer": r["answer"], "tier": r["tier"],
         "confidence": None if r["confidence"] is None else round(float(r["confidence"]), 4),
         "sources": r["sources"], "logged": r["logged"],
         "created_at": r["created_at"].isoformat(),
         "feedback": feedback.get(r["id"], []), "corrections": corrections.get(r["id"], [])}
        for r in rows]}
