"""Signals from bots and owners: feedback on answered turns and owner corrections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from knowledge.access import Principal
from knowledge.answering.turn_log import turn_log_of
from knowledge.errors import Invalid, NotFound
from knowledge.learning.queue import (
    NEGATIVE_FEEDBACK_CONFIDENCE,
    PRIORITY_CONFIDENCE,
    ItemDraft,
    Submitted,
    settle_turn_items,
    submit,
)
from knowledge.redaction import Redactor
from knowledge.runtime import Runtime
from knowledge.store.db import Conn, in_transaction
from knowledge.store.shops import Shop

FEEDBACK_TYPES = ("thumbs_up", "thumbs_down", "star_rating", "emoji")
POSITIVE_EMOJI = frozenset(["👍", "😀", "😃", "😄", "😊", "🙂", "😍", "❤️", "🎉", "👏", "🙏"])
NEGATIVE_EMOJI = frozenset(["👎", "😡", "😠", "😞", "🙁", "☹️", "😢", "😤", "🤬", "💩"])
MAX_REASON = 2_000

SELECT_TURN = """
SELECT id, question, answer, tier, sources, embedding FROM conversation_memory
WHERE shop_id = $1 AND id = $2
"""
INSERT_FEEDBACK = """
INSERT INTO conversation_feedback (shop_id, conversation_id, feedback_type, rating, reason,
                                   metadata)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id
"""
COUNT_HELPFULNESS = """
INSERT INTO entry_stats (entry_id, shop_id, helpful, unhelpful)
SELECT e, $1, $3, $4 FROM unnest($2::uuid[]) AS e ORDER BY e
ON CONFLICT (shop_id, entry_id) DO UPDATE
SET helpful = entry_stats.helpful + EXCLUDED.helpful,
    unhelpful = entry_stats.unhelpful + EXCLUDED.unhelpful, updated_at = now()
