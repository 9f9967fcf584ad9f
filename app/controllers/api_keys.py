"""API keys: admins manage all keys; an owner manages its own shop's bot keys."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from app.auth import Caller, key_cache_of, resolve_shop, runtime_of
from app.controllers.params import Offset, ShopParam
from app.schemas import KeyIn, KeyOut, NewKeyOut
from knowledge.access import Action, Role, authorize
from knowledge.errors import NotFound
from knowledge.store import keys


class KeyController(Controller):
    path = "/v1/keys"
    tags = ("keys",)

    @post("/", summary="Create a key; its secret is shown in this response only")
    async def create(self, state: State, principal: Caller, data: JSONBody[KeyIn]) -> NewKeyOut:
        rt = runtime_of(state)
        role = Role(data.role)
        shop_id: int | None = None
        if role is not Role.ADMIN:
            action = Action.MANAGE_KEYS if role is Role.OWNER else Action.MANAGE_BOT_KEYS
            shop_id = (await resolve_shop(state, principal, action, data.shop)).id
        else:
            authorize(principal, Action.MANAGE_KEYS)
        made = await keys.create_key(rt.pool, role, shop_id, data.name, created_by=principal)
        return NewKeyOut(KeyOut.of(made.key), made.secret)

    @get("/", summary="List keys (never their secrets)")
    async def list_keys(self, state: State, principal: Caller, shop: ShopParam = None,
                        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
                        offset: Offset = 0) -> list[KeyOut]:
        rt = runtime_of(state)
        if principal.role is Role.ADMIN and shop is None:
            authorize(principal, Action.MANAGE_KEYS)
            found = await keys.list_keys(rt.pool, None, None, limit, offset)
        else:
            target = await resolve_shop(state, principal, Action.MANAGE_BOT_KEYS, shop)
            role = None if principal.role is Role.ADMIN else Role.BOT
            found = await keys.list_keys(rt.pool, target.id, role, limit, offset)
        return [KeyOut.of(k) for k in found]

    @delete("/{key_id:uuid}", status_code=200, summary="Revoke a key")
    async def revoke(self, state: State, principal: Caller, key_id: FromPath[UUID]) -> KeyOut:
        rt = runtime_of(state)
        key = await keys.get_key(rt.pool, key_id)
        if principal.role is not Role.ADMIN:
            authorize(principal, Action.MANAGE_BOT_KEYS)
            if key.shop_id != principal.shop_id or key.role is not Role.BOT:
                raise NotFound(f"no key {key_id}")
        revoked = await keys.revoke_key(rt.pool, key_id)
        key_cache_of(state).forget(key_id)
        return KeyOut.of(revoked)
