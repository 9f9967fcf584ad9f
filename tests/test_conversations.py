"""Whole conversations over HTTP: bulk logging (idempotent), repeats across logged and answered
turns, gaps from unsure turns, a conversation read back, and forgetting a customer."""

from __future__ import annotations

import uuid

import httpx

from jobs.scheduler import run_job
from knowledge.answering.turn_log import turn_log_of
from knowledge.runtime import Runtime
from tests.conftest import ShopKeys

FAQ = [{"question": "How long does shipping take?",
        "answer": "Standard delivery takes 2 to 4 working days."},
       {"question": "Can I return an item?",
        "answer": "Unused items can be returned within 30 days for a full refund."}]


def _turn(conversation: str, n: int, message: str, confidence: float = 0.9,
          **extra: object) -> dict[str, object]:
    return {"turn_id": f"{conversation}-{n}", "conversation_id": conversation,
            "message": message, "answer": "Standard delivery takes 2 to 4 working days.",
            "confidence": confidence, **extra}


async def test_a_batch_sent_twice_is_stored_once(client: httpx.AsyncClient, runtime: Runtime,
                                                 shop: ShopKeys) -> None:
    batch = {"turns": [_turn("c-twice", n, f"question number {n}", user_id="u-1",
                             ab_variant="B", asked_at="2026-11-30T10:00:00Z",
                             answered_at="2026-11-30T10:00:00.250Z") for n in range(50)]}
    first = await client.post("/v1/conversations/bulk", headers=shop.bot, json=batch)
    assert first.status_code == 200, first.text
    assert first.json()["stored"] == 50 and first.json()["already_stored"] == 0
    again = await client.post("/v1/conversations/bulk", headers=shop.bot, json=batch)
    assert again.json()["stored"] == 0 and again.json()["already_stored"] == 50
    assert again.json()["turn_ids"] == first.json()["turn_ids"]
    rows = await runtime.pool.fetchval(
        "SELECT count(*) FROM conversation_memory WHERE shop_id = $1 AND conversation_id = $2",
        shop.shop_id, "c-twice")
    analytics = await runtime.pool.fetchrow(
        "SELECT count(*) AS n, min(response_time_ms) AS ms, min(ab_test_variant) AS v "
        "FROM response_analytics WHERE shop_id = $1", shop.shop_id)
    assert rows == 50 and analytics["n"] == 50
    assert analytics["ms"] == 250 and analytics["v"] == "B"
    too_many = await client.post("/v1/conversations/bulk", headers=shop.bot, json={
        "turns": [_turn("c-big", n, "q") for n in range(1_001)]})
    assert too_many.status_code in {400, 422}
    twice = await client.post("/v1/conversations/bulk", headers=shop.bot, json={
        "turns": [_turn("c-dup", 1, "q"), _turn("c-dup", 1, "q")]})
    assert twice.status_code == 422 and "twice" in twice.json()["detail"]


async def test_repeats_count_across_logged_and_answered_turns(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json=FAQ)
    logged = await client.post("/v1/conversations/bulk", headers=shop.bot, json={"turns": [
        _turn("c-rep", 1, "how long does shipping take?"),
        _turn("c-rep", 2, "how long does shipping take?")]})
    assert logged.status_code == 200
    # Not yet embedded: the same words still count.
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how long does shipping take?", "conversation_id": "c-rep",
        "learn": False})).json()
    assert said["tier"] == "options", said  # the third time: offered options
    # Once embedded, a rephrasing counts too: the fourth time is handed over.
    await run_job(runtime, "embed-turns")
    await turn_log_of(runtime).flush()
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how many days does shipping take?", "conversation_id": "c-rep",
        "learn": False})).json()
    assert said["tier"] == "handover", said
    # Another conversation is not affected.
    other = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how long does shipping take?", "conversation_id": "c-else"})).json()
    assert other["tier"] == "answer", other


