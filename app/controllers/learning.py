"""Signals in: feedback on answers, owner corrections, manual suggestions."""

from __future__ import annotations

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import ShopParam
from app.schemas import (
    CorrectionIn,
    CorrectionOut,
    FeedbackIn,
    FeedbackOut,
    QueueItemOut,
    SubmittedOut,
    SuggestionIn,
)
from knowledge.access import Action
from knowledge.errors import Invalid
from knowledge.learning.queue import ItemDraft, Submitted, submit
from knowledge.learning.signals import record_correction, record_feedback


def submitted_out(s: Submitted) -> SubmittedOut:
    return SubmittedOut(s.outcome, s.auto_approved,
                        QueueItemOut.of(s.item) if s.item is not None else None)


class LearningController(Controller):
    path = "/v1"
    tags = ("learning",)

    @post("/feedback", summary="Thumbs, stars or an emoji on an answered turn")
    async def feedback(self, state: State, principal: Caller, data: JSONBody[FeedbackIn],
                       shop: ShopParam = None) -> FeedbackOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.FEEDBACK, shop)
        result = await record_feedback(
            rt, target, rt.redactor, principal, turn_id=data.turn_id,
            feedback_type=data.type, rating=data.rating, emoji=data.emoji, reason=data.reason)
        return FeedbackOut(result.feedback_id, result.sentiment,
                           submitted_out(result.queued) if result.queued else None)

    @post("/corrections", summary="An owner's corrected answer for a turn or a question")
    async def correction(self, state: State, principal: Caller, data: JSONBody[CorrectionIn],
                         shop: ShopParam = None) -> CorrectionOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.CORRECT, shop)
        result = await record_correction(
            rt, target, rt.redactor, principal, corrected_answer=data.corrected_answer,
            priority=data.priority, turn_id=data.turn_id, question=data.question,
            original_response=data.original_response, context=data.context)
        return CorrectionOut(result.correction_id, submitted_out(result.queued))

    @post("/knowledge/suggestions", summary="A manual learning item (question and answer)")
    async def suggestion(self, state: State, principal: Caller, data: JSONBody[SuggestionIn],
                         shop: ShopParam = None) -> SubmittedOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.CORRECT, shop)
        s = rt.settings
        if len(data.question) > s.max_question_chars:
            raise Invalid(f"question is longer than {s.max_question_chars} characters",
                          field="question", limit=s.max_question_chars)
        if len(data.answer) > s.max_answer_chars or not data.answer.strip():
            raise Invalid(f"an answer is 1 to {s.max_answer_chars} characters", field="answer",
                          limit=s.max_answer_chars)
        question = rt.redactor.redact(data.question.strip())
        answer = rt.redactor.redact(data.answer.strip())
        if not question.text:
            raise Invalid("the question is empty", field="question")
        for name, value, limit in (("question", question.text, s.max_question_chars),
                                   ("answer", answer.text, s.max_answer_chars)):
            if len(value) > limit:
                raise Invalid(f"{name} is longer than {limit} characters once redacted",
                              field=name, limit=limit)
        result = await submit(rt, target, ItemDraft(
            kind="answer", source_type="manual", question=question.text, answer=answer.text,
            confidence=data.confidence, category=data.category,
            metadata={"redacted": {**question.counts, **answer.counts}}), principal)
        return submitted_out(result)
