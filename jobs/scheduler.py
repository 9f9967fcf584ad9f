"""The apscheduler AsyncIOScheduler that runs the batch jobs inside serve or a worker."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from jobs import (
    apply,
    calibrate,
    embed_turns,
    reembed,
    refresh_metrics,
    retention,
    transcript_pairs,
)
from jobs.metrics import JOB_RUNS, JOB_SECONDS
from knowledge.runtime import Runtime
from knowledge.store import job_runs

log = logging.getLogger(__name__)

JOBS: dict[str, Callable[[Runtime], Awaitable[str]]] = {
    apply.NAME: apply.run,
    refresh_metrics.NAME: refresh_metrics.run,
    reembed.NAME: reembed.run,
    calibrate.NAME: calibrate.run,
    embed_turns.NAME: embed_turns.run,
    retention.NAME: retention.run,
    transcript_pairs.NAME: transcript_pairs.run,
}


async def run_job(rt: Runtime, name: str) -> str:
    """Run one job now (the CLI's `jobs run`), recorded as a run of its own."""
    try:
        job = JOBS[name]
    except KeyError:
        raise SystemExit(f"unknown job {name!r}; jobs: {', '.join(sorted(JOBS))}") from None
    run_id = await job_runs.record_manual(rt.pool, name)
    try:
        with JOB_SECONDS.labels(job=name).time():
            result = await job(rt)
    except Exception as exc:
        JOB_RUNS.labels(job=name, outcome="failed").inc()
        await job_runs.finish(rt.pool, run_id, False, f"{type(exc).__name__}: {exc}")
        raise
    JOB_RUNS.labels(job=name, outcome="ok").inc()
    await job_runs.finish(rt.pool, run_id, True, result)
    return result


def start_scheduler(rt: Runtime) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()

    async def guarded(name: str, seconds: float) -> None:
        run_id: int | None = None
        started = time.perf_counter()
        try:
            # With several processes on one database, the first to claim the tick runs it.
            run_id = await job_runs.claim_tick(rt.pool, name, seconds)
            if run_id is None:
                return
            result = await JOBS[name](rt)
        except Exception as exc:
            JOB_RUNS.labels(job=name, outcome="failed").inc()
            log.exception("job %s failed; it will run again at its next time", name)
            if run_id is not None:
                with contextlib.suppress(Exception):  # the database may be what failed
                    await job_runs.finish(rt.pool, run_id, False,
                                          f"{type(exc).__name__}: {exc}")
        else:
            JOB_RUNS.labels(job=name, outcome="ok").inc()
            await job_runs.finish(rt.pool, run_id, True, result)
        finally:
            if run_id is not None:
                JOB_SECONDS.labels(job=name).observe(time.perf_counter() - started)

    s = rt.settings
    # reembed runs only when asked (after a change of model).
    every = {refresh_metrics.NAME: s.metrics_refresh_seconds,
             apply.NAME: s.apply_interval_seconds,
             calibrate.NAME: s.calibrate_interval_seconds,
             embed_turns.NAME: s.embed_turns_interval_seconds,
             retention.NAME: s.retention_interval_seconds,
             transcript_pairs.NAME: s.transcript_pairs_interval_seconds}
    for name, seconds in every.items():
        scheduler.add_job(guarded, "interval", args=[name, seconds], seconds=seconds, id=name,
                          max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler


async def scheduler_hook(rt: Runtime) -> Callable[[], Awaitable[None]]:
    """An app start hook: run the jobs inside `learnkb serve`."""
    scheduler = start_scheduler(rt)

    async def stop() -> None:
        scheduler.shutdown(wait=False)

    return stop
