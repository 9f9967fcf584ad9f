"""Move approved learning into the knowledge base."""

from __future__ import annotations

from knowledge.learning.apply import apply_approved
from knowledge.runtime import Runtime

NAME = "apply"


async def run(rt: Runtime) -> str:
    result = await apply_approved(rt)
    return (f"applied {result.applied} items: {result.created} new entries, "
            f"{result.superseded} new versions; {result.returned_to_review} back to review")