async def test_unsure_and_handed_over_turns_open_gaps_and_a_conversation_reads_back(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys,
        other_shop: ShopKeys) -> None:
    logged = (await client.post("/v1/conversations/bulk", headers=shop.bot, json={"turns": [
        _turn("c-gap", 1, "do you engrave the tampers?", confidence=0.1),
        _turn("c-gap", 2, "can I speak to someone about a wholesale order?", confidence=0.5,
              handed_over=True),
        _turn("c-gap", 3, "how long does shipping take?", confidence=0.95)]})).json()
    assert "embedded 3 logged turns; 2 knowledge gaps" in await run_job(runtime, "embed-turns")
    gaps = (await client.get("/v1/queue", headers=shop.owner,
                             params={"kind": "gap", "status": "pending"})).json()["items"]
    by_question = {g["question"]: g for g in gaps}
    assert by_question["do you engrave the tampers?"]["priority"] == "normal"
    assert by_question["can I speak to someone about a wholesale order?"]["priority"] == "high"
    assert "how long does shipping take?" not in by_question
    # Feedback and a correction on a logged turn, by learnkb's id for it.
    turn = logged["turn_ids"]["c-gap-3"]
    assert (await client.post("/v1/feedback", headers=shop.bot, json={
        "turn_id": turn, "type": "thumbs_down", "reason": "too slow"})).status_code in {200, 201}
    assert (await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": turn, "corrected_answer": "Shipping takes 1 to 2 days now.",
        "priority": "normal"})).status_code in {200, 201}
    read = (await client.get("/v1/conversations/c-gap", headers=shop.owner)).json()
    assert [t["client_turn_id"] for t in read["turns"]] == ["c-gap-1", "c-gap-2", "c-gap-3"]
    assert [t["tier"] for t in read["turns"]] == ["clarify", "handover", "answer"]
    last = read["turns"][2]
    assert last["feedback"][0]["type"] == "thumbs_down" and last["feedback"][0]["reason"]
    assert last["corrections"][0]["corrected_answer"] == "Shipping takes 1 to 2 days now."
    assert (await client.get("/v1/conversations/c-gap",
                             headers=other_shop.owner)).status_code == 404
    assert (await client.get("/v1/conversations/nothing-here",
                             headers=shop.owner)).status_code == 404


