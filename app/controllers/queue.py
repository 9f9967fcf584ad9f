"""Reviewing the learning queue (owners: their shop; admins: every shop) and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import Offset, ShopParam
from app.schemas import (
    AnswerGapIn,
    ApproveIn,
    AuditOut,
    BulkIn,
    BulkResult,
    CompareIn,
    CompareOut,
    ComparisonOut,
    MergeIn,
    OutOfScopeIn,
    OutOfScopeMarked,
    QueueItemOut,
    QueuePage,
    RejectIn,
)
from knowledge.access import Action, Principal, Role
from knowledge.learning import bulk, out_of_scope, review
from knowledge.learning.dedup import compare_questions
from knowledge.store import audit


async def _scope(state: State, principal: Principal, shop: str | None) -> int | None:
    """The shop to act in; None lets an admin act across all shops."""
    if principal.role is Role.ADMIN and shop is None:
        return None
    return (await resolve_shop(state, principal, Action.REVIEW, shop)).id


class QueueController(Controller):
    path = "/v1/queue"
    tags = ("queue",)

    @get("/", summary="List the learning queue with filters and sorting")
    async def list_queue(
            self, state: State, principal: Caller, shop: ShopParam = None,
            status: Annotated[str | None, QueryParameter(max_length=20)] = None,
            source: Annotated[str | None, QueryParameter(max_length=20)] = None,
            kind: Annotated[str | None, QueryParameter(max_length=20)] = None,
            priority: Annotated[str | None, QueryParameter(max_length=20)] = None,
            conflict: FromQuery[bool | None] = None, since: FromQuery[datetime | None] = None,
            until: FromQuery[datetime | None] = None,
            sort: Annotated[str, QueryParameter(max_length=20)] = "priority",
            limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
            offset: Offset = 0) -> QueuePage:
        shop_id = await _scope(state, principal, shop)
        views, total = await review.list_items(
            runtime_of(state).pool, shop_id,
            review.QueueFilter(status=status, source_type=source, kind=kind, conflict=conflict,
                               since=since, until=until, sort=sort, priority=priority),
            limit, offset)
        return QueuePage([QueueItemOut.of(v.item, v.nearest, v.conflict) for v in views],
                         total, limit, offset)

    @get("/{item_id:uuid}", summary="One item beside its nearest live knowledge")
    async def read(self, state: State, principal: Caller, item_id: FromPath[UUID],
                   shop: ShopParam = None) -> QueueItemOut:
        rt = runtime_of(state)
        shop_id = await _scope(state, principal, shop)
        item = await review.get_any(rt.pool, shop_id, item_id)
        view = (await review.with_knowledge(rt.pool, [item]))[0]
        return QueueItemOut.of(view.item, view.nearest, view.conflict)

    @post("/{item_id:uuid}/approve", status_code=200, summary="Approve, optionally edited")
    async def approve(self, state: State, principal: Caller, item_id: FromPath[UUID],
                      data: JSONBody[ApproveIn], shop: ShopParam = None) -> QueueItemOut:
        shop_id = await _scope(state, principal, shop)
        item = await review.approve(runtime_of(state), shop_id, item_id, principal,
                                    question=data.question, answer=data.answer,
                                    category=data.category, note=data.note)
        return QueueItemOut.of(item)

    @post("/{item_id:uuid}/answer", status_code=200, summary="Answer a knowledge gap")
    async def answer_gap(self, state: State, principal: Caller, item_id: FromPath[UUID],
                         data: JSONBody[AnswerGapIn], shop: ShopParam = None) -> QueueItemOut:
        shop_id = await _scope(state, principal, shop)
        item = await review.approve(runtime_of(state), shop_id, item_id, principal,
                                    answer=data.answer, category=data.category, gap_only=True)
        return QueueItemOut.of(item)

    @post("/{item_id:uuid}/reject", status_code=200, summary="Reject with a reason")
    async def reject(self, state: State, principal: Caller, item_id: FromPath[UUID],
                     data: JSONBody[RejectIn], shop: ShopParam = None) -> QueueItemOut:
        shop_id = await _scope(state, principal, shop)
        return QueueItemOut.of(await review.reject(runtime_of(state), shop_id, item_id,
                                                   principal, data.reason))

    @post("/{item_id:uuid}/out-of-scope", status_code=200,
          summary="Not the shop's business: dismiss the item and decline similar questions "
                  "(with an optional redirect)")
    async def out_of_scope(self, state: State, principal: Caller, item_id: FromPath[UUID],
                           data: JSONBody[OutOfScopeIn],
                           shop: ShopParam = None) -> OutOfScopeMarked:
        shop_id = await _scope(state, principal, shop)
        item, example = await out_of_scope.mark_item(runtime_of(state), shop_id, item_id, principal,
                                              data.redirect, data.note)
        return OutOfScopeMarked(QueueItemOut.of(item), example)

    @post("/{item_id:uuid}/merge", status_code=200, summary="Merge this item into another")
    async def merge(self, state: State, principal: Caller, item_id: FromPath[UUID],
                    data: JSONBody[MergeIn], shop: ShopParam = None) -> QueueItemOut:
        shop_id = await _scope(state, principal, shop)
        return QueueItemOut.of(await review.merge(runtime_of(state), shop_id, item_id,
                                                  data.into, principal))

    @post("/compare", status_code=200,
          summary="Would these questions merge in the queue? The decision and its evidence")
    async def compare(self, state: State, principal: Caller, data: JSONBody[CompareIn],
                      shop: ShopParam = None) -> CompareOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        results = await compare_questions(rt, target, [(p.a, p.b) for p in data.pairs])
        return CompareOut(target.dedup_question_similarity, target.dedup_answer_ratio, [
            ComparisonOut(r.similarity, r.text_ratio, r.same_identifiers, r.duplicate,
                          r.duplicate_up_to) for r in results])

    @post("/bulk", status_code=200,
          summary="Approve, reject (with a reason), merge (into one item) or mark out of scope "
                  "(with a redirect) many items")
    async def bulk(self, state: State, principal: Caller, data: JSONBody[BulkIn],
                   shop: ShopParam = None) -> list[BulkResult]:
        shop_id = await _scope(state, principal, shop)
        outcomes = await bulk.act_on_many(runtime_of(state), shop_id, data.ids, data.action,
                                          principal, reason=data.reason,
                                          redirect=data.redirect, into=data.into)
        return [BulkResult(o.id, True, status=o.item.status) if o.item is not None
                else BulkResult(o.id, False, error=o.error) for o in outcomes]


class AuditController(Controller):
    path = "/v1/audit"
    tags = ("queue",)

    @get("/", summary="The audit trail of a shop's queue and knowledge, newest first")
    async def list_audit(self, state: State, principal: Caller, shop: ShopParam = None,
                         subject_id: FromQuery[UUID | None] = None,
                         action: Annotated[str | None, QueryParameter(max_length=50)] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
                         offset: Offset = 0) -> list[AuditOut]:
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        records = await audit.list_records(runtime_of(state).pool, target.id, subject_id,
                                           limit, offset, action=action)
        return [AuditOut(r.id, r.actor, r.action, r.subject_type, r.subject_id, r.before,
                         r.after, r.created_at) for r in records]
