"""Whether the bot gets better: a shop's figures over a period, per day, and the views behind them.

The daily figures come from materialized views refreshed by the refresh-metrics job; a summary
over any period is computed from the tables themselves (percentiles over a period cannot be
added up from daily ones), through the (shop_id, created_at) indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from knowledge.errors import Invalid
from knowledge.store.db import Queryable
from knowledge.store.locks import try_advisory_lock

# CONCURRENTLY keeps the views readable during the refresh (their unique indexes allow it).
VIEWS = ("daily_learning_metrics", "response_performance_metrics", "daily_answer_metrics",
         "daily_feedback_metrics", "daily_review_metrics")
REFRESH = {view: f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}" for view in VIEWS}
MAX_DAYS = 366
TOP_UNANSWERED = 10

# $1 shop (NULL: every shop, for admins), $2 from, $3 to.
ANSWER_FIGURES = """
SELECT coalesce(a.ab_test_variant, '') AS variant,
       count(*) AS answers,
       count(*) FILTER (WHERE m.tier IN ('fallback', 'decline')) AS fallbacks,
       count(*) FILTER (WHERE m.tier = 'decline') AS declines,
       count(*) FILTER (WHERE m.tier = 'handover') AS handovers,
       avg(m.confidence) AS mean_confidence,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.response_time_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.response_time_ms) AS p95_ms
FROM response_analytics AS a
JOIN conversation_memory AS m ON m.shop_id = a.shop_id AND m.id = a.conversation_id
WHERE ($1::integer IS NULL OR a.shop_id = $1) AND a.created_at >= $2 AND a.created_at < $3
  -- A turn and its analytics row are written together: bounding the turns by the same shop
  -- and (a day either side of) the period lets both be read from their covering indexes.
  AND ($1::integer IS NULL OR m.shop_id = $1)
  AND m.created_at >= $2 - interval '1 day' AND m.created_at < $3 + interval '1 day'
GROUP BY ROLLUP (coalesce(a.ab_test_variant, ''))
"""
FEEDBACK_FIGURES = """
SELECT count(*) FILTER (WHERE metadata ->> 'sentiment' = 'positive') AS positive,
       count(*) FILTER (WHERE metadata ->> 'sentiment' = 'negative') AS negative
FROM conversation_feedback
WHERE ($1::integer IS NULL OR shop_id = $1) AND created_at >= $2 AND created_at < $3
"""
QUEUE_FIGURES = """
SELECT (SELECT count(*) FROM learning_queue
        WHERE ($1::integer IS NULL OR shop_id = $1) AND created_at >= $2 AND created_at < $3)
           AS inflow,
       (SELECT coalesce(sum(observations), 0) FROM learning_queue
        WHERE ($1::integer IS NULL OR shop_id = $1) AND created_at >= $2 AND created_at < $3)
           AS signals,
       (SELECT percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM applied_at - created_at))
        FROM learning_queue
        WHERE ($1::integer IS NULL OR shop_id = $1) AND applied_at >= $2 AND applied_at < $3
          AND applied_at IS NOT NULL)
           AS signal_to_applied_p50_seconds
"""
REVIEW_FIGURES = """
SELECT count(*) FILTER (WHERE action = 'queue.auto_approve') AS auto_approved,
       count(*) FILTER (WHERE action IN ('queue.approve', 'queue.edit_approve')) AS approved,
       count(*) FILTER (WHERE action IN ('queue.reject', 'queue.out_of_scope')) AS rejected,
       count(*) FILTER (WHERE action = 'queue.apply') AS applied
FROM learning_audit_log
WHERE ($1::integer IS NULL OR shop_id = $1) AND created_at >= $2 AND created_at < $3
"""
# The knowledge gaps customers hit most that nobody has answered yet.
TOP_GAPS = """
SELECT id, shop_id, question, observations, priority, created_at
FROM learning_queue
WHERE ($1::integer IS NULL OR shop_id = $1) AND kind = 'gap' AND status = 'pending'
  AND updated_at >= $2 AND created_at < $3
ORDER BY observations DESC, created_at, id
LIMIT $4
"""
QUEUE_DEPTH = "SELECT status, count(*) AS n FROM learning_queue GROUP BY status"
# Percentiles do not add up across shops: for every shop together they are left out.
DAILY_ANSWERS = """
SELECT date, variant, sum(answers)::bigint AS answers, sum(fallbacks)::bigint AS fallbacks,
       sum(declines)::bigint AS declines, sum(handovers)::bigint AS handovers,
       sum(mean_confidence * answers) / nullif(sum(answers), 0) AS mean_confidence,
       CASE WHEN $1::integer IS NULL THEN NULL ELSE max(p95_ms) END AS p95_ms,
       CASE WHEN $1::integer IS NULL THEN NULL ELSE max(p50_ms) END AS p50_ms
FROM daily_answer_metrics
WHERE ($1::integer IS NULL OR shop_id = $1) AND date >= $2 AND date < $3
GROUP BY date, variant ORDER BY date, variant
"""
DAILY_FEEDBACK = """
SELECT date, sum(positive)::bigint AS positive, sum(negative)::bigint AS negative
FROM daily_feedback_metrics
WHERE ($1::integer IS NULL OR shop_id = $1) AND date >= $2 AND date < $3
GROUP BY date
"""
DAILY_QUEUE = """
SELECT date, sum(count)::bigint AS inflow, sum(observations)::bigint AS signals
FROM daily_learning_metrics
WHERE ($1::integer IS NULL OR shop_id = $1) AND date >= $2 AND date < $3
GROUP BY date
"""
DAILY_REVIEWS = """
SELECT date, sum(auto_approved)::bigint AS auto_approved, sum(approved)::bigint AS approved,
       sum(rejected)::bigint AS rejected, sum(applied)::bigint AS applied