TEXT_COLUMNS = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = current_schema()
  AND data_type IN ('text', 'character varying', 'jsonb', 'json')
  AND table_name IN (SELECT table_name FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
"""


async def _tables_holding(runtime: Runtime, marker: str) -> set[str]:
    found = set()
    for row in await runtime.pool.fetch(TEXT_COLUMNS):
        table, column = row["table_name"], row["column_name"]
        # Names come from the catalogue, not from input.
        hit = await runtime.pool.fetchval(
            f'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE "{column}"::text LIKE $1)',
            f"%{marker}%")
        if hit:
            found.add(f"{table}.{column}")
    return found


async def test_forgetting_a_customer_removes_their_text_everywhere_and_nothing_else(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys,
        other_shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json=FAQ)
    markers = {}
    for user in ("alice", "bob"):
        marker = f"zq{user}{uuid.uuid4().hex[:6]}"
        markers[user] = marker
        said = (await client.post("/v1/answer", headers=shop.bot, json={
            "question": f"does the {marker} grinder ship abroad?", "user_id": user,
            "conversation_id": f"conv-{user}"})).json()
        await client.post("/v1/feedback", headers=shop.bot, json={
            "turn_id": said["turn_id"], "type": "thumbs_down",
            "reason": f"the {marker} answer was wrong"})
        await client.post("/v1/corrections", headers=shop.owner, json={
            "turn_id": said["turn_id"], "priority": "normal",
            "corrected_answer": f"Yes, {marker} grinders ship to the whole EU."})
        await client.post("/v1/conversations/bulk", headers=shop.bot, json={"turns": [
            _turn(f"log-{user}", 1, f"is the {marker} in stock?", confidence=0.1,
                  user_id=user)]})
        r = await client.post("/v1/transcripts", headers=shop.bot, json={
            "user_id": user, "transcript":
            f"Customer: Do you repair the {marker} machine?\n"
            f"Agent: Yes, we repair every {marker} machine within a week."})
        assert r.status_code == 201, r.text
    # The same call from both, bob first: the item is his and only loses her signal.
    shared = {}
    for user in ("bob", "alice"):
        r = await client.post("/v1/transcripts", headers=shop.bot, json={
            "conversation_id": f"conv-{user}", "transcript":
            "Customer: Do you ship espresso machines to Norway?\n"
            "Agent: Yes, we ship every machine to Norway within five working days.\n"
            f"Customer: Thanks, this is {user}."})
        assert r.status_code == 201, r.text
        shared[user] = r.json()
    await run_job(runtime, "embed-turns")
    await turn_log_of(runtime).flush()
    assert await _tables_holding(runtime, markers["alice"])
    # Another shop's owner erasing "alice" touches nothing of this shop.
    foreign = await client.delete("/v1/users/alice", headers=other_shop.owner)
    assert foreign.status_code == 200 and foreign.json()["removed"]["turns"] == 0
    assert (await client.delete("/v1/users/alice", headers=shop.bot)).status_code == 403
    erased = await client.delete("/v1/users/alice", headers=shop.owner)
    assert erased.status_code == 200, erased.text
    removed = erased.json()["removed"]
    assert removed["turns"] == 2 and removed["transcripts"] == 2
    assert removed["feedback"] == 1 and removed["corrections"] == 1
    assert removed["queue_items"] >= 3
    # Nothing was applied to knowledge here (knowledge the owner approved would be the shop's
    # and stay): no column of any table holds her words any more.
    assert await _tables_holding(runtime, markers["alice"]) == set()
    item = (await client.get(f"/v1/queue/{shared['bob']['queued'][0]['item_id']}",
                             headers=shop.owner)).json()
    sources = {x["source_id"] for x in item["signals"]}
    assert shared["bob"]["id"] in sources and shared["alice"]["id"] not in sources
    # Her call (sent under her conversation, without a user id) went too.
    assert (await client.get(f"/v1/transcripts/{shared['alice']['id']}",
                             headers=shop.owner)).status_code == 404
    assert (await client.get(f"/v1/transcripts/{shared['bob']['id']}",
                             headers=shop.owner)).status_code == 200
    kept = await _tables_holding(runtime, markers["bob"])
    assert {"conversation_memory.question", "voice_transcripts.transcript",
            "conversation_feedback.reason", "learning_queue.question"} <= kept, kept
    trail = (await client.get("/v1/audit", headers=shop.owner)).json()
    erasure = next(r for r in trail if r["action"] == "user.erase")
    assert "alice" not in str(erasure) and erasure["after"]["turns"] == 2


async def test_bad_turns_are_clear_errors(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    # A time with a zone and one without compare as UTC, not as a 500.
    mixed = await client.post("/v1/conversations/bulk", headers=shop.bot, json={"turns": [
        _turn("c-times", 1, "q?", asked_at="2026-11-30T10:00:00",
              answered_at="2026-11-30T10:00:01Z")]})
    assert mixed.status_code == 200, mixed.text
    for body in ({"turns": [_turn("c-bad", 1, "q", confidence=1.5)]},
                 {"turns": [_turn("c-bad", 1, "q\u0000")]},
                 {"turns": [_turn("c-bad", 1, "q", tier="maybe")]},
                 {"turns": [_turn("c-bad", 1, "q", asked_at="yesterday")]},
                 {"turns": []}, {"turns": [{"turn_id": "x"}]}):
        r = await client.post("/v1/conversations/bulk", headers=shop.bot, json=body)
        assert r.status_code in {400, 422}, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    huge = await client.post("/v1/transcripts", headers=shop.bot, json={"turns": [
        {"speaker": "Customer", "text": "hi, how long does delivery take?", "start": 1e300}]})
    assert huge.status_code == 422 and huge.json()["limit"] == 86_400
    for params in ({"to": "0001-01-02T00:00:00Z"}, {"from": "9999-12-31T00:00:00Z"}):
        r = await client.get("/v1/metrics/summary", headers=shop.owner, params=params)
        assert r.status_code in {400, 422}, (params, r.text)
    r = await client.get("/v1/metrics/daily", headers=shop.owner, params={"to": "0001-01-02"})
    assert r.status_code in {400, 422}, r.text
