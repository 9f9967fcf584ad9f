"""The log of answered turns (conversation_memory and response_analytics), written after the
answer has gone out.

A bot waits for its answer, not for the analytics write: turns are queued in the process that
answered them and written by one background task, all turns queued meanwhile in one statement,
so under load the log costs PostgreSQL one statement per batch instead of one per answer.
Whatever reads a turn back in this process (feedback and corrections on it, the repeat count of
its conversation) first waits for that turn to be written, so a signal sent the moment the
answer arrives still finds its turn. Shutting down writes every queued turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from knowledge.errors import Unavailable
from knowledge.runtime import Runtime
from knowledge.store.db import ArrayItem, Conn, Vector, is_unavailable

log = logging.getLogger(__name__)

# Turns written by one statement, and turns queued before answering waits for the log to
# catch up (the database is down or slower than the answers).
BATCH_MAX = 256
PENDING_MAX = 10_000
# After a failed write the log tries again, waiting longer each time up to RETRY_MAX_SECONDS.
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0
# At shutdown, how long queued turns wait for an unreachable database before they are given up.
CLOSE_WAIT_SECONDS = 10.0
# How long a reader of a turn waits for a log that makes no progress.
SETTLE_WAIT_SECONDS = 10.0

# JSON goes in as text: asyncpg would read a list inside a jsonb[] parameter as a sub-array.
# Turns are committed durably: an asynchronous commit lost answered turns when PostgreSQL was
# killed (tests/test_faults.py); off the answer path, one WAL flush per batch is cheap.
LOG_TURNS = """
WITH turn AS (
    INSERT INTO conversation_memory (id, shop_id, conversation_id, user_id, channel, question,
                                     answer, tier, confidence, sources, embedding, metadata,
                                     created_at)
    SELECT t.id, t.shop_id, t.conversation_id, t.user_id, t.channel, t.question, t.answer,
           t.tier, t.confidence, t.sources::jsonb, t.embedding, t.metadata::jsonb, t.at
    FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::real[], $10::text[], $11::vector[], $12::text[],
                $16::timestamptz[])
         AS t(id, shop_id, conversation_id, user_id, channel, question, answer, tier,
              confidence, sources, embedding, metadata, at)
    RETURNING id
)
INSERT INTO response_analytics (shop_id, conversation_id, response_text, response_type,
                                response_time_ms, ab_test_variant, metrics, created_at)
SELECT t.shop_id, t.id, t.answer, t.tier, t.latency_ms, t.variant, t.metrics::jsonb, t.at
FROM unnest($1::uuid[], $2::integer[], $7::text[], $8::text[], $13::integer[], $14::text[],
            $15::text[], $16::timestamptz[])
     AS t(id, shop_id, answer, tier, latency_ms, variant, metrics, at)
