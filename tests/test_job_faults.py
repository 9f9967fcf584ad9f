"""Batch jobs under faults: killed mid-batch and run again, each item is applied exactly once
and the views come out whole; two processes on one database run each job once per tick and
never apply an item twice. Each test has a PostgreSQL of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from evaluation.instance import learnkb_command
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import shops
from knowledge.store.db import ensure_database
from tests.test_faults import OwnPostgres, own_postgres  # noqa: F401 - a fixture

INSERT_APPROVED = """
INSERT INTO learning_queue (shop_id, status, source_type, kind, question, proposed_content,
                            confidence_score, reviewed_at)
SELECT $1, 'approved', 'manual', 'answer',
       'How do I look after product ' || $2 || '-' || n || '?',
       'Product ' || $2 || '-' || n || ' is cared for with method ' || n || '.',
       90, now()
FROM generate_series(1, $3) AS n
"""
APPLIED = """
SELECT count(*) FILTER (WHERE status = 'applied') AS applied,
       count(*) FILTER (WHERE status = 'approved') AS waiting,
       count(DISTINCT applied_knowledge_id) AS knowledge
FROM learning_queue WHERE shop_id = $1
"""
LIVE_ENTRIES = """
SELECT count(*) AS entries, count(DISTINCT metadata ->> 'queue_item') AS from_items
FROM knowledge_base_rag WHERE shop_id = $1
"""


@pytest.fixture
async def database(own_postgres: OwnPostgres) -> AsyncIterator[str]:  # noqa: F811
    yield await ensure_database(own_postgres.admin_uri, "jobs")


async def _new_shop(url: str, tmp_path: Path, prefix: str) -> shops.Shop:
    """A shop in the test's own database (its migrations applied on the way)."""
    rt = await open_runtime(Settings(database_url=url, data_dir=tmp_path, run_jobs=False))
    try:
        return await shops.create_shop(rt.pool, f"{prefix}-{uuid.uuid4().hex[:6]}", prefix)
    finally:
        await rt.close()


@pytest.fixture
def models(settings: Settings) -> Path:
    """The model export the suite's runtime made, so no process here makes its own."""
    return settings.model_cache_dir


