"""Re-embed knowledge made by another model (run once after changing the model)."""

from __future__ import annotations

from knowledge.learning.out_of_scope import reembed_examples
from knowledge.model.reembed import reembed
from knowledge.runtime import Runtime

NAME = "reembed"


async def run(rt: Runtime) -> str:
    count = await reembed(rt)
    examples = await reembed_examples(rt)
    return (f"re-embedded {count} entries and {examples} out-of-scope examples with "
            f"{rt.embedder.model_name} ({rt.embedder.backend})")
