"""Queue the pairs and gaps of calls whose queuing stopped part-way (a crash, a lost database)."""

from __future__ import annotations

from knowledge.intake.transcripts import resume_queuing
from knowledge.runtime import Runtime

NAME = "transcript-pairs"


async def run(rt: Runtime) -> str:
    # Each draft is queued under its transcript's row lock, together with the record that it
    # was: replicas running this at once queue each draft once.
    return f"queued {await resume_queuing(rt)} items from unfinished transcripts"
