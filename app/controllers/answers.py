"""The bot's path: answers and ranked search results."""

from __future__ import annotations

import time
from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import MAX_QUERY_CHARS, ShopParam
from app.observability import ANSWERS
from app.schemas import AnswerIn, AnswerOut, SearchOut, SourceOut
from knowledge.access import Action
from knowledge.answering.answer import Question, answer_question
from knowledge.answering.retrieval import search
from knowledge.errors import Invalid


class AnswerController(Controller):
    path = "/v1"
    tags = ("answers",)

    @post("/answer", status_code=200, summary="Answer a customer's question")
    async def answer(self, state: State, principal: Caller, data: JSONBody[AnswerIn],
                     shop: ShopParam = None) -> AnswerOut:
        started = time.perf_counter()
        target = await resolve_shop(state, principal, Action.ANSWER, shop)
        result = await answer_question(runtime_of(state), target, Question(
            text=data.question, conversation_id=data.conversation_id, user_id=data.user_id,
            channel=data.channel, ab_variant=data.ab_variant, metadata=data.metadata,
            learn=data.learn))
        ANSWERS.labels(tier=result.tier).inc()
        return AnswerOut(
            turn_id=result.turn_id, conversation_id=result.conversation_id, tier=result.tier,
            confidence=result.confidence, answer=result.text,
            fallback=result.fallback, scope=result.scope,
            sources=[SourceOut.of(c) for c in result.sources],
            options=[SourceOut.of(c) for c in result.options],
            latency_ms=round((time.perf_counter() - started) * 1000, 2))

    @get("/search", summary="Rank a shop's knowledge for a query, without composing an answer")
    async def search(self, state: State, principal: Caller,
                     q: Annotated[str, QueryParameter(min_length=1, max_length=MAX_QUERY_CHARS)],
                     limit: Annotated[int, QueryParameter(ge=1, le=50)] = 10,
                     shop: ShopParam = None) -> SearchOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.ANSWER, shop)
        text = q.strip()
        if not text:
            raise Invalid("the query is empty", field="q")
        if len(text) > rt.settings.max_question_chars:
            raise Invalid(f"the query is longer than {rt.settings.max_question_chars} "
                          "characters", field="q", limit=rt.settings.max_question_chars)
        vector = await rt.embedder.embed(text)
        result = await search(rt, target.id, text, vector, limit=limit)
        return SearchOut(query=text, results=[SourceOut.of(c) for c in result.candidates],
                         path=result.path)
