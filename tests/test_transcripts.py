"""Voice transcripts over HTTP: four formats, the pairs they teach, sentiment, entities,
redaction, and the same pair heard in three calls gathering into one queue item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs import transcript_pairs
from knowledge.intake import transcripts
from knowledge.runtime import Runtime
from tests.conftest import ShopKeys

CALLS = Path(__file__).parent / "transcripts"
DELIVERY_Q = "How long does delivery take?"
DELIVERY_A = "Standard delivery takes 2 to 4 working days once the parcel leaves our warehouse."


async def _send(client: httpx.AsyncClient, shop: ShopKeys, name: str,
                **extra: object) -> dict[str, object]:
    body = {"transcript": (CALLS / name).read_text(), "filename": name, **extra}
    r = await client.post("/v1/transcripts", headers=shop.bot, json=body)
    assert r.status_code == 201, r.text
    result: dict[str, object] = r.json()
    return result


async def test_an_angry_call_gives_its_pairs_redacted_entities_and_a_review(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    call = await _send(client, shop, "angry_call.txt", conversation_id="call-1",
                       user_id="cust-9")
    assert [(p["question"], p["answer"]) for p in call["pairs"]] == [
        ("How long does delivery take normally?", DELIVERY_A),
        ("And can I get a refund for the shipping?",
         "Yes, we refund the shipping fee when a delivery is late, it goes back to your card "
         "within 5 days.")]
    assert call["sentiment"] == "negative" and call["needs_review"] is True
    assert call["unanswered"] == []
    entities = call["entities"]
    assert entities["order_numbers"] == ["48213"]
    assert entities["amounts"] == ["€4.95"]
    assert entities["phone_numbers"] == 1 and entities["email_addresses"] == 1
    labels = [t["label"] for t in call["turn_sentiments"]]
    assert labels[0] == "negative" and labels[-1] == "negative"
    # Nothing of the caller's contact details is stored, anywhere.
    stored = await runtime.pool.fetchrow(
        "SELECT transcript, learning_insights::text AS insights, processed_summary "
        "FROM voice_transcripts WHERE id = $1::uuid", call["id"])
    for column in ("transcript", "insights", "processed_summary"):
        assert "jane.doe@example.com" not in (stored[column] or "")
        assert "0612 345 678" not in (stored[column] or "")
    assert "[EMAIL]" in stored["transcript"] and "[PHONE]" in stored["transcript"]
    # Its pairs are queued at high priority, for review (75 is under the threshold of 85).
    queued = call["queued"]
    assert [q["kind"] for q in queued] == ["answer", "answer"]
    item = (await client.get(f"/v1/queue/{queued[0]['item_id']}", headers=shop.owner)).json()
    assert item["status"] == "pending" and item["priority"] == "high"
    assert item["source_type"] == "transcript"
    assert item["signals"][0]["source_id"] == call["id"]
    assert item["signals"][0]["excerpt"][0]["role"] == "customer"
    # Listed for review until someone has looked at it.
    waiting = (await client.get("/v1/transcripts", headers=shop.owner,
                                params={"needs_review": "true"})).json()
    assert [t["id"] for t in waiting["transcripts"]] == [call["id"]]
    assert waiting["transcripts"][0]["conversation_id"] == "call-1"
    done = await client.post(f"/v1/transcripts/{call['id']}/reviewed", headers=shop.owner)
    assert done.status_code == 204
    waiting = (await client.get("/v1/transcripts", headers=shop.owner,
                                params={"needs_review": "true"})).json()
    assert waiting["total"] == 0


async def test_a_question_nobody_answers_is_a_gap_and_the_bot_never_answers_for_the_shop(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "Which gasket fits my machine?",
        "answer": "Part QX-7731 is the replacement group gasket for all Aurora machines."})
    lonely = await _send(client, shop, "unanswered.json")
    assert lonely["format"] == "json" and lonely["pairs"] == []
    assert lonely["unanswered"] == ["Do you sell replacement gaskets for the Aurora?"]
    assert [q["kind"] for q in lonely["queued"]] == ["gap"]
    bot = await _send(client, shop, "bot_speaks.vtt")
    assert bot["format"] == "vtt"
    assert [(p["question"], p["answered_by"], p["start"], p["end"]) for p in bot["pairs"]] == [
        ("Does part QX-7731 fit the Aurora Mini?", "Agent Maria", 11.0, 21.0)]
    assert bot["pairs"][0]["answer"].startswith("Yes, QX-7731 fits every Aurora machine")
    # The bot answered the payment question: no pair from its words, and no gap either.
    assert bot["bot_answered"] == ["Which payment methods do you accept?"]
    assert bot["unanswered"] == []
    assert bot["entities"]["products"] == [{"code": "QX-7731", "known": True}]
    assert bot["entities"]["amounts"] == ["$12.50"]
    assert bot["sentiment"] == "positive" and bot["needs_review"] is False


async def test_the_same_pair_in_three_calls_is_one_item_with_three_sources(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    first = await _send(client, shop, "delivery.srt")
    assert first["format"] == "srt" and first["sentiment"] == "positive"
    # The same call sent again (a retry) is not heard twice.
    again = await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": (CALLS / "delivery.srt").read_text(), "filename": "delivery.srt"})
    assert again.status_code == 409 and again.json()["transcript_id"] == first["id"]
    assert [(p["question"], p["answer"]) for p in first["pairs"]] == [(DELIVERY_Q, DELIVERY_A)]
    turns = [{"speaker": "Customer", "text": "Hi there, how long does delivery take?",
              "start": 0.5, "end": 2.0},
             {"speaker": "Agent", "text": f"Hmm, let me see. {DELIVERY_A}", "start": 2.5,
              "end": 7.0}]
    second = await client.post("/v1/transcripts", headers=shop.bot, json={"turns": turns})
    assert second.status_code == 201, second.text
    third = await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": f"Customer: {DELIVERY_Q}\nAgent: {DELIVERY_A}\nCustomer: Thanks, bye!"})
    assert third.status_code == 201, third.text
    ids = {q["item_id"] for r in (first, second.json(), third.json()) for q in r["queued"]}
    assert len(ids) == 1, [r for r in (first, second.json(), third.json())]
    item = (await client.get(f"/v1/queue/{ids.pop()}", headers=shop.owner)).json()
    assert item["observations"] == 3
    assert {s["source_id"] for s in item["signals"]} == {
        first["id"], second.json()["id"], third.json()["id"]}
    # Heard in three calls, it reached the shop's auto-approval threshold (75 + 5 + 5).
    assert item["status"] == "approved", item
    # The call is found by meaning, and read whole with what it taught.
    found = (await client.get("/v1/transcripts", headers=shop.owner,
                              params={"q": "shipping times"})).json()
    assert found["total"] == 3 and "similarity" in found["transcripts"][0]
    one = (await client.get(f"/v1/transcripts/{first['id']}", headers=shop.owner)).json()
    assert one["turns"][1]["role"] == "customer" and one["turns"][1]["start"] == 3.0
    assert one["queued"][0]["now"]["observations"] == 3


async def test_transcripts_are_the_shops_own_and_bad_ones_are_clear_errors(
        client: httpx.AsyncClient, shop: ShopKeys, other_shop: ShopKeys) -> None:
    call = await _send(client, shop, "delivery.srt")
    assert (await client.get(f"/v1/transcripts/{call['id']}",
                             headers=other_shop.owner)).status_code == 404
    assert (await client.get("/v1/transcripts", headers=other_shop.owner)).json()["total"] == 0
    assert (await client.post(f"/v1/transcripts/{call['id']}/reviewed",
                              headers=other_shop.owner)).status_code == 404
    assert (await client.get("/v1/transcripts", headers=shop.bot)).status_code == 403
    for body in ({"transcript": "just some words without any speaker"},
                 {"transcript": "[not json", "format": "json"},
                 {"transcript": "Customer: hi\u0000"},
                 {"transcript": "Customer: hi", "turns": []},
                 {"turns": [{"speaker": "Customer", "text": "hi", "start": "soon"}]},
                 {"transcript": "Customer: hi", "format": "docx"}):
        r = await client.post("/v1/transcripts", headers=shop.bot, json=body)
        assert r.status_code in {400, 422}, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert json.loads((await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": "x"})).text)["field"] == "transcript"


async def test_a_call_whose_queuing_died_part_way_is_finished_once_by_the_job(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    call = ("Customer: Do you sell oat milk?\nAgent: Yes, two brands of oat milk.\n"
            "Customer: And do you open on Sundays?\nAgent: Sundays from ten till four.\n"
            "Customer: Is there parking nearby?\nAgent: Um.\nCustomer: Okay, bye.\n")
    real_submit = transcripts.submit
    calls = 0

    async def dies_on_the_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionResetError("the database went away")
        return await real_submit(*args, **kwargs)

    monkeypatch.setattr(transcripts, "submit", dies_on_the_second)
    r = await client.post("/v1/transcripts", headers=shop.bot, json={"transcript": call})
    assert r.status_code >= 500
    monkeypatch.setattr(transcripts, "submit", real_submit)
    row = await runtime.pool.fetchrow(
        "SELECT id, learning_insights FROM voice_transcripts WHERE shop_id = $1", shop.shop_id)
    assert row is not None
    insights = row["learning_insights"]
    expected = len(insights["pairs"]) + len(insights["unanswered"])
    assert expected == 3 and len(insights["queued"]) == 1
    # Sent again, it is known (nothing stored twice); what it taught is not lost.
    again = await client.post("/v1/transcripts", headers=shop.bot, json={"transcript": call})
    assert again.status_code == 409
    assert await transcript_pairs.run(runtime) == "queued 0 items from unfinished transcripts"
    await runtime.pool.execute("UPDATE voice_transcripts SET created_at = now() - "
                               "interval '5 minutes' WHERE id = $1", row["id"])
    assert await transcript_pairs.run(runtime) == "queued 2 items from unfinished transcripts"
    assert await transcript_pairs.run(runtime) == "queued 0 items from unfinished transcripts"
    items = await runtime.pool.fetch(
        "SELECT kind, question, observations FROM learning_queue WHERE shop_id = $1 "
        "ORDER BY created_at", shop.shop_id)
    assert [(i["kind"], i["observations"]) for i in items] == [
        ("answer", 1), ("answer", 1), ("gap", 1)]
    shown = (await client.get(f"/v1/transcripts/{row['id']}", headers=shop.owner)).json()
    assert len(shown["queued"]) == 3
