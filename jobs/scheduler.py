"""The apscheduler AsyncIOScheduler that runs the batch jobs inside serve or a worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from jobs import apply, calibrate, embed_turns, reembed, refresh_metrics
from knowledge.runtime import Runtime

log = logging.getLogger(__name__)

JOBS: dict[str, Callable[[Runtime], Awaitable[str]]] = {
    apply.NAME: apply.run,
    refresh_metrics.NAME: refresh_metrics.run,
    reembed.NAME: reembed.run,
    calibrate.NAME: calibrate.run,
    embed_turns.NAME: embed_turns.run,
}


async def run_job(rt: Runtime, name: str) -> str:
    """Run one job now (the CLI's `jobs run`)."""
    try:
        job = JOBS[name]
    except KeyError:
        raise SystemExit(f"unknown job {name!r}; jobs: {', '.join(sorted(JOBS))}") from None
    return await job(rt)


def start_scheduler(rt: Runtime) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()

    async def guarded(name: str) -> None:
        try:
            await JOBS[name](rt)
        except Exception:
            log.exception("job %s failed; it will run again at its next time", name)

    scheduler.add_job(guarded, "interval", args=[refresh_metrics.NAME],
                      seconds=rt.settings.metrics_refresh_seconds, id=refresh_metrics.NAME,
                      max_instances=1, coalesce=True)
    scheduler.add_job(guarded, "interval", args=[apply.NAME],
                      seconds=rt.settings.apply_interval_seconds, id=apply.NAME,
                      max_instances=1, coalesce=True)
    scheduler.add_job(guarded, "interval", args=[calibrate.NAME],
                      seconds=rt.settings.calibrate_interval_seconds, id=calibrate.NAME,
                      max_instances=1, coalesce=True)
    scheduler.add_job(guarded, "interval", args=[embed_turns.NAME],
                      seconds=rt.settings.embed_turns_interval_seconds, id=embed_turns.NAME,
                      max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler


async def scheduler_hook(rt: Runtime) -> Callable[[], Awaitable[None]]:
    """An app start hook: run the jobs inside `learnkb serve`."""
    scheduler = start_scheduler(rt)

    async def stop() -> None:
        scheduler.shutdown(wait=False)

    return stop
