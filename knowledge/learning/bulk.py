"""One review action on many queue items, each done (or refused) on its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from knowledge.access import Principal
from knowledge.errors import Invalid, LearnkbError
from knowledge.learning import out_of_scope, review
from knowledge.learning.queue import QueueItem
from knowledge.runtime import Runtime

ACTIONS = ("approve", "reject", "out_of_scope", "merge")


@dataclass(frozen=True, slots=True)
class Outcome:
    id: UUID
    item: QueueItem | None  # as it is now, when the action was done
    error: str | None = None


async def act_on_many(rt: Runtime, shop_id: int | None, ids: Iterable[UUID], action: str,
                      actor: Principal, *, reason: str | None = None,
                      redirect: str | None = None, into: UUID | None = None) -> list[Outcome]:
    """`action` on each item once, in order; an item that cannot take it is reported with
    why, and does not stop the others. `reason` is a rejection's reason or an out-of-scope
    note; `redirect` what customers are told instead; `into` the item merged into."""
    if action not in ACTIONS:
        raise Invalid(f"action is one of {', '.join(ACTIONS)}", field="action")
    if action == "merge" and into is None:
        raise Invalid("a bulk merge names the item to merge into", field="into")
    outcomes = []
    for item_id in dict.fromkeys(ids):
        try:
            if action == "approve":
                item = await review.approve(rt, shop_id, item_id, actor)
            elif action == "reject":
                item = await review.reject(rt, shop_id, item_id, actor, reason or "")
            elif action == "out_of_scope":
                item, _ = await out_of_scope.mark_item(rt, shop_id, item_id, actor, redirect,
                                                       reason)
            else:
                assert into is not None
                item = await review.merge(rt, shop_id, item_id, into, actor)
            outcomes.append(Outcome(item_id, item))
        except LearnkbError as exc:
            outcomes.append(Outcome(item_id, None, exc.detail))
    return outcomes
