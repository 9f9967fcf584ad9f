"""Owners' figures over HTTP: a summary equal to figures computed by hand, day by day, alerts
raised by seeded situations (and not without them), Prometheus, and retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from statistics import mean

import httpx
import numpy as np
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.factory import create_app
from app.observability import metrics_port_hook
from jobs.scheduler import run_job
from knowledge.answering.turn_log import turn_log_of
from knowledge.learning.alerts import MIN_ANSWERS
from knowledge.runtime import Runtime
from knowledge.settings import Settings
from tests.conftest import ShopKeys, make_shop

NOW = datetime.now(UTC)

# (tier, confidence, answer time in ms, A/B variant)
SEEDED = [("answer", 0.91, 120, "A"), ("answer", 0.85, 80, "A"), ("answer", 0.95, 60, "B"),
          ("answer", 0.77, 200, "B"), ("answer", 0.88, 90, "A"), ("options", 0.55, 150, "B"),
          ("fallback", 0.12, 40, "A"), ("fallback", 0.20, 45, "B"),
          ("handover", 0.30, 300, "A")]


def _turns(prefix: str, rows: list[tuple[str, float, int, str]], at: datetime,
           **extra: object) -> list[dict[str, object]]:
    out = []
    for n, (tier, confidence, ms, variant) in enumerate(rows):
        asked = at + timedelta(seconds=n)
        out.append({"turn_id": f"{prefix}-{n}", "conversation_id": f"{prefix}-c{n}",
                    "message": f"seeded question {prefix} number {n}?",
                    "answer": "a seeded answer", "confidence": confidence, "tier": tier,
                    "handed_over": tier == "handover", "ab_variant": variant,
                    "asked_at": asked.isoformat(),
                    "answered_at": (asked + timedelta(milliseconds=ms)).isoformat(), **extra})
    return out


def _figures(rows: list[tuple[str, float, int, str]]) -> dict[str, float]:
    times = [r[2] for r in rows]
    return {"answers": len(rows),
            "fallback_rate": round(sum(r[0] == "fallback" for r in rows) / len(rows), 4),
            "handover_rate": round(sum(r[0] == "handover" for r in rows) / len(rows), 4),
            "mean_confidence": round(mean(r[1] for r in rows), 4),
            # percentile_cont is linear interpolation, numpy's default.
            "p50_answer_ms": round(float(np.percentile(times, 50)), 1),
            "p95_answer_ms": round(float(np.percentile(times, 95)), 1)}


async def test_the_summary_equals_figures_computed_by_hand(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    logged = (await client.post("/v1/conversations/bulk", headers=shop.bot, json={
        "turns": _turns("m", SEEDED, NOW - timedelta(hours=1))})).json()
    await run_job(runtime, "embed-turns")  # the handed-over turn becomes a gap
    ids = logged["turn_ids"]
    for n, kind in ((0, "thumbs_up"), (1, "thumbs_up"), (3, "thumbs_down")):
        r = await client.post("/v1/feedback", headers=shop.bot,
                              json={"turn_id": ids[f"m-{n}"], "type": kind})
        assert r.status_code in {200, 201}, r.text
    correction = (await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": ids["m-4"], "corrected_answer": "A better seeded answer.",
        "priority": "normal"})).json()
    queue = (await client.get("/v1/queue", headers=shop.owner,
                              params={"status": "pending"})).json()["items"]
    # A logged turn names no entry it answered from: its thumbs down asks for an answer.
    disliked = next(i for i in queue if i["source_type"] == "feedback")
    assert (await client.post(f"/v1/queue/{disliked['id']}/reject", headers=shop.owner,
                              json={"reason": "the answer was fine"})).status_code == 200
    item = correction["queued"]["item"]["id"]
    assert (await client.post(f"/v1/queue/{item}/approve", headers=shop.owner,
                              json={})).status_code == 200
    await run_job(runtime, "apply")
    params = {"from": (NOW - timedelta(days=1)).isoformat(),
              "to": (NOW + timedelta(days=1)).isoformat()}
    got = (await client.get("/v1/metrics/summary", headers=shop.owner, params=params)).json()
    expected = _figures(SEEDED)
    for key, value in expected.items():
        assert got[key] == value, (key, got[key], value)
    assert got["thumbs_up_ratio"] == round(2 / 3, 4)
    # The gaps of the two fallbacks and the handover, the thumbs down's, the correction.
    assert got["queue_inflow"] == 5
    assert (got["approved"], got["rejected"], got["applied"]) == (1, 1, 1)
    assert got["signal_to_applied_p50_seconds"] is not None
    assert got["signal_to_applied_p50_seconds"] >= 0
    assert [g["question"] for g in got["top_unanswered"]] == [
        f"seeded question m number {n}?" for n in (6, 7, 8)]
    for variant in ("A", "B"):
        rows = [r for r in SEEDED if r[3] == variant]
        for key, value in _figures(rows).items():
            assert got["variants"][variant][key] == value, (variant, key)
    # A period with nothing in it, and one the wrong way round.
    empty = (await client.get("/v1/metrics/summary", headers=shop.owner, params={
        "from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})).json()
    assert empty["answers"] == 0 and empty["fallback_rate"] is None
    wrong = await client.get("/v1/metrics/summary", headers=shop.owner, params={
        "from": params["to"], "to": params["from"]})
    assert wrong.status_code == 422
    # Day by day, from the views once they are refreshed.
    await run_job(runtime, "refresh-metrics")
    days = (await client.get("/v1/metrics/daily", headers=shop.owner)).json()
    today = {d["date"]: d for d in days}[(NOW - timedelta(hours=1)).date().isoformat()]
    assert today["answers"] == len(SEEDED)
    assert today["variants"]["A"]["answers"] == 5
    assert today["positive_feedback"] == 2 and today["negative_feedback"] == 1
    assert today["approved"] == 1 and today["rejected"] == 1 and today["applied"] == 1


SLOW_ANSWERS = """
INSERT INTO response_analytics (shop_id, conversation_id, response_text, response_type,
                                response_time_ms, metrics)
