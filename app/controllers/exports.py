"""Streamed training exports for owners and admins."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter
from litestar.response import Stream

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import ShopParam
from knowledge.access import Action
from knowledge.errors import NotFound
from knowledge.learning.export import KINDS, export, media_type

ExportKind = Annotated[str, PathParameter(max_length=20, description=", ".join(KINDS))]


class ExportController(Controller):
    path = "/v1/export"
    tags = ("learning",)

    # Two media types under one status, which a ResponseSpec cannot say: the description does,
    # rather than the document claiming application/json for JSON Lines.
    @get("/{kind:str}", summary="qa: approved Q/A pairs (JSON Lines); preferences: DPO pairs "
                                "from corrections (JSON Lines); label-studio: review tasks",
         responses={200: ResponseSpec(None, description="qa and preferences: JSON Lines "
                                      "(application/x-ndjson); label-studio: a JSON list "
                                      "(application/json)")})
    async def export_kind(self, state: State, principal: Caller, kind: ExportKind,
                          shop: ShopParam = None) -> Stream:
        if kind not in KINDS:
            raise NotFound(f"no export {kind!r}; exports: {', '.join(KINDS)}")
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        suffix = "json" if kind == "label-studio" else "jsonl"
        return Stream(export(runtime_of(state), target.id, kind), media_type=media_type(kind),
                      headers={"Content-Disposition":
                               f'attachment; filename="{target.slug}-{kind}.{suffix}"'})
