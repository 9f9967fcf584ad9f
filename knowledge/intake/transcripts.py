"""Voice transcripts in: stored redacted, analysed, and their question/answer pairs queued.

Each pair a customer asked and the shop's side answered enters the learning queue as a signal
of its own (deduplicated, merged with the same pair heard in other calls, auto-approved once
confident); a question nobody answered is a knowledge gap. A negative call raises the priority
of what it produced and is listed for review.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from knowledge.access import SYSTEM, Principal
from knowledge.errors import Conflict, Invalid, NotFound
from knowledge.intake.transcript_analysis import PRODUCT_CODE, Analysis, analyse
from knowledge.intake.transcript_formats import FORMATS, detect_format, parse
from knowledge.learning.queue import ItemDraft, Submitted, submit
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Conn, Queryable, in_transaction
from knowledge.store.shops import Shop, get_shop

# What staff said to a real customer is good evidence but not proof: below the default
# auto-approval (85); the same pair heard in three calls reaches it (+5 per observation).
PAIR_CONFIDENCE = 75
MAX_TRANSCRIPT_CHARS = 500_000
MAX_SHORT = 200
# The text a transcript is found by: its summary and the questions asked in it.
SEARCH_TEXT_CHARS = 2_000

# Codes the shop's live knowledge names, parsed as its full-text index parses them.
KNOWN_CODES = """
SELECT c AS l FROM unnest($2::text[]) AS c
WHERE EXISTS (SELECT 1 FROM knowledge_base_rag AS kb
              WHERE kb.shop_id = $1 AND kb.valid_to IS NULL
                AND kb.search_tsv @@ phraseto_tsquery('english', c))