SELECT shop_id, id, answer, tier, $2, '{}'::jsonb FROM conversation_memory WHERE shop_id = $1
"""


async def _situation(client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys,
                     name: str) -> None:
    """Seed one alert's situation in a shop of its own."""
    if name == "fallback_rate":
        # A week of 1 fallback in 20, then a day of 1 in 2.
        week = [("answer", 0.9, 50, "A")] * 38 + [("fallback", 0.1, 50, "A")] * 2
        today = [("answer", 0.9, 50, "A"), ("fallback", 0.1, 50, "A")] * 15
        await client.post("/v1/conversations/bulk", headers=shop.bot,
                          json={"turns": _turns("w", week, NOW - timedelta(days=3))})
        await client.post("/v1/conversations/bulk", headers=shop.bot,
                          json={"turns": _turns("d", today, NOW - timedelta(minutes=30))})
    elif name == "answer_time":
        # learnkb's own answers were slow this hour (seeded: the test's answers are fast).
        for n in range(MIN_ANSWERS):
            await client.post("/v1/answer", headers=shop.bot,
                              json={"question": f"slow question {n}?", "learn": False})
        await turn_log_of(runtime).flush()
        await runtime.pool.execute("DELETE FROM response_analytics WHERE shop_id = $1",
                                   shop.shop_id)
        await runtime.pool.execute(SLOW_ANSWERS, shop.shop_id, 900)
    elif name == "negative_feedback":
        for n in range(6):
            said = (await client.post("/v1/answer", headers=shop.bot,
                                      json={"question": f"question {n}?"})).json()
            await client.post("/v1/feedback", headers=shop.bot,
                              json={"turn_id": said["turn_id"], "type": "thumbs_down"})
    elif name == "negative_calls":
        for n in range(6):
            r = await client.post("/v1/transcripts", headers=shop.bot, json={
                "transcript": f"Customer: This is ridiculous, my order {1000 + n} never "
                              "arrived and nobody answers my emails!\nAgent: I am sorry.\n"
                              "Customer: Unacceptable. Terrible service."})
            assert r.json()["sentiment"] == "negative"
    elif name == "queue_growth":
        for n in range(22):
            await client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
                "question": f"question {n} about topic {n * 7919 % 101}",
                "answer": f"answer {n}", "confidence": 10})


ALERTS = ("fallback_rate", "answer_time", "negative_feedback", "negative_calls",
          "queue_growth")


async def test_each_alert_is_raised_by_its_situation_and_not_without_it(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    for name in ALERTS:
        shop = await make_shop(runtime, "alert")
        before = {a["name"]: a["firing"] for a in (await client.get(
            "/v1/alerts", headers=shop.owner)).json()}
        assert set(before) == set(ALERTS) and not any(before.values()), (name, before)
        await _situation(client, runtime, shop, name)
        after = {a["name"]: a for a in (await client.get(
            "/v1/alerts", headers=shop.owner)).json()}
        assert [n for n, a in after.items() if a["firing"]] == [name], (name, after)
        figures = after[name]
        if name == "fallback_rate":
            assert figures["last_24h"] == 0.5 and figures["baseline_7d"] == 0.05
        elif name == "answer_time":
            assert figures["p95_ms_last_hour"] == 900.0
        elif name in {"negative_feedback", "negative_calls"}:
            assert figures["last_24h"] == 6
        else:
            assert figures["pending"] >= 20


async def test_prometheus_metrics_parse_and_count_what_happened(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "How long does shipping take?", "answer": "Two to four days."})
    await client.post("/v1/answer", headers=shop.bot,
                      json={"question": "how long does shipping take?", "learn": False})
    await run_job(runtime, "embed-turns")
    await client.get("/v1/metrics/summary", headers=shop.owner)
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    answers = {s.labels["tier"]: s.value for s in families["learnkb_answers"].samples
               if s.name == "learnkb_answers_total"}
    assert answers.get("answer", 0) >= 1
    assert "learnkb_queue_items" in families
    assert "learnkb_embedding_batch_size" in families
    assert {s.labels["state"] for s in families["learnkb_pool_connections"].samples} >= {
        "open", "idle", "in_use", "max"}
    jobs = {s.labels["job"] for s in families["learnkb_job_runs"].samples}
    assert "embed-turns" in jobs
    timed = {s.labels.get("path") for f in families.values() for s in f.samples
             if "request_duration" in s.name}
    assert {"/v1/answer", "/v1/metrics/summary"} <= timed, timed
    assert "/metrics" not in timed


