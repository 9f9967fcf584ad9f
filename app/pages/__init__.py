"""The review pages under /admin: server-rendered HTML over the same knowledge layer as the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from app.pages.dashboard import DashboardPages
from app.pages.knowledge import KnowledgePages, upload_controller
from app.pages.queue import QueuePages
from app.pages.sign_in import SignInPages
from app.pages.try_bot import TryPages
from app.pages.web import (
    add_security_headers,
    page_error,
    page_headers,
    provide_page,
    provide_session,
)
from app.problems import EXCEPTION_HANDLERS
from knowledge.settings import Settings

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(loader=FileSystemLoader(TEMPLATES),
                              autoescape=select_autoescape(default=True, default_for_string=True),
                              trim_blocks=True, lstrip_blocks=True)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def pages_router(settings: Settings) -> list[Any]:
    """The pages and their static files; every response carries the security headers."""
    pages = Router(
        path="/", include_in_schema=False,
        route_handlers=[SignInPages, QueuePages, KnowledgePages,
                        upload_controller(settings.max_document_bytes), TryPages,
                        DashboardPages],
        dependencies={"session": Provide(provide_session), "page": Provide(provide_page)},
        # Every error the API maps to problem details is a page here (the most specific
        # handler wins across layers, so each one is named again).
        exception_handlers=dict.fromkeys(EXCEPTION_HANDLERS, page_error),
        after_request=page_headers)
    static = create_static_files_router(
        path="/admin/static", directories=[STATIC], include_in_schema=False,
        after_request=add_security_headers,
        # The files change only with a release; an hour keeps pages fast without going stale.
        cache_control=CacheControlHeader(max_age=3600, private=True))
    return [pages, static]
