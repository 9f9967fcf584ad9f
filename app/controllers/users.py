"""A shop's customers: forgetting one."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete
from litestar.datastructures import State
from litestar.params import PathParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import ShopParam
from knowledge.access import Action
from knowledge.intake.erasure import erase_user

UserRef = Annotated[str, PathParameter(min_length=1, max_length=200)]


class UserController(Controller):
    path = "/v1/users"
    tags = ("privacy",)

    @delete("/{user_id:str}", status_code=200,
            summary="Forget a customer: their turns, transcripts, feedback and the queue items "
                    "built only from them; counts what was removed")
    async def erase(self, state: State, principal: Caller, user_id: UserRef,
                    shop: ShopParam = None) -> dict[str, Any]:
        target = await resolve_shop(state, principal, Action.CORRECT, shop)
        removed = await erase_user(runtime_of(state), target.id, user_id, principal)
        return {"user_id": user_id, "removed": removed}
