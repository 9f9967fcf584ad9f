"""Dashboard aggregates: refreshing the materialized views."""

from __future__ import annotations

import asyncpg

from knowledge.locks import try_advisory_lock

# CONCURRENTLY keeps the views readable during the refresh (their unique indexes allow it).
REFRESH_LEARNING = "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_learning_metrics"
REFRESH_RESPONSES = "REFRESH MATERIALIZED VIEW CONCURRENTLY response_performance_metrics"
SELECT_RESPONSE_METRICS = """
SELECT shop_id, response_type, date, total_responses, avg_response_time, p95_response_time
FROM response_performance_metrics WHERE shop_id = $1 ORDER BY date DESC, response_type
LIMIT $2
"""


async def refresh_views(pool: asyncpg.Pool) -> bool:
    """Refresh both views; False when another replica is already doing it."""
    async with try_advisory_lock(pool, "job:refresh-metrics") as conn:
        if conn is None:
            return False
        await conn.execute(REFRESH_LEARNING)
        await conn.execute(REFRESH_RESPONSES)
        return True


async def response_metrics(pool: asyncpg.Pool, shop_id: int,
                           limit: int = 30) -> list[dict[str, object]]:
    return [dict(r) for r in await pool.fetch(SELECT_RESPONSE_METRICS, shop_id, limit)]
