"""Embed logged questions and open gaps for logged turns the bot was unsure of."""

from __future__ import annotations

from knowledge.intake.conversations import embed_logged
from knowledge.runtime import Runtime

NAME = "embed-turns"


async def run(rt: Runtime) -> str:
    # Turns are claimed with SKIP LOCKED: replicas share the work, none embeds a turn twice.
    embedded, gaps = await embed_logged(rt)
    return f"embedded {embedded} logged turns; {gaps} knowledge gaps submitted"
