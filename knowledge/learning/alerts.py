"""The seed's alert conditions, checked now for a shop, each with the figures behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knowledge.settings import Settings
from knowledge.store.db import Queryable

# Below these volumes a rate or a spike says nothing yet.
MIN_ANSWERS = 20
MIN_NEGATIVE = 5
SPIKE_FACTOR = 2.0
# The queue "grows faster than it is reviewed" when a week's inflow exceeds its outflow by
# this share and at least this many items wait.
GROWTH_FACTOR = 1.5
MIN_PENDING = 20

# Last 24 hours against the 7 days before them, in one pass over the shop's turns.
FALLBACKS = """
SELECT count(*) FILTER (WHERE created_at >= now() - interval '1 day') AS recent,
       count(*) FILTER (WHERE created_at >= now() - interval '1 day'
                        AND tier IN ('fallback', 'decline')) AS recent_fallbacks,
       count(*) FILTER (WHERE created_at < now() - interval '1 day') AS base,
       count(*) FILTER (WHERE created_at < now() - interval '1 day'
                        AND tier IN ('fallback', 'decline')) AS base_fallbacks
FROM conversation_memory
WHERE shop_id = $1 AND created_at >= now() - interval '8 days'
"""
ANSWER_TIME = """
SELECT count(*) AS n,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms) AS p95
FROM response_analytics
WHERE shop_id = $1 AND created_at >= now() - interval '1 hour'
  AND response_time_ms IS NOT NULL
  -- learnkb's own answers: a logged turn's time is the bot's end to end, not learnkb's
  AND NOT (metrics ? 'logged')
"""
NEGATIVE_FEEDBACK = """
SELECT count(*) FILTER (WHERE created_at >= now() - interval '1 day') AS recent,
       count(*) FILTER (WHERE created_at < now() - interval '1 day') AS base
FROM conversation_feedback
WHERE shop_id = $1 AND created_at >= now() - interval '8 days'
  AND metadata ->> 'sentiment' = 'negative'
"""
NEGATIVE_CALLS = """
SELECT count(*) FILTER (WHERE created_at >= now() - interval '1 day') AS recent,
       count(*) FILTER (WHERE created_at < now() - interval '1 day') AS base
FROM voice_transcripts
WHERE shop_id = $1 AND created_at >= now() - interval '8 days' AND sentiment = 'negative'
"""
QUEUE_FLOW = """
SELECT (SELECT count(*) FROM learning_queue
        WHERE shop_id = $1 AND created_at >= now() - interval '7 days') AS inflow,
       (SELECT count(*) FROM learning_audit_log
        WHERE shop_id = $1 AND created_at >= now() - interval '7 days'
          AND action IN ('queue.approve', 'queue.edit_approve', 'queue.auto_approve',
                         'queue.reject', 'queue.out_of_scope', 'queue.merge', 'queue.settled'))
           AS outflow,
       (SELECT count(*) FROM learning_queue WHERE shop_id = $1 AND status = 'pending')
           AS pending
"""


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    firing: bool
    figures: dict[str, Any]
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "firing": self.firing, "description": self.description,
                **self.figures}


def _spike(recent: int, base: int, minimum: int) -> tuple[bool, float]:
    daily_base = base / 7
    return recent >= minimum and recent > SPIKE_FACTOR * daily_base, round(daily_base, 2)


async def alerts(conn: Queryable, shop_id: int, settings: Settings) -> list[Alert]:
    """Every condition with whether it holds now and its figures."""
    out = []
    f = await conn.fetchrow(FALLBACKS, shop_id)
    assert f is not None
    recent = int(f["recent_fallbacks"]) / f["recent"] if f["recent"] else None
    base = int(f["base_fallbacks"]) / f["base"] if f["base"] else None
    firing = (recent is not None and base is not None and f["recent"] >= MIN_ANSWERS
              and f["base"] >= MIN_ANSWERS and recent > SPIKE_FACTOR * base)
    out.append(Alert("fallback_rate", firing, {
        "last_24h": None if recent is None else round(recent, 4),
        "baseline_7d": None if base is None else round(base, 4),
        "answers_24h": int(f["recent"]), "answers_baseline": int(f["base"])},
        "fallback rate over the last 24 hours above twice its 7-day baseline"))
    t = await conn.fetchrow(ANSWER_TIME, shop_id)
    assert t is not None
    budget = settings.answer_p95_budget_ms
    p95 = None if t["p95"] is None else float(t["p95"])
    out.append(Alert("answer_time", p95 is not None and p95 > budget and t["n"] >= MIN_ANSWERS,
                     {"p95_ms_last_hour": None if p95 is None else round(p95, 1),
                      "budget_ms": budget, "answers_last_hour": int(t["n"])},
                     "p95 answer time over the last hour above its budget"))
    for name, sql, what in (("negative_feedback", NEGATIVE_FEEDBACK, "negative feedback"),
                            ("negative_calls", NEGATIVE_CALLS, "negative calls")):
        row = await conn.fetchrow(sql, shop_id)
        assert row is not None
        firing, daily_base = _spike(int(row["recent"]), int(row["base"]), MIN_NEGATIVE)
        out.append(Alert(name, firing, {"last_24h": int(row["recent"]),
                                        "daily_baseline_7d": daily_base},
                         f"{what} in the last 24 hours above twice the daily 7-day average"))
    q = await conn.fetchrow(QUEUE_FLOW, shop_id)
    assert q is not None
    growing = (int(q["pending"]) >= MIN_PENDING
               and int(q["inflow"]) > GROWTH_FACTOR * max(1, int(q["outflow"])))
    out.append(Alert("queue_growth", growing, {
        "inflow_7d": int(q["inflow"]), "reviewed_7d": int(q["outflow"]),
        "pending": int(q["pending"])},
        "the learning queue grows faster than it is reviewed"))
    return out
