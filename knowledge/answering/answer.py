"""Answering a bot's question: retrieve, judge confidence, compose in the shop's tone, log."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from knowledge.access import SYSTEM
from knowledge.answering import tone
from knowledge.answering.retrieval import Candidate, search
from knowledge.answering.scope import ScopeDecision, decide
from knowledge.answering.scope import cache_of as scope_cache_of
from knowledge.answering.turn_log import Turn, turn_log_of, write_turns
from knowledge.errors import Invalid
from knowledge.learning.queue import ItemDraft, submit
from knowledge.runtime import Runtime
from knowledge.store.db import Vector
from knowledge.store.shops import Shop

# A lead of MARGIN_FULL in evidence over the runner-up closes MARGIN_WEIGHT of the remaining
# gap; a lead under AMBIGUOUS_MARGIN takes up to AMBIGUITY_PENALTY of the runner-up's evidence off.
MARGIN_FULL = 0.3
MARGIN_WEIGHT = 0.3
AMBIGUOUS_MARGIN = 0.1
AMBIGUITY_PENALTY = 0.5
# A question this close to an earlier one in the same conversation is the same question again.
REPEAT_DISTANCE = 0.12
OPTIONS_SHOWN = 3

COUNT_REPEATS = """
SELECT count(*) FROM conversation_memory
WHERE shop_id = $1 AND conversation_id = $2
  AND created_at > now() - interval '2 hours'
  AND (embedding <=> $3 < $4
       -- a logged turn the embed job has not reached yet: the same words count
       OR (embedding IS NULL AND lower(question) = lower($5)))
"""


@dataclass(slots=True)
class Question:
    text: str
    conversation_id: str | None = None
    user_id: str | None = None
    channel: str = "chat"
    ab_variant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # False for test and monitoring traffic: the turn is logged, but a fallback opens no gap.
    learn: bool = True


@dataclass(frozen=True, slots=True)
class Answer:
    turn_id: uuid.UUID
    conversation_id: str
    tier: str                     # answer | options | clarify | fallback | decline | handover
    confidence: float
    text: str
    sources: list[Candidate]
    options: list[Candidate]
    repeats: int
    timings: dict[str, float]
    scope: dict[str, Any] = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        """No entry is offered: nothing fit, or the shop does not do this."""
        return self.tier in {"fallback", "decline"}


def confidence_of(best: Candidate | None, runner_up: Candidate | None = None) -> float:
    """How sure the evidence makes us that `best` answers the question, in [0, 1].

    The best entry's evidence (meaning and rare words) sets the base; a clear lead over the next
    entry adds to it, a near tie takes from it.
    """
    if best is None:
        return 0.0
    first = best.evidence
    second = runner_up.evidence if runner_up is not None else 0.0
    margin = max(0.0, first - second)
    boost = (1.0 - first) * MARGIN_WEIGHT * min(1.0, margin / MARGIN_FULL)
    # Two entries about equally supported: picking one would be a guess, so offer both.
    tie = AMBIGUITY_PENALTY * second * max(0.0, 1.0 - margin / AMBIGUOUS_MARGIN)
    return round(min(1.0, max(0.0, first + boost - tie)), 4)


def is_offered(candidate: Candidate, floor: float) -> bool:
    """Near enough, or sharing a rare word, to be named among the options of an answer."""
    near = candidate.similarity is not None and candidate.similarity >= floor
    return near or candidate.lexical_coverage > 0.0


def choose_tier(confidence: float, shop: Shop, repeats: int, scope: ScopeDecision) -> str:
    if repeats >= 3:
        return "handover"
    if scope.declined is not None:
        return "decline"
    if not scope.in_scope:
        return "fallback"
    if repeats == 2:
        return "options"
    if repeats == 1:
        return "clarify"
    if confidence >= shop.answer_threshold:
        return "answer"
    if confidence >= shop.options_threshold:
        return "options"
    return "clarify"


def compose(tier: str, question: str, candidates: list[Candidate], repeats: int,
            redirect: str | None = None) -> str:
    entries = [c.entry for c in candidates[:OPTIONS_SHOWN]]
    if tier == "answer":
        return tone.answer(question, entries[0])
    if tier == "options":
        return tone.options(entries)
    if tier == "clarify":
        return tone.repeated(entries) if repeats else tone.clarify(entries)
    if tier == "handover":
        return tone.handover()
    if tier == "decline":
        return tone.decline(redirect)
    return tone.fallback()


async def _count_repeats(rt: Runtime, shop_id: int, conversation_id: str | None,
                         vector: Vector, question: str) -> int:
    if conversation_id is None:
        return 0
    # The conversation's last turn may still be on its way to the log.
    await turn_log_of(rt).settled(conversation=(shop_id, conversation_id))
    async with rt.pool.acquire() as conn:
        return int(await conn.fetchval(COUNT_REPEATS, shop_id, conversation_id, vector,
                                       REPEAT_DISTANCE, question))


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _source_json(c: Candidate) -> dict[str, Any]:
    return {"entry_id": str(c.entry.entry_id), "knowledge_id": str(c.entry.id),
            "score": round(c.score, 6), "similarity": c.similarity}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the bot would answer, with every candidate retrieval ranked and the turn to log."""

    answer: Answer
    candidates: list[Candidate]
    turn: Turn
    redacted: dict[str, int]


