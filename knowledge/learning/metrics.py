"""Dashboard aggregates: refreshing the materialized views."""

from __future__ import annotations

import asyncpg

from knowledge.store.locks import try_advisory_lock

# CONCURRENTLY keeps the views readable during the refresh (their unique indexes allow it).
REFRESH_LEARNING = "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_learning_metrics"
REFRESH_RESPONSES = "REFRESH MATERIALIZED VIEW CONCURRENTLY response_performance_metrics"


async def refresh_views(pool: asyncpg.Pool) -> bool:
    """Refresh both views; False when another replica is already doing it."""
    async with try_advisory_lock(pool, "job:refresh-metrics") as conn:
        if conn is None:
            return False
        await conn.execute(REFRESH_LEARNING)
        await conn.execute(REFRESH_RESPONSES)
        return True
