"""Shared fixtures: one embedded PostgreSQL database per session, the real model, real HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.factory import create_app
from knowledge.access import Role
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops
from knowledge.store.db import EmbeddedPostgres, ensure_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("learnkb-data")


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> Iterator[str]:
    """LEARNKB_TEST_DATABASE_URL if given, else a fresh embedded server for this session."""
    given = os.environ.get("LEARNKB_TEST_DATABASE_URL")
    if given:
        yield given
        return
    server = EmbeddedPostgres(data_dir / "pgdata")
    admin_uri = server.start()
    name = f"learnkb_test_{uuid.uuid4().hex[:8]}"
    yield asyncio.run(ensure_database(admin_uri, name))
    server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, run_jobs=False)


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = await open_runtime(settings)
    yield rt
    await rt.close()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Real HTTP: `app` served by uvicorn on a loopback port, in the tests' event loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture(scope="session")
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """Real HTTP: the app served by uvicorn on a loopback port, in the tests' event loop."""
    async with serving(create_app(settings, runtime=runtime)) as base, \
            httpx.AsyncClient(base_url=base, timeout=60) as c:
        yield c


@dataclass(frozen=True)
class ShopKeys:
    """A shop with one key of each shop role, as HTTP headers."""

    shop_id: int
    slug: str
    owner: dict[str, str]
    bot: dict[str, str]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="session")
async def admin(runtime: Runtime) -> dict[str, str]:
    made = await keys.create_key(runtime.pool, Role.ADMIN, None, "test admin")
    return bearer(made.secret)


async def make_shop(runtime: Runtime, prefix: str = "shop") -> ShopKeys:
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    shop = await shops.create_shop(runtime.pool, slug, slug.title())
    owner = await keys.create_key(runtime.pool, Role.OWNER, shop.id, "owner")
    bot = await keys.create_key(runtime.pool, Role.BOT, shop.id, "bot")
    return ShopKeys(shop.id, slug, bearer(owner.secret), bearer(bot.secret))


@pytest.fixture
async def shop(runtime: Runtime) -> ShopKeys:
    return await make_shop(runtime)


@pytest.fixture
async def other_shop(runtime: Runtime) -> ShopKeys:
    return await make_shop(runtime, "other")
