"""Knowledge entries: create, list, read, supersede, retire, history."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import Offset, ShopParam
from app.schemas import EntryIn, EntryOut, EntryPage, EntryPatch
from knowledge.access import Action
from knowledge.answering.retrieval import cache_of
from knowledge.store import entries


class KnowledgeController(Controller):
    path = "/v1/knowledge"
    tags = ("knowledge",)

    @post("/", summary="Add knowledge entries (one object or a list)")
    async def create(self, state: State, principal: Caller,
                     data: JSONBody[EntryIn | list[EntryIn]], shop: ShopParam = None
                     ) -> EntryOut | list[EntryOut]:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.WRITE_KNOWLEDGE, shop)
        items = data if isinstance(data, list) else [data]
        created = await entries.add_entries(rt, target.id, [
            entries.EntryDraft(answer=i.answer, question=i.question, variants=i.variants,
                               category=i.category, metadata=i.metadata) for i in items
        ], principal)
        cache_of(rt).forget(target.id)
        out = [EntryOut.of(e) for e in created]
        return out if isinstance(data, list) else out[0]

    @get("/", summary="List live knowledge entries")
    async def list_entries(self, state: State, principal: Caller, shop: ShopParam = None,
                           category: Annotated[str | None, QueryParameter(max_length=100)] = None,
                           document_id: FromQuery[UUID | None] = None,
                           limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                           offset: Offset = 0) -> EntryPage:
        target = await resolve_shop(state, principal, Action.READ_KNOWLEDGE, shop)
        items, total = await entries.list_entries(
            runtime_of(state).pool, target.id, category=category, document_id=document_id,
            limit=limit, offset=offset)
        return EntryPage([EntryOut.of(e) for e in items], total, limit, offset)

    @get("/{entry_id:uuid}", summary="One entry: its live version, or its last if retired")
    async def read(self, state: State, principal: Caller, entry_id: FromPath[UUID],
                   shop: ShopParam = None) -> EntryOut:
        target = await resolve_shop(state, principal, Action.READ_KNOWLEDGE, shop)
        return EntryOut.of(await entries.get_entry(runtime_of(state).pool, target.id, entry_id))

    @get("/{entry_id:uuid}/history", summary="Every version of an entry, oldest first")
    async def history(self, state: State, principal: Caller, entry_id: FromPath[UUID],
                      shop: ShopParam = None) -> list[EntryOut]:
        target = await resolve_shop(state, principal, Action.READ_KNOWLEDGE, shop)
        versions = await entries.history(runtime_of(state).pool, target.id, entry_id)
        return [EntryOut.of(e) for e in versions]

    @patch("/{entry_id:uuid}", summary="Change an entry: writes a new version")
    async def update(self, state: State, principal: Caller, entry_id: FromPath[UUID],
                     data: JSONBody[EntryPatch], shop: ShopParam = None) -> EntryOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.WRITE_KNOWLEDGE, shop)
        changes = {name: getattr(data, name) for name in ("question", "category")
                   if getattr(data, name) is not None}
        new = await entries.supersede_entry(
            rt, target.id, entry_id, principal, answer=data.answer, variants=data.variants,
            metadata=data.metadata, reason=data.reason, expected_version=data.expected_version,
            **changes)
        cache_of(rt).forget(target.id)
        return EntryOut.of(new)

    @delete("/{entry_id:uuid}", status_code=200, summary="Retire an entry (history stays)")
    async def retire(self, state: State, principal: Caller, entry_id: FromPath[UUID],
                     shop: ShopParam = None,
                     reason: Annotated[str | None, QueryParameter(max_length=1000)] = None
                     ) -> EntryOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.WRITE_KNOWLEDGE, shop)
        retired = await entries.retire_entry(rt, target.id, entry_id, principal, reason)
        cache_of(rt).forget(target.id)
        return EntryOut.of(retired)
