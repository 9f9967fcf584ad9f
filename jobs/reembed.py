"""Re-embed knowledge made by another model (run once after changing the model)."""

from __future__ import annotations

from knowledge.model.reembed import reembed
from knowledge.runtime import Runtime

NAME = "reembed"


async def run(rt: Runtime) -> str:
    count = await reembed(rt)
    return f"re-embedded {count} entries with {rt.embedder.model_name} ({rt.embedder.backend})"
