"""The Litestar app factory: settings in, a ready app out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from app.admission import admission
from app.auth import provide_principal
from app.bodies import JsonRequest
from app.controllers.answers import AnswerController
from app.controllers.api_keys import KeyController
from app.controllers.conversations import ConversationController
from app.controllers.documents import document_controller
from app.controllers.exports import ExportController
from app.controllers.health import HealthController
from app.controllers.knowledge_entries import KnowledgeController
from app.controllers.learning import LearningController
from app.controllers.metrics import MetricsController as FiguresController
from app.controllers.queue import AuditController, QueueController
from app.controllers.scope import CalibrationController, OutOfScopeController
from app.controllers.shops import ShopController
from app.controllers.transcripts import TranscriptController
from app.controllers.users import UserController
from app.observability import RUNTIME, prometheus_config
from app.observability import MetricsController as PrometheusMetrics
from app.pages import pages_router, template_config
from app.problems import EXCEPTION_HANDLERS, document_problems
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings

log = logging.getLogger(__name__)

StartHook = Callable[[Runtime], Awaitable[Callable[[], Awaitable[None]] | None]]


def create_app(settings: Settings, *, runtime: Runtime | None = None,
               on_start: list[StartHook] | None = None) -> Litestar:
    """Build the app. With `runtime` the caller owns it (tests share one); otherwise the app
    opens its own at start-up and closes it at shutdown. `on_start` hooks run once the runtime
    is open (the demo loader, the job scheduler) and may return a stop callback."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        rt = runtime or await open_runtime(settings)
        app.state["runtime"] = rt
        RUNTIME.runtime = rt
        stops = []
        try:
            for hook in on_start or []:
                stop = await hook(rt)
                if stop is not None:
                    stops.append(stop)
            yield
        finally:
            for stop in reversed(stops):
                await stop()
            if runtime is None:
                await rt.close()

    handlers: list[Any] = [
        HealthController, AnswerController, KnowledgeController,
        document_controller(settings.max_document_bytes), ShopController, KeyController,
        LearningController, QueueController, AuditController, ExportController,
        CalibrationController, OutOfScopeController, TranscriptController,
        ConversationController, UserController, FiguresController,
        *pages_router(settings)]
    # First: a request refused for overload costs nothing else.
    middleware: list[Any] = [admission(settings.max_in_flight)]
    if settings.metrics_enabled:
        middleware.append(prometheus_config().middleware)
        if not settings.metrics_port:  # otherwise `serve` exposes them on that port
            handlers.append(PrometheusMetrics)
    app = Litestar(
        route_handlers=handlers,
        middleware=middleware,
        dependencies={"principal": Provide(provide_principal)},
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=template_config(),
        lifespan=[lifespan],
        state=State({"settings": settings}),
        request_max_body_size=settings.max_request_bytes,
        request_class=JsonRequest,
        openapi_config=OpenAPIConfig(
            title="learnkb", version="0.1.0", path="/schema",
            description="A self-learning knowledge base for shops' customer-service bots. "
                        "Authenticate with `Authorization: Bearer <API key>`.",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        debug=False,
    )
    document_problems(app)
    return app