async def answer_question(rt: Runtime, shop: Shop, q: Question) -> Answer:
    """Answer one question for a shop and log the turn."""
    evaluation = await evaluate(rt, shop, q)
    answer, turn = evaluation.answer, evaluation.turn
    if not (q.learn and answer.tier in {"fallback", "handover"}):
        # The bot gets its answer now; the turn is written right after (turn_log.py).
        await turn_log_of(rt).add(turn)
        return answer
    async with rt.pool.acquire() as conn, conn.transaction():
        # The gap's queue item points at its turn: both commit together.
        await write_turns(conn, [turn])
        # A question nothing answered is a knowledge gap; asked again and again in one
        # conversation, it is handed over. Either way the owner is asked for an answer, and
        # repeats of it gather into one item.
        await submit(rt, shop, ItemDraft(
            kind="gap", source_type="gap" if answer.tier == "fallback" else "handover",
            question=turn.question[:rt.settings.max_question_chars], source_id=turn.id,
            priority="high" if answer.tier == "handover" else "normal",
            metadata={"conversation_id": answer.conversation_id, "repeats": answer.repeats,
                      "redacted": evaluation.redacted}), SYSTEM, conn=conn,
            vector=turn.vector)
    return answer


async def evaluate(rt: Runtime, shop: Shop, q: Question) -> Evaluation:
    """Everything the bot does to answer, short of logging the turn: the review pages ask it
    to show what the bot would say."""
    started = time.perf_counter()
    text = q.text.strip()
    if not text:
        raise Invalid("the question is empty", field="question")
    # PostgreSQL stores no NUL character: refused here, not when the turn is logged.
    for name, value in (("question", text), ("conversation_id", q.conversation_id),
                        ("user_id", q.user_id), ("channel", q.channel),
                        ("ab_variant", q.ab_variant)):
        if value is not None and "\x00" in value:
            raise Invalid(f"{name} contains a NUL character", field=name)
    if _has_nul(q.metadata):
        raise Invalid("metadata contains a NUL character", field="metadata")
    if len(text) > rt.settings.max_question_chars:
        raise Invalid(f"the question is longer than {rt.settings.max_question_chars} characters",
                      field="question", limit=rt.settings.max_question_chars)
    vector = await rt.embedder.embed(text)
    embedded = time.perf_counter()
    # Nothing a customer wrote is stored unredacted.
    stored = rt.redactor.redact(text)
    scopes = scope_cache_of(rt)
    result, repeats, model, example = await asyncio.gather(
        search(rt, shop.id, text, vector, limit=OPTIONS_SHOWN + 2),
        _count_repeats(rt, shop.id, q.conversation_id, vector, stored.text),
        scopes.model(rt.pool, shop.id),
        scopes.nearest_example(rt.pool, shop.id, vector, rt.embedder.model_name),
    )
    best = result.candidates[0] if result.candidates else None
    # The strongest other candidate by plain evidence, wherever the order put it: when the
    # shop's whitened view prefers `best` but another entry has more plain evidence, that is a
    # near tie to be unsure about.
    runner_up = max(result.candidates[1:], key=lambda c: c.evidence, default=None)
    confidence = confidence_of(best, runner_up)
    # Whether the shop knows this at all, decided on the shop's own calibration.
    floor = rt.settings.fallback_min_similarity
    scope = decide(model, shop.scope_strictness, result.candidates, example, floor)
    relevant = [c for c in result.candidates if is_offered(c, floor)]
    if scope.in_scope and not relevant:
        # In scope by a lenient strictness, yet no entry near enough to name: nothing to show.
        scope = replace(scope, in_scope=False, decided_by="nothing_near")
    tier = choose_tier(confidence, shop, repeats, scope)
    reply = compose(tier, text, relevant, repeats,
                    scope.declined.redirect if scope.declined else None)
    sources = ([] if tier in {"fallback", "decline"} else
               relevant[:1] if tier == "answer" else relevant[:OPTIONS_SHOWN])
    options = relevant[:OPTIONS_SHOWN] if tier in {"options", "clarify"} else []
    turn_id = uuid.uuid4()
    conversation_id = q.conversation_id or str(uuid.uuid4())
    finished = time.perf_counter()
    timings = {"embed_ms": (embedded - started) * 1000, "sql_ms": result.sql_ms,
               "total_ms": (finished - started) * 1000}
    explained = scope.explain()
    metrics = {"confidence": confidence, "path": result.path, "repeats": repeats,
               "scope": explained,
               "sources": [_source_json(c) for c in sources], **{
                   k: round(v, 3) for k, v in timings.items()}}
    turn = Turn(id=turn_id, shop_id=shop.id, conversation_id=conversation_id,
                user_id=q.user_id, channel=q.channel, question=stored.text, answer=reply,
                tier=tier, confidence=confidence, sources=[_source_json(c) for c in sources],
                vector=vector, metadata=q.metadata, latency_ms=int(timings["total_ms"]),
                ab_variant=q.ab_variant, metrics=metrics)
    answer = Answer(turn_id=turn_id, conversation_id=conversation_id, tier=tier,
                    confidence=confidence, text=reply, sources=sources, options=options,
                    repeats=repeats, timings=timings, scope=explained)
    return Evaluation(answer, result.candidates, turn, stored.counts)
