"""Owners' figures: a period's summary, day by day, and the alerts that hold now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import ShopParam
from knowledge.access import Action, Principal, Role
from knowledge.errors import Invalid
from knowledge.learning import alerts, metrics

T = TypeVar("T", date, datetime)


async def _shop_or_all(state: State, principal: Principal, shop: str | None) -> int | None:
    """An admin without ?shop= sees every shop together; others their own."""
    if principal.role is Role.ADMIN and shop is None:
        return None
    return (await resolve_shop(state, principal, Action.REVIEW, shop)).id


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _before(moment: T, days: int) -> T:
    """`days` before a moment; a moment too near the calendar's start is refused, not a 500."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        raise Invalid(f"`to` is at least {days} days after the year 1, or give `from` too",
                      field="to") from None


class MetricsController(Controller):
    path = "/v1"
    tags = ("metrics",)

    @get("/metrics/summary",
         summary="A period's figures (default: the last 7 days): answers, fallback and "
                 "handover rates, confidence, answer times, feedback, the queue's flow, time "
                 "to applied knowledge, the most-asked unanswered questions, A/B variants")
    async def summary(self, state: State, principal: Caller, shop: ShopParam = None,
                      from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
                      to: FromQuery[datetime | None] = None) -> dict[str, Any]:
        shop_id = await _shop_or_all(state, principal, shop)
        end = _aware(to) if to is not None else datetime.now(UTC)
        start = _aware(from_) if from_ is not None else _before(end, 7)
        return await metrics.summary(runtime_of(state).pool, shop_id,
                                     metrics.Period(start, end))

    @get("/metrics/daily", summary="Day by day (from the views the refresh-metrics job keeps)")
    async def daily(self, state: State, principal: Caller, shop: ShopParam = None,
                    from_: Annotated[date | None, QueryParameter(name="from")] = None,
                    to: FromQuery[date | None] = None) -> list[dict[str, Any]]:
        shop_id = await _shop_or_all(state, principal, shop)
        end = to or datetime.now(UTC).date() + timedelta(days=1)
        start = from_ or _before(end, 30)
        return await metrics.daily(runtime_of(state).pool, shop_id, start, end)

    @get("/alerts", summary="Which alert conditions hold now for the shop, with their figures")
    async def alerts(self, state: State, principal: Caller,
                     shop: ShopParam = None) -> list[dict[str, Any]]:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.REVIEW, shop)
        return [a.as_dict() for a in await alerts.alerts(rt.pool, target.id, rt.settings)]