FROM daily_review_metrics
WHERE ($1::integer IS NULL OR shop_id = $1) AND date >= $2 AND date < $3
GROUP BY date
"""


async def queue_depth(conn: Queryable) -> dict[str, int]:
    """Items in the learning queue by status, every shop together."""
    return {r["status"]: int(r["n"]) for r in await conn.fetch(QUEUE_DEPTH)}


async def refresh_views(pool: asyncpg.Pool) -> bool:
    """Refresh every view; False when another replica is already doing it."""
    async with try_advisory_lock(pool, "job:refresh-metrics") as conn:
        if conn is None:
            return False
        for view in VIEWS:
            await conn.execute(REFRESH[view])
        return True


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise Invalid("`to` comes after `from`", field="to")
        if (self.end - self.start).days > MAX_DAYS:
            raise Invalid(f"a period is at most {MAX_DAYS} days", field="to", limit=MAX_DAYS)


def _ratio(part: float | int | None, whole: float | int | None) -> float | None:
    return None if not whole else round(float(part or 0) / float(whole), 4)


def _num(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _answers(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    n = int(row["answers"] or 0)
    return {"answers": n, "fallback_rate": _ratio(row["fallbacks"], n),
            "declines": int(row["declines"] or 0),
            "handover_rate": _ratio(row["handovers"], n),
            "mean_confidence": _num(row["mean_confidence"]),
            "p50_answer_ms": _num(row["p50_ms"], 1), "p95_answer_ms": _num(row["p95_ms"], 1)}


async def summary(conn: Queryable, shop_id: int | None, period: Period) -> dict[str, Any]:
    """A shop's figures (every shop's for None) over a period, from the tables."""
    args = (shop_id, period.start, period.end)
    rows = await conn.fetch(ANSWER_FIGURES, *args)
    total = next((r for r in rows if r["variant"] is None), None)
    variants = {r["variant"] or "(none)": _answers(r) for r in rows if r["variant"] is not None}
    feedback = await conn.fetchrow(FEEDBACK_FIGURES, *args)
    queue = await conn.fetchrow(QUEUE_FIGURES, *args)
    reviews = await conn.fetchrow(REVIEW_FIGURES, *args)
    gaps = await conn.fetch(TOP_GAPS, *args, TOP_UNANSWERED)
    assert feedback is not None and queue is not None and reviews is not None
    rated = int(feedback["positive"]) + int(feedback["negative"])
    out: dict[str, Any] = {
        "shop_id": shop_id, "from": period.start.isoformat(), "to": period.end.isoformat(),
        **(_answers(total) if total is not None else _answers({
            "answers": 0, "fallbacks": 0, "declines": 0, "handovers": 0,
            "mean_confidence": None, "p50_ms": None, "p95_ms": None})),
        "thumbs_up_ratio": _ratio(feedback["positive"], rated),
        "feedback": {"positive": int(feedback["positive"]),
                     "negative": int(feedback["negative"])},
        "queue_inflow": int(queue["inflow"]), "signals": int(queue["signals"]),
        "auto_approved": int(reviews["auto_approved"]), "approved": int(reviews["approved"]),
        "rejected": int(reviews["rejected"]), "applied": int(reviews["applied"]),
        "signal_to_applied_p50_seconds": _num(queue["signal_to_applied_p50_seconds"], 1),
        "top_unanswered": [{"item_id": str(g["id"]), "question": g["question"],
                            "asked": g["observations"], "priority": g["priority"]}
                           for g in gaps]}
    # A/B variants side by side when turns carry one.
    if any(v != "(none)" for v in variants):
        out["variants"] = variants
    return out


async def daily(conn: Queryable, shop_id: int | None, start: date,
                end: date) -> list[dict[str, Any]]:
    """Day by day, from the views (as fresh as their last refresh)."""
    if end <= start:
        raise Invalid("`to` comes after `from`", field="to")
    if (end - start).days > MAX_DAYS:
        raise Invalid(f"a period is at most {MAX_DAYS} days", field="to", limit=MAX_DAYS)
    days: dict[date, dict[str, Any]] = {}

    def day(d: date) -> dict[str, Any]:
        return days.setdefault(d, {"date": d.isoformat(), "answers": 0, "variants": {}})

    for r in await conn.fetch(DAILY_ANSWERS, shop_id, start, end):
        figures = _answers(r)
        entry = day(r["date"])
        entry["variants"][r["variant"] or "(none)"] = figures
        entry["answers"] += figures["answers"]
    for r in await conn.fetch(DAILY_FEEDBACK, shop_id, start, end):
        rated = int(r["positive"]) + int(r["negative"])
        day(r["date"]).update(thumbs_up_ratio=_ratio(r["positive"], rated),
                              positive_feedback=int(r["positive"]),
                              negative_feedback=int(r["negative"]))
    for r in await conn.fetch(DAILY_QUEUE, shop_id, start, end):
        day(r["date"]).update(queue_inflow=int(r["inflow"]), signals=int(r["signals"]))
    for r in await conn.fetch(DAILY_REVIEWS, shop_id, start, end):
        day(r["date"]).update(auto_approved=int(r["auto_approved"]),
                              approved=int(r["approved"]), rejected=int(r["rejected"]),
                              applied=int(r["applied"]))
    return [days[d] for d in sorted(days)]