def _env(url: str, data_dir: Path, models: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNKB_")}
    env.update(LEARNKB_DATABASE_URL=url, LEARNKB_DATA_DIR=str(data_dir),
               LEARNKB_MODEL_CACHE=str(models),
               **{f"LEARNKB_{k.upper()}": v for k, v in settings.items()})
    return env


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([learnkb_command(), *command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([learnkb_command(), *command], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


WAIT_SECONDS = 120


async def _wait_for(conn: asyncpg.Connection, query: str, *args: object) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await conn.fetchval(query, *args):
        assert time.monotonic() < deadline, query
        await asyncio.sleep(0.05)


async def test_apply_killed_mid_batch_then_run_again_applies_each_item_once(
        database: str, tmp_path: Path, models: Path, runtime: Runtime) -> None:
    shop = await _new_shop(database, tmp_path, "apply")
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(INSERT_APPROVED, shop.id, "KX", 1500)
        env = _env(database, tmp_path / "cli", models)
        job = start(["jobs", "run", "apply"], env)
        # Killed once its first batch (500 items, one transaction) has committed.
        await _wait_for(conn, "SELECT count(*) > 0 FROM learning_queue "
                              "WHERE shop_id = $1 AND status = 'applied'", shop.id)
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        partial = await conn.fetchrow(APPLIED, shop.id)
        assert 0 < partial["applied"] < 1500, dict(partial)
        assert partial["applied"] % 500 == 0  # whole batches or nothing
        assert await conn.fetchval(LIVE_ENTRIES, shop.id) == partial["applied"]
        done = run(["jobs", "run", "apply"], env)
        assert done.returncode == 0, done.stderr[-2000:]
        final = await conn.fetchrow(APPLIED, shop.id)
        assert (final["applied"], final["waiting"], final["knowledge"]) == (1500, 0, 1500)
        entries = await conn.fetchrow(LIVE_ENTRIES, shop.id)
        assert (entries["entries"], entries["from_items"]) == (1500, 1500)
        # The killed run left no trace but its committed batch; the second recorded itself.
        runs = await conn.fetch("SELECT outcome FROM job_runs WHERE job = 'apply' "
                                "ORDER BY started_at")
        assert [r["outcome"] for r in runs] == [None, "ok"]
    finally:
        await conn.close()


async def test_refresh_and_retention_killed_then_run_again_leave_whole_results(
        database: str, tmp_path: Path, models: Path, runtime: Runtime) -> None:
    shop = await _new_shop(database, tmp_path, "views")
    conn = await asyncpg.connect(database)
    try:
        # 60,000 turns over 40 days, old ones past a 10-day retention.
        await conn.execute("""
            WITH t AS (
                INSERT INTO conversation_memory (shop_id, conversation_id, user_id, channel,
                                                 question, answer, tier, confidence,
                                                 created_at)
                SELECT $1, 'c' || (n % 500), 'u' || (n % 300), 'chat', 'question ' || n,
                       'answer ' || n, CASE WHEN n % 9 = 0 THEN 'fallback' ELSE 'answer' END,
                       0.8, now() - make_interval(hours => n % 960)
                FROM generate_series(1, 60000) AS n
                RETURNING id, shop_id, answer, tier, created_at
            )
            INSERT INTO response_analytics (shop_id, conversation_id, response_text,
                                            response_type, response_time_ms, created_at)
            SELECT shop_id, id, answer, tier, 12, created_at FROM t""", shop.id)
        await conn.execute("UPDATE shops SET retention_days = 10 WHERE id = $1", shop.id)
        env = _env(database, tmp_path / "cli", models)
        for job in ("refresh-metrics", "retention"):
            for delay in (0.4, 1.2):
                proc = start(["jobs", "run", job], env)
                await asyncio.sleep(delay)  # start-up takes about as long: killed anywhere
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            done = run(["jobs", "run", job], env)
            assert done.returncode == 0, done.stderr[-2000:]
        # The view holds exactly what the table says (refreshed after retention cleared text,
        # which keeps the turns and their analytics).
        await conn.execute("REFRESH MATERIALIZED VIEW daily_answer_metrics")
        view = await conn.fetchval("SELECT sum(answers) FROM daily_answer_metrics "
                                   "WHERE shop_id = $1", shop.id)
        assert view == 60000
        left = await conn.fetchrow("""
            SELECT count(*) FILTER (WHERE created_at < now() - interval '10 days'
                                    AND question IS NOT NULL AND question <> '') AS old_text,
                   count(*) FILTER (WHERE created_at > now() - interval '9 days'
                                    AND question LIKE 'question %') AS recent_text
            FROM conversation_memory WHERE shop_id = $1""", shop.id)
        assert left["old_text"] == 0 and left["recent_text"] > 0, dict(left)
    finally:
        await conn.close()


async def test_two_processes_run_each_job_once_per_tick_and_apply_each_item_once(
        database: str, tmp_path: Path, models: Path, runtime: Runtime) -> None:
    shop = await _new_shop(database, tmp_path, "twins")
    conn = await asyncpg.connect(database)
    env = _env(database, tmp_path / "workers", models, apply_interval_seconds="1",
               embed_turns_interval_seconds="1")
    workers = [start(["worker"], env) for _ in range(2)]
    try:
        await _wait_for(conn, "SELECT count(*) >= 3 FROM job_runs WHERE job = 'apply'")
        for wave in range(4):
            await conn.execute(INSERT_APPROVED, shop.id, f"W{wave}", 60)
            await asyncio.sleep(1)
        # The process that has been winning the ticks goes away: the other one takes over.
        winner = await conn.fetchval("SELECT runner FROM job_runs WHERE job = 'apply' "
                                     "ORDER BY started_at DESC LIMIT 1")
        gone = next(w for w in workers if winner.endswith(f":{w.pid}"))
        gone.send_signal(signal.SIGKILL)
        gone.wait(30)
        for wave in range(4, 8):
            await conn.execute(INSERT_APPROVED, shop.id, f"W{wave}", 60)
            await asyncio.sleep(1)
        await _wait_for(conn, "SELECT count(*) = 0 FROM learning_queue "
                              "WHERE shop_id = $1 AND status = 'approved'", shop.id)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(30)
    try:
        final = await conn.fetchrow(APPLIED, shop.id)
        assert (final["applied"], final["knowledge"]) == (480, 480)
        entries = await conn.fetchrow(LIVE_ENTRIES, shop.id)
        assert (entries["entries"], entries["from_items"]) == (480, 480)
        for job in ("apply", "embed-turns"):
            r = await conn.fetchrow("""
                SELECT count(*) AS runs, count(DISTINCT tick) AS ticks,
                       count(DISTINCT runner) AS runners,
                       extract(epoch FROM max(tick) - min(tick)) AS seconds
                FROM job_runs WHERE job = $1""", job)
            # Once per tick, never twice, though both processes ran the schedule.
            assert r["runs"] == r["ticks"] <= r["seconds"] + 1, dict(r)
            assert r["runners"] == 2, dict(r)  # the survivor took over
    finally:
        await conn.close()
