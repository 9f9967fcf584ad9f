"""Liveness and readiness, without authentication."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec

from app.schemas import Health
from knowledge.answering.turn_log import turn_log_of
from knowledge.runtime import Runtime
from knowledge.store.db import ping

# Seconds without a turn written while turns wait: the log is stuck (the database is away).
TURN_LOG_STALL = 30.0


class HealthController(Controller):
    tags = ("health",)

    @get("/health", summary="The process is up")
    async def health(self) -> Health:
        return Health(status="ok")

    @get("/ready", summary="The database answers, the model is loaded, the turn log keeps up",
         responses={503: ResponseSpec(Health, description="Not ready; the checks say why")})
    async def ready(self, state: State) -> Response[Health]:
        checks: dict[str, str] = {}
        rt = state.get("runtime")
        if not isinstance(rt, Runtime):
            return Response(Health("starting", {"runtime": "not started"}), status_code=503)
        try:
            await ping(rt.pool)
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready, and says why
            checks["database"] = f"error: {type(exc).__name__}"
        checks["model"] = (f"ok ({rt.embedder.model_name}, {rt.embedder.backend})"
                           if rt.embedder.ready else "not loaded")
        turns = turn_log_of(rt)
        # Full, answering waits for it; stalled, readers of turns wait for it.
        behind = turns.pending >= turns.pending_max or turns.behind_seconds > TURN_LOG_STALL
        checks["turn_log"] = (f"behind: {turns.pending} turns queued, none written for "
                              f"{turns.behind_seconds:.0f} s" if behind else
                              f"ok ({turns.pending} queued, {turns.dropped} dropped)")
        ok = all(v.startswith("ok") for v in checks.values())
        return Response(Health("ready" if ok else "not ready", checks),
                        status_code=200 if ok else 503)