"""
INSERT_TRANSCRIPT = """
INSERT INTO voice_transcripts (shop_id, conversation_key, user_id, transcript, processed_summary,
                               embedding, sentiment, entities, learning_insights, metadata,
                               format, needs_review, content_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (shop_id, content_sha256) WHERE content_sha256 IS NOT NULL DO NOTHING
RETURNING id, created_at
"""
SAME_CONTENT = """
SELECT id FROM voice_transcripts WHERE shop_id = $1 AND content_sha256 = $2
"""
# How many of a transcript's pairs and gaps are queued: each is queued in a transaction of
# its own that also records its outcome, so after a crash the rest are queued exactly once.
LOCK_TRANSCRIPT = """
SELECT jsonb_array_length(coalesce(learning_insights -> 'queued', '[]'::jsonb))
FROM voice_transcripts WHERE shop_id = $1 AND id = $2 FOR UPDATE
"""
RECORD_OUTCOME = """
UPDATE voice_transcripts
SET learning_insights = jsonb_set(learning_insights, '{queued}',
        coalesce(learning_insights -> 'queued', '[]'::jsonb) || jsonb_build_array($3::jsonb))
WHERE shop_id = $1 AND id = $2
"""
# Transcripts whose queuing stopped part-way (the process died, the database went away):
# older than a request could still be working on.
UNFINISHED = """
SELECT id, shop_id, sentiment, needs_review, learning_insights
FROM voice_transcripts
WHERE drafts_pending > 0 AND created_at < now() - make_interval(secs => $1)
ORDER BY created_at
LIMIT $2
"""
RESUME_AFTER_SECONDS = 60
_SUMMARY_COLUMNS = """id, shop_id, conversation_key, user_id, processed_summary, sentiment,
       entities, format, needs_review, reviewed_at, created_at"""
LIST_TRANSCRIPTS = f"""
SELECT {_SUMMARY_COLUMNS}, learning_insights -> 'pairs' AS pairs,
       CASE WHEN $2::vector IS NULL THEN NULL ELSE 1 - (embedding <=> $2) END AS similarity,
       count(*) OVER () AS total
FROM voice_transcripts
WHERE shop_id = $1 AND ($3::text IS NULL OR sentiment = $3)
  AND ($4::boolean IS NULL OR (needs_review AND reviewed_at IS NULL) = $4)
ORDER BY CASE WHEN $2::vector IS NULL THEN 0 ELSE embedding <=> $2 END, created_at DESC, id
LIMIT $5 OFFSET $6
"""
SELECT_TRANSCRIPT = f"""
SELECT {_SUMMARY_COLUMNS}, transcript, learning_insights, metadata
FROM voice_transcripts WHERE shop_id = $1 AND id = $2
"""
ITEMS_OF = """
SELECT id, status, kind, question, proposed_content, observations, confidence_score, priority
FROM learning_queue WHERE shop_id = $1 AND id = ANY($2::uuid[])
"""
MARK_REVIEWED = """
UPDATE voice_transcripts SET reviewed_at = now(), reviewed_by = $3
WHERE shop_id = $1 AND id = $2
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class TranscriptIn:
    transcript: str
    format: str | None = None
    filename: str | None = None
    conversation_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Ingested:
    id: UUID
    created_at: datetime
    format: str
    analysis: Analysis
    outcomes: list[dict[str, Any]]


def _short(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_SHORT or "\x00" in value:
        raise Invalid(f"{name} is at most {MAX_SHORT} characters of text", field=name,
                      limit=MAX_SHORT)
    return value


def _outcome(kind: str, question: str, submitted: Submitted) -> dict[str, Any]:
    item = submitted.item
    return {"kind": kind, "question": question, "outcome": submitted.outcome,
            "auto_approved": submitted.auto_approved,
            "item_id": None if item is None else str(item.id),
            "observations": None if item is None else item.observations}


async def ingest(rt: Runtime, shop: Shop, given: TranscriptIn, actor: Principal) -> Ingested:
    """Store a call's transcript redacted, analyse it and queue what it teaches."""
    if not given.transcript.strip():
        raise Invalid("the transcript is empty", field="transcript")
    if len(given.transcript) > MAX_TRANSCRIPT_CHARS:
        raise Invalid(f"a transcript is at most {MAX_TRANSCRIPT_CHARS} characters",
                      field="transcript", limit=MAX_TRANSCRIPT_CHARS)
    conversation = _short(given.conversation_id, "conversation_id")
    user = _short(given.user_id, "user_id")
    fmt = given.format or detect_format(given.transcript, given.filename)
    digest = hashlib.sha256(f"{fmt}\n{given.transcript}".encode()).hexdigest()
    async with rt.pool.acquire() as conn:
        earlier = await conn.fetchval(SAME_CONTENT, shop.id, digest)
    if earlier is not None:
        raise Conflict(f"this transcript was received before, as {earlier}",
                       transcript_id=str(earlier))
    # Phone numbers, e-mail addresses and the like never reach the database or the analysis.
    redacted = await asyncio.to_thread(rt.redactor.redact, given.transcript)
    # Reading and analysing a long call is CPU work: off the event loop.
    turns = await asyncio.to_thread(parse, redacted.text, fmt)
    candidates = sorted({m.group(0).lower() for t in turns
                         for m in PRODUCT_CODE.finditer(t.text)})
    async with rt.pool.acquire() as conn:
        known = ({r["l"] for r in await conn.fetch(KNOWN_CODES, shop.id, candidates)}
                 if candidates else set())
    analysis = await asyncio.to_thread(analyse, turns, known, redacted.counts)
    asked = " ".join(p.question for p in analysis.pairs) + " " + " ".join(analysis.unanswered)
    vector = await rt.embedder.embed((analysis.summary + " " + asked).strip()[:SEARCH_TEXT_CHARS]
                                     or redacted.text[:SEARCH_TEXT_CHARS])
    negative = analysis.sentiment == "negative"
    insights = {
        "turns": [{"speaker": t.speaker, "role": t.role, "text": t.text, "start": t.start,
                   "end": t.end} for t in turns],
        "pairs": [{"question": p.question, "answer": p.answer, "start": p.start, "end": p.end,
                   "answered_by": p.speaker, "excerpt": p.excerpt(turns)}
                  for p in analysis.pairs],
        "unanswered": analysis.unanswered, "bot_answered": analysis.bot_answered,
        "turn_sentiments": analysis.turn_sentiments, "queued": []}
    metadata = {**(given.metadata or {}), "speakers": analysis.speakers,
                "redacted": redacted.counts}
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            INSERT_TRANSCRIPT, shop.id, conversation, user, redacted.text,
            analysis.summary or None, vector, analysis.sentiment, analysis.entities, insights,
            metadata, fmt, negative, digest)
        if row is None:  # the same call, sent twice at once: the other request stored it
            raise Conflict("this transcript was received before", field="transcript")
        transcript_id: UUID = row["id"]
        await audit.record(conn, shop_id=shop.id, actor=actor, action="transcript.ingest",
                           subject_type="transcript", subject_id=transcript_id,
                           after={"format": fmt, "sentiment": analysis.sentiment,
                                  "pairs": len(analysis.pairs),
                                  "unanswered": len(analysis.unanswered)})
    outcomes = await queue_drafts(rt, shop, transcript_id,
                                  _drafts(rt, transcript_id, insights, analysis.sentiment,
                                          negative), actor)
    return Ingested(transcript_id, row["created_at"], fmt, analysis, outcomes)


def _drafts(rt: Runtime, transcript_id: UUID, insights: Mapping[str, Any], sentiment: str,
            negative: bool) -> list[tuple[str, str, ItemDraft]]:
    """What a call teaches, in a fixed order, from what is stored of it: its answered pairs,
    then the questions nobody answered."""
    priority = "high" if negative else "normal"
    s = rt.settings
    drafts = [("answer", pair["question"], ItemDraft(
        kind="answer", source_type="transcript", question=pair["question"][:s.max_question_chars],
        answer=pair["answer"][:s.max_answer_chars], source_id=transcript_id,
        confidence=PAIR_CONFIDENCE, priority=priority,
        metadata={"transcript_id": str(transcript_id), "start": pair["start"],
                  "end": pair["end"], "excerpt": pair["excerpt"], "call_sentiment": sentiment}))
        for pair in insights.get("pairs", [])]
    drafts += [("gap", question, ItemDraft(
        kind="gap", source_type="transcript", question=question[:s.max_question_chars],
        source_id=transcript_id, priority=priority,
        metadata={"transcript_id": str(transcript_id), "call_sentiment": sentiment}))
        for question in insights.get("unanswered", [])]
    return drafts


async def queue_drafts(rt: Runtime, shop: Shop, transcript_id: UUID,
                       drafts: list[tuple[str, str, ItemDraft]],
                       actor: Principal) -> list[dict[str, Any]]:
    """Queue a call's drafts not queued yet. Each is a signal of its own, deduplicated and
    committed as any other signal is, together with the record that it was queued, and only
    while its transcript exists (a customer erased meanwhile takes it along)."""
    outcomes: list[dict[str, Any]] = []
    for index, (kind, question, draft) in enumerate(drafts):
        async def queue(conn: Conn, index: int = index, kind: str = kind,
                        question: str = question,
                        draft: ItemDraft = draft) -> dict[str, Any] | None:
            done = await conn.fetchval(LOCK_TRANSCRIPT, shop.id, transcript_id)
            if done is None:
                raise _Gone
            if done > index:  # queued before a crash; not twice
                return None
            outcome = _outcome(kind, question, await submit(rt, shop, draft, actor, conn=conn))
            await conn.execute(RECORD_OUTCOME, shop.id, transcript_id, outcome)
            return outcome

        try:
            outcome = await in_transaction(rt.pool, queue)
        except _Gone:
            break
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


class _Gone(Exception):
    """The transcript was erased while its pairs were being queued."""


async def resume_queuing(rt: Runtime, limit: int = 100) -> int:
    """Queue what calls stored earlier did not get to queue; returns how many were queued."""
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(UNFINISHED, RESUME_AFTER_SECONDS, limit)
    queued = 0
    for row in rows:
        shop = await get_shop(rt.pool, row["shop_id"])
        queued += len(await queue_drafts(
            rt, shop, row["id"], _drafts(rt, row["id"], row["learning_insights"],
                                         row["sentiment"], row["needs_review"]), SYSTEM))
    return queued


def _listed(row: Mapping[str, Any]) -> dict[str, Any]:
    pairs = row["pairs"]
    if isinstance(pairs, str):
        pairs = json.loads(pairs)
    out = {"id": str(row["id"]), "conversation_id": row["conversation_key"],
           "user_id": row["user_id"], "summary": row["processed_summary"],
           "sentiment": row["sentiment"], "entities": row["entities"], "format": row["format"],
           "needs_review": bool(row["needs_review"]) and row["reviewed_at"] is None,
           "reviewed_at": row["reviewed_at"], "created_at": row["created_at"],
           "pairs": len(pairs or [])}
    if row["similarity"] is not None:
        out["similarity"] = round(float(row["similarity"]), 4)
    return out


async def list_transcripts(rt: Runtime, shop_id: int, q: str | None, sentiment: str | None,
                           needs_review: bool | None, limit: int,
                           offset: int) -> tuple[list[dict[str, Any]], int]:
    """The shop's transcripts, newest first, or nearest in meaning to `q`."""
    if sentiment is not None and sentiment not in {"positive", "neutral", "negative", "mixed"}:
        raise Invalid("sentiment is positive, neutral, negative or mixed", field="sentiment")
    vector = None
    if q is not None:
        if not q.strip() or len(q) > rt.settings.max_question_chars:
            raise Invalid(f"q is 1 to {rt.settings.max_question_chars} characters",
                          field="q", limit=rt.settings.max_question_chars)
        vector = await rt.embedder.embed(q.strip())
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(LIST_TRANSCRIPTS, shop_id, vector, sentiment, needs_review,
                                limit, offset)
    return [_listed(dict(r)) for r in rows], int(rows[0]["total"]) if rows else 0


async def get_transcript(conn: Queryable, shop_id: int, transcript_id: UUID) -> dict[str, Any]:
    """One transcript with its turns, pairs, entities and what each pair became in the queue
    (as the queue holds it now)."""
    row = await conn.fetchrow(SELECT_TRANSCRIPT, shop_id, transcript_id)
    if row is None:
        raise NotFound(f"no transcript {transcript_id}")
    insights = row["learning_insights"]
    queued = insights.get("queued", [])
    ids = [UUID(o["item_id"]) for o in queued if o.get("item_id")]
    items = {str(r["id"]): dict(r) for r in await conn.fetch(ITEMS_OF, shop_id, ids)} \
        if ids else {}
    for o in queued:
        now = items.get(o.get("item_id") or "")
        if now is not None:
            o["now"] = {"status": now["status"], "observations": now["observations"],
                        "confidence": now["confidence_score"], "priority": now["priority"]}
    return {**_listed({**dict(row), "pairs": insights.get("pairs", []), "similarity": None}),
            "transcript": row["transcript"], "turns": insights.get("turns", []),
            "pairs": insights.get("pairs", []), "unanswered": insights.get("unanswered", []),
            "bot_answered": insights.get("bot_answered", []),
            "turn_sentiments": insights.get("turn_sentiments", []), "queued": queued,
            "metadata": row["metadata"]}


async def mark_reviewed(rt: Runtime, shop_id: int, transcript_id: UUID,
                        actor: Principal) -> None:
    async with rt.pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(MARK_REVIEWED, shop_id, transcript_id, actor.key_id) is None:
            raise NotFound(f"no transcript {transcript_id}")
        await audit.record(conn, shop_id=shop_id, actor=actor, action="transcript.reviewed",
                           subject_type="transcript", subject_id=transcript_id)


def format_of(name: str | None) -> str | None:
    if name is not None and name not in FORMATS:
        raise Invalid(f"format is one of {', '.join(FORMATS)}", field="format")
    return name
