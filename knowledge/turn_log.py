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
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from knowledge.db import ArrayItem, Conn, Vector
from knowledge.runtime import Runtime

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

# JSON goes in as text: asyncpg would read a list inside a jsonb[] parameter as a sub-array.
# $16 'off': a logged turn need not wait for its WAL flush (a database crash may lose the last
# fraction of a second of turns, never corrupt them), set for this statement's own transaction;
# NULL keeps the session's setting (the turn of a knowledge gap commits with its queue item).
LOG_TURNS = """
WITH durability AS (
    SELECT set_config('synchronous_commit',
                      coalesce($16::text, current_setting('synchronous_commit')), true)
),
turn AS (
    INSERT INTO conversation_memory (id, shop_id, conversation_id, user_id, channel, question,
                                     answer, tier, confidence, sources, embedding, metadata)
    SELECT t.id, t.shop_id, t.conversation_id, t.user_id, t.channel, t.question, t.answer,
           t.tier, t.confidence, t.sources::jsonb, t.embedding, t.metadata::jsonb
    FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::real[], $10::text[], $11::vector[], $12::text[])
         AS t(id, shop_id, conversation_id, user_id, channel, question, answer, tier,
              confidence, sources, embedding, metadata)
    RETURNING id
)
INSERT INTO response_analytics (shop_id, conversation_id, response_text, response_type,
                                response_time_ms, ab_test_variant, metrics)
SELECT t.shop_id, t.id, t.answer, t.tier, t.latency_ms, t.variant, t.metrics::jsonb
FROM unnest($1::uuid[], $2::integer[], $7::text[], $8::text[], $13::integer[], $14::text[],
            $15::text[]) AS t(id, shop_id, answer, tier, latency_ms, variant, metrics)
JOIN turn USING (id) CROSS JOIN durability
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


async def write_turns(conn: Conn, turns: Sequence[Turn], *, durable: bool) -> None:
    """Write turns and their analytics rows in one statement."""
    await conn.execute(
        LOG_TURNS, [t.id for t in turns], [t.shop_id for t in turns],
        [t.conversation_id for t in turns], [t.user_id for t in turns],
        [t.channel for t in turns], [t.question for t in turns], [t.answer for t in turns],
        [t.tier for t in turns], [t.confidence for t in turns],
        [json.dumps(t.sources) for t in turns], [ArrayItem(t.vector) for t in turns],
        [json.dumps(t.metadata) for t in turns], [t.latency_ms for t in turns],
        [t.ab_variant for t in turns], [json.dumps(t.metrics) for t in turns],
        None if durable else "off")


# Errors after which the same turns can be written later: the connection or the server went
# away, or the server refused them for now. Anything else is a fault of a turn itself.
_RETRYABLE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
              asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
              asyncpg.TooManyConnectionsError, asyncpg.AdminShutdownError,
              asyncpg.InsufficientResourcesError, asyncpg.DeadlockDetectedError,
              asyncpg.SerializationError)


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
        self.written = 0
        self.dropped = 0
        self.batches = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def add(self, turn: Turn) -> None:
        """Queue a turn; waits only while the log is PENDING_MAX turns behind."""
        if self._closed:
            raise RuntimeError("the turn log is closed")
        if len(self._queue) >= self.pending_max:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self._queue) < self.pending_max)
        self._queue.append(turn)
        self._ids.add(turn.id)
        self._conversations[(turn.shop_id, turn.conversation_id)] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="turn-log")
        self._wake.set()

    async def settled(self, turn_id: UUID | None = None,
                      conversation: tuple[int, str] | None = None) -> None:
        """Wait until a queued turn, or every queued turn of a (shop, conversation), has been
        written (or dropped); at once when none is queued."""
        def done() -> bool:
            return ((turn_id is None or turn_id not in self._ids)
                    and (conversation is None or conversation not in self._conversations))

        if not done():
            async with self._changed:
                await self._changed.wait_for(done)

    async def flush(self) -> None:
        """Wait until every turn queued so far has been written (or dropped)."""
        if self._queue:
            queued = {t.id for t in self._queue}
            async with self._changed:
                await self._changed.wait_for(lambda: not queued & self._ids)

    async def aclose(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None

    async def _run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        give_up_at: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[:self.batch_max]
            try:
                async with self._pool.acquire() as conn:
                    await write_turns(conn, batch, durable=False)
            except _RETRYABLE as exc:
                if self._closed:
                    # Shutting down with the database away: wait for it a while, not forever.
                    give_up_at = give_up_at or loop.time() + CLOSE_WAIT_SECONDS
                    if loop.time() >= give_up_at:
                        log.error("turn log: %d turns lost at shutdown (%s)",
                                  len(self._queue), exc)
                        await self._finish(list(self._queue), dropped=True)
                        continue
                log.warning("turn log: %d turns not written yet (%s); retrying in %.2f s",
                            len(self._queue), exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
                continue
            except asyncpg.PostgresError:
                # One turn the database refuses (its shop deleted meanwhile, say) must not hold
                # back the others: write them one by one and drop only what is refused.
                await self._write_one_by_one(batch)
                continue
            delay = RETRY_FIRST_SECONDS
            self.batches += 1
            await self._finish(batch, dropped=False)

    async def _write_one_by_one(self, batch: list[Turn]) -> None:
        for turn in batch:
            try:
                async with self._pool.acquire() as conn:
                    await write_turns(conn, [turn], durable=False)
            except _RETRYABLE:
                return  # what is left is retried as a batch
            except asyncpg.PostgresError as exc:
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
        async with self._changed:
            self._changed.notify_all()


def turn_log_of(rt: Runtime) -> TurnLog:
    turns = rt.extras.get("turn_log")
    if not isinstance(turns, TurnLog):
        turns = TurnLog(rt.pool)
        rt.extras["turn_log"] = turns
    return turns