"""
INSERT_CORRECTION = """
INSERT INTO owner_corrections (shop_id, conversation_id, question, original_response,
                               corrected_answer, priority, correction_context, metadata,
                               created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    feedback_id: UUID
    sentiment: str                 # positive | negative | neutral
    queued: Submitted | None


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    correction_id: UUID
    queued: Submitted


def sentiment_of(feedback_type: str, rating: int | None, emoji: str | None) -> str:
    """Thumbs down or a rating of 2 or less is negative; thumbs up or 4 and more positive."""
    if feedback_type == "thumbs_up":
        return "positive"
    if feedback_type == "thumbs_down":
        return "negative"
    if feedback_type == "star_rating":
        if rating is None or not 1 <= rating <= 5:
            raise Invalid("a star rating is 1 to 5", field="rating", minimum=1, maximum=5)
        return "negative" if rating <= 2 else "positive" if rating >= 4 else "neutral"
    if feedback_type == "emoji":
        if not emoji:
            raise Invalid("emoji feedback names the emoji", field="emoji")
        if emoji in NEGATIVE_EMOJI:
            return "negative"
        return "positive" if emoji in POSITIVE_EMOJI else "neutral"
    raise Invalid(f"feedback type is one of {', '.join(FEEDBACK_TYPES)}", field="type")


async def _turn(conn: Conn, shop_id: int, turn_id: UUID) -> Any:
    turn = await conn.fetchrow(SELECT_TURN, shop_id, turn_id)
    if turn is None:
        raise NotFound(f"no answered turn {turn_id}")
    return turn


async def record_feedback(rt: Runtime, shop: Shop, redactor: Redactor, actor: Principal, *,
                          turn_id: UUID, feedback_type: str, rating: int | None = None,
                          emoji: str | None = None, reason: str | None = None) -> FeedbackResult:
    """Store feedback on a turn; negative feedback asks for a better answer in the queue."""
    sentiment = sentiment_of(feedback_type, rating, emoji)
    if reason is not None and len(reason) > MAX_REASON:
        raise Invalid(f"the reason is longer than {MAX_REASON} characters", field="reason",
                      limit=MAX_REASON)
    clean = redactor.redact(reason)
    # Feedback may come the moment the answer did, before its turn reached the log.
    await turn_log_of(rt).settled(turn_id)

    async def work(conn: Conn) -> FeedbackResult:
        turn = await _turn(conn, shop.id, turn_id)
        served = [UUID(s["entry_id"]) for s in turn["sources"]]
        feedback_id = await conn.fetchval(
            INSERT_FEEDBACK, shop.id, turn_id, feedback_type, rating, clean.text or None,
            {"emoji": emoji, "sentiment": sentiment, "redacted": clean.counts})
        queued = None
        if sentiment == "negative" and turn["question"]:
            # After a fallback there was no answer to improve: the owner is asked for one.
            gap = turn["tier"] == "fallback" or not served
            queued = await submit(rt, shop, ItemDraft(
                kind="gap" if gap else "improve", source_type="feedback",
                question=turn["question"], source_id=feedback_id,
                confidence=NEGATIVE_FEEDBACK_CONFIDENCE,
                target_entry_id=None if gap else served[0],
                metadata={"turn_id": str(turn_id), "answer_given": turn["answer"],
                          "reason": clean.text or None}), actor, conn=conn,
                # The turn's question was embedded when it was answered.
                vector=turn["embedding"])
        if served and sentiment != "neutral":
            # Last, and in entry order: concurrent feedback on the same entries then waits
            # for these row locks instead of deadlocking with them.
            top = served[:1] if turn["tier"] == "answer" else served
            await conn.execute(COUNT_HELPFULNESS, shop.id, top,
                               int(sentiment == "positive"), int(sentiment == "negative"))
        return FeedbackResult(feedback_id, sentiment, queued)

    return await in_transaction(rt.pool, work)


async def record_correction(rt: Runtime, shop: Shop, redactor: Redactor, actor: Principal, *,
                            corrected_answer: str, priority: str = "normal",
                            turn_id: UUID | None = None, question: str | None = None,
                            original_response: str | None = None,
                            context: str | None = None) -> CorrectionResult:
    """Store an owner's correction; it becomes a queue item whose confidence follows its
    priority (low 70, normal 80, high 90, urgent 95)."""
    if priority not in PRIORITY_CONFIDENCE:
        raise Invalid("priority is one of low, normal, high, urgent", field="priority")
    limit = rt.settings.max_answer_chars
    for name, value in (("corrected_answer", corrected_answer), ("context", context),
                        ("original_response", original_response)):
        if value is not None and len(value) > limit:
            raise Invalid(f"{name} is longer than {limit} characters", field=name, limit=limit)
    if question is not None and len(question) > rt.settings.max_question_chars:
        raise Invalid(f"question is longer than {rt.settings.max_question_chars} characters",
                      field="question", limit=rt.settings.max_question_chars)
    answer = redactor.redact(corrected_answer.strip())
    if not answer.text:
        raise Invalid("the corrected answer is empty", field="corrected_answer")
    if turn_id is not None:
        await turn_log_of(rt).settled(turn_id)

    async def work(conn: Conn) -> CorrectionResult:
        target: UUID | None = None
        asking, given = question, original_response
        if turn_id is not None:
            turn = await _turn(conn, shop.id, turn_id)
            asking = asking or turn["question"]
            given = given or turn["answer"]
            if turn["sources"] and turn["tier"] == "answer":
                target = UUID(turn["sources"][0]["entry_id"])
        if not asking or not asking.strip():
            raise Invalid("a correction names the question (or the turn it corrects)",
                          field="question")
        asked = redactor.redact(asking.strip())
        original = redactor.redact(given)
        note = redactor.redact(context)
        # Limits hold for what is stored: redaction can lengthen a text a little.
        for name, value, most in (("question", asked.text, rt.settings.max_question_chars),
                                  ("corrected_answer", answer.text, limit)):
            if len(value) > most:
                raise Invalid(f"{name} is longer than {most} characters once redacted",
                              field=name, limit=most)
        redacted = {k: v for r in (answer, asked, original, note) for k, v in r.counts.items()}
        correction_id = await conn.fetchval(
            INSERT_CORRECTION, shop.id, turn_id, asked.text, original.text or None, answer.text,
            priority, note.text or None, {"redacted": redacted}, actor.key_id)
        queued = await submit(rt, shop, ItemDraft(
            kind="answer", source_type="correction", question=asked.text, answer=answer.text,
            source_id=correction_id, confidence=PRIORITY_CONFIDENCE[priority],
            priority=priority, target_entry_id=target,
            metadata={"context": note.text or None, "original_response": original.text or None,
                      **({"turn_id": str(turn_id)} if turn_id else {})}), actor, conn=conn)
        if turn_id is not None:
            await settle_turn_items(conn, shop.id, turn_id, queued, actor)
        return CorrectionResult(correction_id, queued)

    return await in_transaction(rt.pool, work)