async def test_retention_clears_old_raw_text_and_keeps_what_it_must(
        client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str],
        shop: ShopKeys) -> None:
    r = await client.patch(f"/v1/shops/{shop.slug}", headers=admin, json={"retention_days": 2})
    assert r.status_code == 200 and r.json()["retention_days"] == 2
    old = NOW - timedelta(days=5)
    await client.post("/v1/conversations/bulk", headers=shop.bot, json={
        "turns": _turns("old", SEEDED[:3], old) + _turns("new", SEEDED[:2], NOW)})
    call = (await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": "Customer: How long does delivery take?\nAgent: Standard delivery "
                      "takes 2 to 4 working days once the parcel leaves our warehouse.\n"
                      "Customer: And do you gift wrap?\nAgent: We do, for two euros."})).json()
    item = call["queued"][0]["item_id"]
    # The first pair is approved, the second is not: only approved excerpts are kept.
    assert (await client.post(f"/v1/queue/{item}/approve", headers=shop.owner,
                              json={})).status_code == 200
    unapproved = call["queued"][1]["item_id"]
    # The call was five days ago.
    await runtime.pool.execute(
        "UPDATE voice_transcripts SET created_at = $2 WHERE id = $1::uuid", call["id"], old)
    await runtime.pool.execute(
        "UPDATE learning_queue SET created_at = $2 WHERE shop_id = $1", shop.shop_id, old)
    result = await run_job(runtime, "retention")
    assert "3 turns" in result and "1 transcripts" in result, result
    turns = {r["client_turn_id"]: r for r in await runtime.pool.fetch(
        "SELECT client_turn_id, question, answer, tier FROM conversation_memory "
        "WHERE shop_id = $1", shop.shop_id)}
    assert turns["old-0"]["question"] is None and turns["old-0"]["answer"] is None
    assert turns["old-0"]["tier"] == "answer"  # the figures keep their rows
    assert turns["new-0"]["question"] == "seeded question new number 0?"
    kept = (await client.get(f"/v1/transcripts/{call['id']}", headers=shop.owner)).json()
    assert kept["transcript"] == "" and kept["turns"] == [] and kept["sentiment"]
    assert kept["queued"][0]["item_id"] == item and "question" not in kept["queued"][0]
    excerpt = (await client.get(f"/v1/queue/{item}", headers=shop.owner)).json()["signals"]
    assert "2 to 4 working days" in excerpt[0]["excerpt"][1]["text"]
    other = (await client.get(f"/v1/queue/{unapproved}", headers=shop.owner)).json()
    assert "excerpt" not in other["signals"][0]
    counted = await runtime.pool.fetchval(
        "SELECT count(*) FROM response_analytics WHERE shop_id = $1", shop.shop_id)
    assert counted == 5
    # Again: nothing left to clear.
    assert "0 turns" in await run_job(runtime, "retention")


async def test_prometheus_on_a_port_of_its_own(runtime: Runtime, settings: Settings,
                                               shop: ShopKeys) -> None:
    """With LEARNKB_METRICS_PORT the API serves no /metrics, and the queue depth is kept fresh
    in the background (nothing on the API scrapes it)."""
    own_port = create_app(settings.with_overrides(metrics_port=9464), runtime=runtime)
    assert not any(r.path == "/metrics" for r in own_port.routes)
    off = create_app(settings.with_overrides(metrics_enabled=False), runtime=runtime)
    assert not any(r.path == "/metrics" for r in off.routes)
    await runtime.pool.execute(
        "INSERT INTO learning_queue (shop_id, source_type, kind, question) "
        "VALUES ($1, 'manual', 'gap', 'a gap for the gauge')", shop.shop_id)
    stop = await metrics_port_hook(runtime)
    try:
        await asyncio.sleep(0.2)
        pending = REGISTRY.get_sample_value("learnkb_queue_items", {"status": "pending"})
        expected = await runtime.pool.fetchval(
            "SELECT count(*) FROM learning_queue WHERE status = 'pending'")
        assert pending == expected and pending >= 1
    finally:
        await stop()
