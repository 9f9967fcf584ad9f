"""Whole conversations: the bot logs the turns it handled; owners read one back."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import ShopParam
from app.intake_schemas import BulkTurnsIn, BulkTurnsOut
from knowledge.access import Action
from knowledge.intake import conversations

ConversationRef = Annotated[str, PathParameter(max_length=200)]


class ConversationController(Controller):
    path = "/v1/conversations"
    tags = ("conversations",)

    @post("/bulk", status_code=200,
          summary="Log up to 1,000 turns the bot handled (idempotent on turn_id)")
    async def bulk(self, state: State, principal: Caller, data: JSONBody[BulkTurnsIn],
                   shop: ShopParam = None) -> BulkTurnsOut:
        target = await resolve_shop(state, principal, Action.ANSWER, shop)
        logged = await conversations.log_turns(runtime_of(state), target,
                                               [t.to_domain() for t in data.turns])
        return BulkTurnsOut(logged.stored, logged.already,
                            {k: str(v) for k, v in logged.turn_ids.items()})

    @get("/{conversation_id:str}",
         summary="A conversation's turns (answered and logged) with their feedback and "
                 "corrections")
    async def read(self, state: State, principal: Caller, conversation_id: ConversationRef,
                   shop: ShopParam = None) -> dict[str, Any]:
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        return await conversations.conversation(runtime_of(state).pool, target.id,
                                                conversation_id)
