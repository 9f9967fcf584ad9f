"""Refit each shop's out-of-scope decision whose knowledge, examples or ratings changed."""

from __future__ import annotations

from knowledge.answering.scope import calibrate_all
from knowledge.runtime import Runtime
from knowledge.store.locks import try_advisory_lock

NAME = "calibrate"


async def run(rt: Runtime) -> str:
    # One replica at a time: two would fit the same shops twice for nothing.
    async with try_advisory_lock(rt.pool, NAME) as held:
        if held is None:
            return "another process is calibrating"
        refitted, shops = await calibrate_all(rt)
    return f"calibrated {refitted} of {shops} shops (the rest had not changed)"
