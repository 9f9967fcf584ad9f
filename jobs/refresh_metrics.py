"""Refresh the dashboard materialized views."""

from __future__ import annotations

import logging

from knowledge.learning.metrics import refresh_views
from knowledge.runtime import Runtime

log = logging.getLogger(__name__)

NAME = "refresh-metrics"


async def run(rt: Runtime) -> str:
    done = await refresh_views(rt.pool)
    message = "refreshed metrics views" if done else "another replica is refreshing; skipped"
    log.info(message)
    return message
