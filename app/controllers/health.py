"""Liveness and readiness, without authentication."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State

from app.schemas import Health
from knowledge.db import ping
from knowledge.runtime import Runtime


class HealthController(Controller):
    tags = ("health",)

    @get("/health", summary="The process is up")
    async def health(self) -> Health:
        return Health(status="ok")

    @get("/ready", summary="The database answers and the model is loaded")
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
        ok = all(v.startswith("ok") for v in checks.values())
        return Response(Health("ready" if ok else "not ready", checks),
                        status_code=200 if ok else 503)
