"""Shops: admins create and configure them; an owner reads its own."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, patch, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of, shop_cache_of
from app.controllers.params import Offset
from app.schemas import ShopIn, ShopOut, ShopPatch
from knowledge.access import Action, authorize
from knowledge.store import shops

ShopRef = Annotated[str, PathParameter(max_length=63, description="shop id or slug")]


class ShopController(Controller):
    path = "/v1/shops"
    tags = ("shops",)

    @post("/", summary="Create a shop (admin)")
    async def create(self, state: State, principal: Caller, data: JSONBody[ShopIn]) -> ShopOut:
        authorize(principal, Action.MANAGE_SHOPS)
        return ShopOut.of(await shops.create_shop(runtime_of(state).pool, data.slug, data.name))

    @get("/", summary="List shops (admin: all; others: their own)")
    async def list_shops(self, state: State, principal: Caller,
                         limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
                         offset: Offset = 0) -> list[ShopOut]:
        if principal.shop_id is not None:
            return [ShopOut.of(await resolve_shop(state, principal, Action.READ_SHOP, None))]
        authorize(principal, Action.MANAGE_SHOPS)
        return [ShopOut.of(s) for s in await shops.list_shops(runtime_of(state).pool, limit,
                                                                offset)]

    @get("/{shop_ref:str}", summary="One shop and its settings")
    async def read(self, state: State, principal: Caller, shop_ref: ShopRef) -> ShopOut:
        return ShopOut.of(await resolve_shop(state, principal, Action.READ_SHOP, shop_ref))

    @patch("/{shop_ref:str}", summary="Change a shop's name or thresholds (admin)")
    async def update(self, state: State, principal: Caller, shop_ref: ShopRef,
                     data: JSONBody[ShopPatch]) -> ShopOut:
        target = await resolve_shop(state, principal, Action.MANAGE_SHOPS, shop_ref)
        optional = {name: getattr(data, name)
                    for name in ("retention_days", "rate_limit_per_second")
                    if getattr(data, name) is not msgspec.UNSET}
        changed = await shops.update_shop(
            runtime_of(state).pool, target.id, name=data.name,
            auto_approve_threshold=data.auto_approve_threshold,
            answer_threshold=data.answer_threshold, options_threshold=data.options_threshold,
            dedup_question_similarity=data.dedup_question_similarity,
            dedup_answer_ratio=data.dedup_answer_ratio, scope_strictness=data.scope_strictness,
            **optional)
        shop_cache_of(state).forget(target.id)
        return ShopOut.of(changed)
