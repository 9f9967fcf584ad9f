"""What every service function needs at hand: settings, the database pool and the embedder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from knowledge.model.embedding import Embedder
from knowledge.model.vectors_check import check_embedding_space
from knowledge.redaction import Redactor, redactor_from_settings
from knowledge.settings import Settings
from knowledge.store import db
from knowledge.store.migrate import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    embedder: Embedder
    redactor: Redactor = field(default_factory=Redactor)
    embedded: db.EmbeddedPostgres | None = None
    database_url: str = ""
    extras: dict[str, object] = field(default_factory=dict)

    def helper(self, name: str, kind: type[T], make: Callable[[], T]) -> T:
        """The process-wide helper kept under `name` (a cache, a writer), made on first use."""
        value = self.extras.get(name)
        if not isinstance(value, kind):
            value = make()
            self.extras[name] = value
        return value

    async def close(self) -> None:
        for extra in self.extras.values():
            # Caches with background work (their `aclose`) finish before the pool closes.
            closing = getattr(extra, "aclose", None)
            if closing is not None:
                await closing()
        await self.embedder.stop()
        await self.pool.close()
        if self.embedded is not None:
            # Stops the embedded server unless another learnkb process still uses it.
            await asyncio.to_thread(self.embedded.stop)


async def open_runtime(settings: Settings, *, load_model: bool = True,
                       run_migrations: bool = True, check_vectors: bool = True) -> Runtime:
    """Start (or connect to) the database, migrate it, load the model and check the vectors."""
    redactor = redactor_from_settings(settings)
    url, embedded = await db.resolve_database_url(settings)
    if run_migrations:
        applied = await migrate(url)
        if applied:
            log.info("applied %d migrations", len(applied))
    pool = await db.create_pool(url, settings)
    embedder = Embedder(settings)
    if load_model:
        await asyncio.to_thread(embedder.load)
        await embedder.start()
        if check_vectors:
            await check_embedding_space(pool, embedder)
    return Runtime(settings=settings, pool=pool, embedder=embedder, redactor=redactor,
                   embedded=embedded, database_url=url)
