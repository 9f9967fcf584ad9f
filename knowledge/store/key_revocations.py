"""Revocations pushed to every process: PostgreSQL notifies, each process listens.

A process caches the keys whose slow hash it verified. Asking the database on every request
whether a cached key was revoked since cost a query per request; instead every revocation (and
every deleted key) is notified on a channel that each process listens to on a connection of its
own (migration 0025). A cached key is then trusted without a query when it was last found
valid while the listener was already listening: a revocation committed after that moment was
notified to this process. While the listener is down, and for keys found valid before it came
up, the database is asked per request as before, so a lost connection never lets a revoked key
through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from uuid import UUID

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "learnkb_key_revoked"
# A connection that died without a word (a dropped network) is found by a ping this often.
PING_SECONDS = 30.0
# Revocations are rare and final: ids are kept until this many, then the set starts over and
# every cached key is asked about once more.
MAX_REMEMBERED = 100_000


class Revocations:
    """This process's view of revocations: which keys were revoked while it listened, and
    since when it has listened without a break."""

    def __init__(self, database_url: str, retry_seconds: float = 1.0) -> None:
        self.database_url = database_url
        self.retry_seconds = retry_seconds
        self.revoked: set[UUID] = set()
        # time.monotonic() when LISTEN took effect on the current connection; None while down.
        self.listening_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def start(self) -> None:
        """Listen in the background (idempotent); until it listens, nothing is trusted."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="key-revocations")

    def trusted(self, key_id: UUID | None, checked_at: float) -> bool | None:
        """Whether a key found valid at `checked_at` (monotonic, taken before the check's
        query) may be used without asking again: False if revoked, True if no revocation can
        have been missed since, None if the database must be asked."""
        if key_id is None:
            return None
        if key_id in self.revoked:
            return False
        since = self.listening_since
        return True if since is not None and checked_at >= since else None

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            if len(self.revoked) >= MAX_REMEMBERED:
                # Forgetting ids would trust their keys again: start over instead, so every
                # cached key is checked once more.
                self.revoked.clear()
                self.listening_since = time.monotonic()
            self.revoked.add(UUID(str(payload)))

    def _terminated(self, _conn: object) -> None:
        self.listening_since = None
        self._lost.set()

    async def _listen(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.database_url, timeout=5,
                                             server_settings={"application_name":
                                                              "learnkb-listener"})
                self._lost.clear()
                conn.add_termination_listener(self._terminated)
                await conn.add_listener(CHANNEL, self._notified)
                # LISTEN has taken effect: revocations committed from now on are notified.
                self.listening_since = time.monotonic()
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), PING_SECONDS)
                        break
                    await conn.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.warning("key revocation listener down, checking keys per request: %s", exc)
            finally:
                self.listening_since = None
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self.retry_seconds)

    async def aclose(self) -> None:
        self.listening_since = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
