"""The forward-only migration runner: applies migrations/NNNN_*.sql in order, once each."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from knowledge.errors import Conflict

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# One fixed advisory lock key: two processes starting at once apply migrations one at a time.
MIGRATION_LOCK_KEY = 0x1EA5_0001

LOCK = "SELECT pg_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED = "SELECT version, checksum FROM schema_migrations"
RECORD = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise Conflict(f"migration file {path.name} does not match NNNN_name.sql")
        found.append(Migration(match.group(1), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise Conflict("two migration files share a version number")
    return found


async def migrate(url_or_conn: str | asyncpg.Connection,
                  directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date)."""
    conn = (await asyncpg.connect(url_or_conn) if isinstance(url_or_conn, str) else url_or_conn)
    applied_now: list[str] = []
    try:
        await conn.execute(LOCK, MIGRATION_LOCK_KEY)
        try:
            await conn.execute(CREATE_TABLE)
            done = {r["version"]: r["checksum"] for r in await conn.fetch(APPLIED)}
            for migration in load_migrations(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise Conflict(
                            f"migration {migration.name} changed after it was applied; "
                            "migrations are forward-only: add a new file instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(RECORD, migration.version, migration.name,
                                       migration.checksum)
                log.info("applied migration %s", migration.name)
                applied_now.append(migration.name)
        finally:
            await conn.execute(UNLOCK, MIGRATION_LOCK_KEY)
    finally:
        if isinstance(url_or_conn, str):
            await conn.close()
    return applied_now
