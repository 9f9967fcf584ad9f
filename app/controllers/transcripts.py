"""Voice transcripts: bots and owners send calls in; owners read what they taught."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import MAX_QUERY_CHARS, Offset, ShopParam
from app.intake_schemas import TranscriptIn, TranscriptOut, TranscriptPage
from knowledge.access import Action
from knowledge.intake import transcripts


class TranscriptController(Controller):
    path = "/v1/transcripts"
    tags = ("transcripts",)

    @post("/", status_code=201,
          summary="A call's transcript (plain speaker-labelled text, JSON turns, WebVTT or "
                  "SRT): stored redacted; its question/answer pairs enter the learning queue")
    async def ingest(self, state: State, principal: Caller, data: JSONBody[TranscriptIn],
                     shop: ShopParam = None) -> TranscriptOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.FEEDBACK, shop)
        done = await transcripts.ingest(rt, target, data.to_domain(), principal)
        a = done.analysis
        return TranscriptOut(
            id=done.id, created_at=done.created_at, format=done.format, sentiment=a.sentiment,
            summary=a.summary, entities=a.entities,
            pairs=[{"question": p.question, "answer": p.answer, "start": p.start,
                    "end": p.end, "answered_by": p.speaker} for p in a.pairs],
            unanswered=a.unanswered, bot_answered=a.bot_answered,
            turn_sentiments=a.turn_sentiments, queued=done.outcomes,
            needs_review=a.sentiment == "negative")

    @get("/", summary="The shop's transcripts, newest first, or nearest in meaning to q")
    async def list_transcripts(
            self, state: State, principal: Caller, shop: ShopParam = None,
            q: Annotated[str | None, QueryParameter(max_length=MAX_QUERY_CHARS)] = None,
            sentiment: Annotated[str | None, QueryParameter(max_length=20)] = None,
            needs_review: FromQuery[bool | None] = None,
            limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
            offset: Offset = 0) -> TranscriptPage:
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        found, total = await transcripts.list_transcripts(
            runtime_of(state), target.id, q, sentiment, needs_review, limit, offset)
        return TranscriptPage(found, total, limit, offset)

    @get("/{transcript_id:uuid}",
         summary="One transcript: turns, pairs, sentiments, entities and what each pair "
                 "became in the queue")
    async def read(self, state: State, principal: Caller, transcript_id: FromPath[UUID],
                   shop: ShopParam = None) -> dict[str, Any]:
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        return await transcripts.get_transcript(runtime_of(state).pool, target.id,
                                                transcript_id)

    @post("/{transcript_id:uuid}/reviewed", status_code=204,
          summary="A person has looked at this (negative) call")
    async def reviewed(self, state: State, principal: Caller, transcript_id: FromPath[UUID],
                       shop: ShopParam = None) -> None:
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        await transcripts.mark_reviewed(runtime_of(state), target.id, transcript_id,
                                        principal)
