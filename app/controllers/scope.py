"""What a shop does not do: its out-of-scope examples, and its calibrated fallback decision."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of, shop_cache_of
from app.controllers.params import Offset, ShopParam
from app.controllers.shops import ShopRef
from app.schemas import CalibrationIn, OutOfScopeExampleIn, OutOfScopePage
from knowledge.access import Action
from knowledge.answering import scope
from knowledge.learning import out_of_scope
from knowledge.store.shops import Shop


async def _calibration(state: State, target: Shop) -> dict[str, Any]:
    current = await scope.read_calibration(runtime_of(state).pool, target.id)
    return current.as_dict(target.scope_strictness)


class CalibrationController(Controller):
    path = "/v1/shops/{shop_ref:str}/calibration"
    tags = ("scope",)

    @get("/", summary="The shop's calibrated fallback decision: what it was fitted on, its "
                      "weights and the strictness it is held to")
    async def read(self, state: State, principal: Caller, shop_ref: ShopRef) -> dict[str, Any]:
        target = await resolve_shop(state, principal, Action.REVIEW, shop_ref)
        return await _calibration(state, target)

    @post("/", status_code=200,
          summary="Recalibrate now (the calibrate job does it as knowledge changes); "
                  "optionally set the strictness")
    async def recalibrate(self, state: State, principal: Caller, shop_ref: ShopRef,
                          data: JSONBody[CalibrationIn | None] = None) -> dict[str, Any]:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.REVIEW, shop_ref)
        if data is not None and data.strictness is not None:
            target = await scope.set_strictness(rt, target, data.strictness, principal)
            shop_cache_of(state).forget(target.id)
        # Refits only when the shop changed since its last fit: asking again costs nothing.
        await scope.calibrate(rt, target.id)
        return await _calibration(state, target)


class OutOfScopeController(Controller):
    path = "/v1/out-of-scope"
    tags = ("scope",)

    @get("/", summary="Questions the shop's owner marked as not the shop's business")
    async def list_examples(self, state: State, principal: Caller, shop: ShopParam = None,
                            limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
                            offset: Offset = 0) -> OutOfScopePage:
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        examples, total = await out_of_scope.list_examples(runtime_of(state).pool, target.id, limit,
                                                    offset)
        return OutOfScopePage(examples, total, limit, offset)

    @post("/", status_code=201, summary="Mark a question as not the shop's business: similar "
                                        "questions are declined with the redirect")
    async def add(self, state: State, principal: Caller, data: JSONBody[OutOfScopeExampleIn],
                  shop: ShopParam = None) -> dict[str, Any]:
        target = await resolve_shop(state, principal, Action.CORRECT, shop)
        return await out_of_scope.add_example(runtime_of(state), target.id, data.question,
                                              data.redirect, principal)

    @delete("/{example_id:int}", status_code=204, summary="Forget an out-of-scope example")
    async def remove(self, state: State, principal: Caller, example_id: FromPath[int],
                     shop: ShopParam = None) -> None:
        target = await resolve_shop(state, principal, Action.CORRECT, shop)
        await out_of_scope.delete_example(runtime_of(state), target.id, example_id, principal)
