"""Runs of the batch jobs: each scheduled tick claimed by one process, and what it did."""

from __future__ import annotations

import os
import socket

from knowledge.store.db import Queryable

# The tick is now rounded down to a multiple of the interval, the same in every process.
CLAIM_TICK = """
INSERT INTO job_runs (job, tick, runner)
VALUES ($1, to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $2) * $2), $3)
ON CONFLICT (job, tick) DO NOTHING
RETURNING id
"""
# A run asked for by hand is its own tick.
RECORD_MANUAL = """
INSERT INTO job_runs (job, tick, runner) VALUES ($1, clock_timestamp(), $2) RETURNING id
"""
FINISH_RUN = """
UPDATE job_runs SET finished_at = clock_timestamp(), outcome = $2, detail = left($3, 1000)
WHERE id = $1
"""
FORGET_OLD_RUNS = "DELETE FROM job_runs WHERE started_at < now() - make_interval(days => $1)"
KEEP_DAYS = 7


def runner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def claim_tick(conn: Queryable, job: str, interval_seconds: float) -> int | None:
    """The run's id when this process is the first to run `job` in the current tick; None
    when another process already did."""
    run_id: int | None = await conn.fetchval(CLAIM_TICK, job, float(interval_seconds),
                                             runner())
    return run_id


async def record_manual(conn: Queryable, job: str) -> int:
    run_id: int = await conn.fetchval(RECORD_MANUAL, job, runner())
    return run_id


async def finish(conn: Queryable, run_id: int, ok: bool, detail: str) -> None:
    await conn.execute(FINISH_RUN, run_id, "ok" if ok else "failed", detail)


async def forget_old(conn: Queryable, days: int = KEEP_DAYS) -> int:
    status = await conn.execute(FORGET_OLD_RUNS, days)
    return int(status.split()[-1])