JOIN turn USING (id)
"""


@dataclass(frozen=True, slots=True)
class Turn:
    """One answered question as the log keeps it (its question already redacted)."""

    id: UUID
    shop_id: int
    conversation_id: str
    user_id: str | None
    channel: str
    question: str
    answer: str
    tier: str
    confidence: float
    sources: list[dict[str, Any]]
    vector: Vector
    metadata: dict[str, Any]
    latency_ms: int
    ab_variant: str | None
    metrics: dict[str, Any]
    # When it was answered: the log may write it later (the repeat window and daily metrics
    # go by this time).
    answered_at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def write_turns(conn: Conn, turns: Sequence[Turn]) -> None:
    """Write turns and their analytics rows in one statement."""
    await conn.execute(
        LOG_TURNS, [t.id for t in turns], [t.shop_id for t in turns],
        [t.conversation_id for t in turns], [t.user_id for t in turns],
        [t.channel for t in turns], [t.question for t in turns], [t.answer for t in turns],
        [t.tier for t in turns], [t.confidence for t in turns],
        [json.dumps(t.sources) for t in turns], [ArrayItem(t.vector) for t in turns],
        [json.dumps(t.metadata) for t in turns], [t.latency_ms for t in turns],
        [t.ab_variant for t in turns], [json.dumps(t.metrics) for t in turns],
        [t.answered_at for t in turns])


# SQLSTATE classes and codes after which the same turns can be written later: the connection
# or the server went away, a transaction was rolled back to break a conflict, the server is out
# of resources, shutting down or read-only (a failover), a lock was not available. Anything
# else (bad data, a constraint) is a fault of a turn itself.
_RETRY_CLASSES = ("08", "40", "53", "57", "58")
_RETRY_CODES = frozenset({"25006", "55P03"})


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _RETRY_CLASSES or state in _RETRY_CODES
    if isinstance(exc, asyncpg.DataError):  # a value asyncpg cannot encode
        return False
    return is_unavailable(exc)


class TurnLog:
    """Turns waiting to be written and the task that writes them."""

    def __init__(self, pool: asyncpg.Pool, batch_max: int = BATCH_MAX,
                 pending_max: int = PENDING_MAX) -> None:
        self._pool = pool
        self.batch_max = batch_max
        self.pending_max = pending_max
        self._queue: list[Turn] = []
        self._ids: set[UUID] = set()
        self._conversations: Counter[tuple[int, str]] = Counter()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._progress_at = time.monotonic()
        self.written = 0
        self.dropped = 0
        self.batches = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def behind_seconds(self) -> float:
        """How long queued turns have waited without any being written (0 when none wait)."""
        return time.monotonic() - self._progress_at if self._queue else 0.0

    async def add(self, turn: Turn) -> None:
        """Queue a turn; waits only while the log is PENDING_MAX turns behind."""
        if len(self._queue) >= self.pending_max and not self._closed:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len(self._queue) < self.pending_max or self._closed)
        if self._closed:
            raise Unavailable("the service is shutting down")
        if not self._queue:
            self._progress_at = time.monotonic()
        self._queue.append(turn)
        self._ids.add(turn.id)
        self._conversations[(turn.shop_id, turn.conversation_id)] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="turn-log")
        self._wake.set()

    async def settled(self, turn_id: UUID | None = None,
                      conversation: tuple[int, str] | None = None) -> None:
        """Wait until a queued turn, and the turns of a (shop, conversation) queued so far,
        have been written (or dropped); at once when none is queued. A log that makes no
        progress is waited for at most SETTLE_WAIT_SECONDS: the reader then sees what is
        written."""
        waiting = {turn_id} & self._ids if turn_id is not None else set()
        if conversation is not None and conversation in self._conversations:
            waiting |= {t.id for t in self._queue
                        if (t.shop_id, t.conversation_id) == conversation}
        if waiting:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._until_gone(waiting), SETTLE_WAIT_SECONDS)

    async def flush(self) -> None:
        """Wait until every turn queued so far has been written (or dropped)."""
        if self._queue:
            await self._until_gone({t.id for t in self._queue})

    async def _until_gone(self, ids: set[UUID]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not ids & self._ids)

    async def aclose(self) -> None:
        """Write what is queued, then stop. A database that is away is waited for at most
        CLOSE_WAIT_SECONDS; what is still queued then is lost, and logged as lost."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()  # an add() waiting for room gives up
        task, self._task = self._task, None
        if task is None:
            return
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=CLOSE_WAIT_SECONDS)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            log.error("turn log: %d turns lost at shutdown (the database did not take them "
                      "within %.0f s)", len(self._queue), CLOSE_WAIT_SECONDS)
            await self._finish(list(self._queue), dropped=True)

    async def _run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while self._queue or not self._closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[:self.batch_max]
            try:
                await self._write(batch)
            except Exception as exc:  # whatever happens, the writer goes on
                if not _retryable(exc):
                    # A turn the database refuses (its shop deleted meanwhile, say) must not
                    # hold back the others: write them one by one, dropping only what fails.
                    await self._write_one_by_one(batch)
                    continue
                log.warning("turn log: %d turns not written yet (%s); retrying in %.2f s",
                            len(self._queue), exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
                continue
            delay = RETRY_FIRST_SECONDS
            self.batches += 1
            await self._finish(batch, dropped=False)

    async def _write(self, turns: list[Turn]) -> None:
        async with self._pool.acquire() as conn:
            await write_turns(conn, turns)

    async def _write_one_by_one(self, batch: list[Turn]) -> None:
        for turn in batch:
            try:
                await self._write([turn])
            except Exception as exc:
                if _retryable(exc):
                    return  # what is left is retried as a batch
                log.error("turn log: turn %s of shop %d not written: %s", turn.id,
                          turn.shop_id, exc)
                await self._finish([turn], dropped=True)
            else:
                await self._finish([turn], dropped=False)

    async def _finish(self, turns: list[Turn], *, dropped: bool) -> None:
        gone = {t.id for t in turns}
        self._queue = [t for t in self._queue if t.id not in gone]
        for turn in turns:
            self._ids.discard(turn.id)
            key = (turn.shop_id, turn.conversation_id)
            self._conversations[key] -= 1
            if self._conversations[key] <= 0:
                del self._conversations[key]
        if dropped:
            self.dropped += len(turns)
        else:
            self.written += len(turns)
        self._progress_at = time.monotonic()
        async with self._changed:
            self._changed.notify_all()


def turn_log_of(rt: Runtime) -> TurnLog:
    return rt.helper("turn_log", TurnLog, lambda: TurnLog(rt.pool))
