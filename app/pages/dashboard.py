"""The dashboard (is the bot getting better?) and the audit trail."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.response import Template
from markupsafe import Markup

from app.auth import runtime_of
from app.pages.charts import Series, line_chart, stacked_bars
from app.pages.web import PageOf, render
from knowledge.errors import Invalid
from knowledge.learning import metrics
from knowledge.store import audit

DAYS = (7, 30, 90)
TITLES = ("Learning curve: items approved per day", "Fallback and handover rate",
          "Thumbs-up ratio", "p95 answer time", "Queue inflow and outflow")
AUDIT_PAGE = 50
MAX_OFFSET = 1_000_000


def _combined(day: dict[str, Any], rate: str) -> float | None:
    """A day's rate over all its A/B variants, weighted by their answers."""
    variants = day.get("variants", {}).values()
    n: int = sum(v["answers"] for v in variants)
    if not n:
        return None
    weighted: float = sum(v["answers"] * (v[rate] or 0.0) for v in variants)
    return weighted / n


def _slowest(day: dict[str, Any]) -> float | None:
    known = [v["p95_answer_ms"] for v in day.get("variants", {}).values()
             if v["p95_answer_ms"] is not None]
    return max(known, default=None)


def _days(rows: list[dict[str, Any]], start: date, end: date) -> list[dict[str, Any]]:
    """Every day of the period, days with nothing in them included (as empty)."""
    by_date = {r["date"]: r for r in rows}
    return [by_date.get((start + timedelta(days=i)).isoformat(),
                        {"date": (start + timedelta(days=i)).isoformat()})
            for i in range((end - start).days)]


def charts(days: list[dict[str, Any]]) -> list[tuple[str, Markup]]:
    labels = [d["date"] for d in days]
    drawn = [
        stacked_bars(TITLES[0], labels, [
            Series("approved automatically", [d.get("auto_approved", 0) for d in days]),
            Series("approved by people", [d.get("approved", 0) for d in days])]),
        line_chart(TITLES[1], labels, [
            Series("fallback", [_combined(d, "fallback_rate") for d in days]),
            Series("handover", [_combined(d, "handover_rate") for d in days])], unit="%"),
        line_chart(TITLES[2], labels, [
            Series("thumbs up", [d.get("thumbs_up_ratio") for d in days])], unit="%"),
        line_chart(TITLES[3], labels, [
            Series("p95", [_slowest(d) for d in days])], unit="ms"),
        line_chart(TITLES[4], labels, [
            Series("new items", [d.get("queue_inflow", 0) for d in days]),
            Series("reviewed", [d.get("approved", 0) + d.get("auto_approved", 0)
                                + d.get("rejected", 0) for d in days])]),
    ]
    return [(TITLES[i], chart) for i, chart in enumerate(drawn)]


class DashboardPages(Controller):
    path = "/admin"
    include_in_schema = False

    @get("/dashboard")
    async def dashboard(self, state: State, page: PageOf,
                        days: FromQuery[int] = 30) -> Template:
        if days not in DAYS:
            raise Invalid(f"days is one of {', '.join(map(str, DAYS))}", field="days")
        pool = runtime_of(state).pool
        shop_id = page.shop.id if page.shop else None
        now = datetime.now(UTC)
        end = now.date() + timedelta(days=1)
        start = end - timedelta(days=days)
        # The period's totals are exact (from the tables); the days come from the views, as of
        # their last refresh.
        totals = await metrics.summary(pool, shop_id, metrics.Period(
            datetime.combine(start, datetime.min.time(), UTC), now))
        daily = _days(await metrics.daily(pool, shop_id, start, end), start, end)
        return render(page, "dashboard.html", totals=totals, charts=charts(daily), days=days,
                      choices=DAYS, refresh_minutes=round(
                          runtime_of(state).settings.metrics_refresh_seconds / 60))

    @get("/audit")
    async def audit_trail(self, state: State, page: PageOf,
                          action: FromQuery[str | None] = None,
                          subject: FromQuery[str | None] = None,
                          offset: FromQuery[int] = 0) -> Template:
        shop = page.need_shop()
        if not 0 <= offset <= MAX_OFFSET:
            raise Invalid(f"offset is 0 to {MAX_OFFSET}", field="offset", limit=MAX_OFFSET)
        subject_id = None
        if subject:
            try:
                subject_id = UUID(subject.strip())
            except ValueError as exc:
                raise Invalid("subject is an item's or entry's id", field="subject") from exc
        if action is not None and len(action) > 50:
            raise Invalid("action is at most 50 characters", field="action", limit=50)
        pool = runtime_of(state).pool
        records = await audit.list_records(pool, shop.id, subject_id, AUDIT_PAGE + 1, offset,
                                           action=action or None)
        return render(page, "audit.html", records=records[:AUDIT_PAGE],
                      more=len(records) > AUDIT_PAGE, offset=offset, action=action or "",
                      subject=subject or "", actions=await audit.actions_of(pool, shop.id),
                      page_size=AUDIT_PAGE)
