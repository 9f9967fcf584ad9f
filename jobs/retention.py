"""Clear raw text (transcripts, conversation text, feedback wording) past each shop's retention."""

from __future__ import annotations

from knowledge.intake.retention import expire
from knowledge.runtime import Runtime
from knowledge.store import job_runs

NAME = "retention"


async def run(rt: Runtime) -> str:
    runs = await job_runs.forget_old(rt.pool)
    done = await expire(rt)
    if done is None:
        return "another process is applying retention"
    return ("cleared raw text past retention: " +
            ", ".join(f"{n} {what}" for what, n in done.items()) +
            f"; {runs} job runs older than {job_runs.KEEP_DAYS} days forgotten")
