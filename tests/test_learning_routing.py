"""Learning that routes a question to the entry whose answer the owner chose, test traffic
that teaches nothing, and the queue's same-question decision laid open."""

from __future__ import annotations

import asyncio

import httpx

from knowledge.learning.apply import apply_approved
from knowledge.runtime import Runtime
from tests.conftest import ShopKeys, make_shop

DELIVERY = {"question": "How long does delivery take?", "answer": "2 to 4 working days."}
RETURNS = {"question": "Can I return an item?", "answer": "Yes, within 30 days, for free."}


async def _seed(client: httpx.AsyncClient, shop: ShopKeys) -> list[str]:
    r = await client.post("/v1/knowledge", headers=shop.owner, json=[DELIVERY, RETURNS])
    assert r.status_code == 201, r.text
    return [e["entry_id"] for e in r.json()]


async def test_a_correction_with_a_known_answer_adds_a_phrasing_to_that_entry(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    delivery, returns = await _seed(client, shop)
    asked = "How long do I have to change my mind about a parcel?"
    turn = (await client.post("/v1/answer", headers=shop.bot,
                              json={"question": asked})).json()
    down = await client.post("/v1/feedback", headers=shop.bot,
                             json={"turn_id": turn["turn_id"], "type": "thumbs_down"})
    assert down.json()["queued"]["item"]["status"] == "pending"
    feedback_item = down.json()["queued"]["item"]["id"]

    fix = await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": turn["turn_id"], "corrected_answer": RETURNS["answer"]})
    assert fix.status_code == 201, fix.text
    queued = fix.json()["queued"]
    # Priority "normal" (80) is below the shop's 85: approved only because the answer is one
    # the shop already gives, and it goes to that entry, not to the one that was served.
    assert queued["auto_approved"] and queued["item"]["status"] == "approved"
    assert queued["item"]["target_entry_id"] == returns
    settled = (await client.get(f"/v1/queue/{feedback_item}", headers=shop.owner)).json()
    assert settled["status"] == "merged" and settled["merged_into"] == queued["item"]["id"]

    await apply_approved(runtime, shop_id=shop.shop_id)
    listed = (await client.get("/v1/knowledge", headers=shop.owner)).json()
    assert listed["total"] == 2  # no twin entry
    entry = (await client.get(f"/v1/knowledge/{returns}", headers=shop.owner)).json()
    assert entry["version"] == 2 and asked in entry["variants"]
    assert entry["answer"] == RETURNS["answer"]
    untouched = (await client.get(f"/v1/knowledge/{delivery}", headers=shop.owner)).json()
    assert untouched["version"] == 1 and untouched["answer"] == DELIVERY["answer"]
    again = (await client.post("/v1/answer", headers=shop.bot,
                               json={"question": asked})).json()
    assert again["sources"][0]["entry_id"] == returns


async def test_an_owner_confirming_the_answer_given_settles_the_complaint(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    _, returns = await _seed(client, shop)
    turn = (await client.post("/v1/answer", headers=shop.bot,
                              json={"question": RETURNS["question"]})).json()
    assert turn["sources"][0]["entry_id"] == returns
    down = await client.post("/v1/feedback", headers=shop.bot,
                             json={"turn_id": turn["turn_id"], "type": "thumbs_down"})
    feedback_item = down.json()["queued"]["item"]["id"]
    # The owner says the answer the bot gave is the right one: nothing to learn, and nothing
    # left for a reviewer either.
    fix = await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": turn["turn_id"], "corrected_answer": RETURNS["answer"]})
    assert fix.status_code == 201, fix.text
    assert fix.json()["queued"]["outcome"] == "dropped"
    settled = (await client.get(f"/v1/queue/{feedback_item}", headers=shop.owner)).json()
    assert settled["status"] == "merged" and settled["merged_into"] is None
    assert returns in settled["review_note"]
    waiting = (await client.get("/v1/queue", headers=shop.owner,
                                params={"status": "pending"})).json()
    assert waiting["total"] == 0
    audit = (await client.get("/v1/audit", headers=shop.owner,
                              params={"subject_id": feedback_item})).json()
    assert any(a["action"] == "queue.settled"
               and a["after"]["already_known_by"] == returns for a in audit)


async def test_an_answered_gap_with_a_known_answer_joins_that_entry(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    _, returns = await _seed(client, shop)
    asked = "Which moon of Jupiter has the best opera house?"
    said = (await client.post("/v1/answer", headers=shop.bot, json={"question": asked})).json()
    assert said["fallback"]
    gap = (await client.get("/v1/queue", headers=shop.owner, params={"kind": "gap"})).json()
    answered = await client.post(f"/v1/queue/{gap['items'][0]['id']}/answer",
                                 headers=shop.owner, json={"answer": RETURNS["answer"]})
    assert answered.status_code == 200, answered.text
    await apply_approved(runtime, shop_id=shop.shop_id)
    assert (await client.get("/v1/knowledge", headers=shop.owner)).json()["total"] == 2
    entry = (await client.get(f"/v1/knowledge/{returns}", headers=shop.owner)).json()
    assert asked in entry["variants"]


async def test_test_traffic_opens_no_gap(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    await _seed(client, shop)
    nonsense = "Which moon of Jupiter has the best opera house?"
    quiet = (await client.post("/v1/answer", headers=shop.bot,
                               json={"question": nonsense, "learn": False})).json()
    assert quiet["fallback"]
    gaps = (await client.get("/v1/queue", headers=shop.owner, params={"kind": "gap"})).json()
    assert gaps["total"] == 0
    loud = (await client.post("/v1/answer", headers=shop.bot,
                              json={"question": nonsense})).json()
    assert loud["fallback"]
    gaps = (await client.get("/v1/queue", headers=shop.owner, params={"kind": "gap"})).json()
    assert gaps["total"] == 1


async def test_compare_lays_open_the_same_question_decision(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    r = await client.post("/v1/queue/compare", headers=shop.owner, json={"pairs": [
        {"a": "Where is my order 123?", "b": "where is my order 123"},
        {"a": "Does part A11 fit the G1?", "b": "Does part A22 fit the G2?"},
        {"a": "What time do you open?", "b": "Do you sell gift cards?"},
    ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["question_similarity"] == 0.88 and body["text_ratio"] == 90
    same, other_part, unrelated = body["results"]
    assert same["duplicate"] and same["duplicate_up_to"] == 1.0 and same["similarity"] > 0.9
    assert not other_part["duplicate"] and other_part["duplicate_up_to"] is None
    assert not other_part["same_identifiers"]
    assert not unrelated["duplicate"]
    assert unrelated["duplicate_up_to"] == unrelated["similarity"] < 0.88

    too_many = await client.post("/v1/queue/compare", headers=shop.owner, json={
        "pairs": [{"a": "q", "b": "q"}] * 257})
    assert too_many.status_code == 422
    assert too_many.headers["content-type"].startswith("application/problem+json")
    assert "256" in too_many.text
    assert (await client.post("/v1/queue/compare", headers=shop.bot, json={
        "pairs": [{"a": "q", "b": "q"}]})).status_code == 403
    other = await make_shop(runtime, "compare-other")
    assert (await client.post("/v1/queue/compare", headers=other.owner,
                              params={"shop": shop.slug},
                              json={"pairs": [{"a": "q", "b": "q"}]})).status_code in {403, 404}


async def test_concurrent_feedback_on_the_same_entries_is_all_counted(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    await _seed(client, shop)
    # Options and clarify turns credit every entry they offered, so concurrent feedback on
    # them updates the same counters in different orders: none may fail, none may be lost.
    turns = [(await client.post("/v1/answer", headers=shop.bot, json={
        "question": q, "learn": False})).json()
        for q in ["delivery or returns?", "How long until I can send it back?",
                  "parcel timing and refunds"]]
    votes = [("thumbs_down" if i % 2 else "thumbs_up", turns[i % 3]) for i in range(30)]

    async def vote(kind: str, turn: dict[str, object]) -> int:
        r = await client.post("/v1/feedback", headers=shop.bot,
                              json={"turn_id": turn["turn_id"], "type": kind})
        return r.status_code

    assert set(await asyncio.gather(*(vote(k, t) for k, t in votes))) == {201}
    expected = sum(1 if t["tier"] == "answer" else len(t["sources"])
                   for _, t in votes if t["sources"])
    counted = await runtime.pool.fetchval(
        "SELECT coalesce(sum(helpful + unhelpful), 0) FROM entry_stats WHERE shop_id = $1",
        shop.shop_id)
    assert counted == expected


async def test_a_phrasing_never_reverts_an_edited_answer(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    _, returns = await _seed(client, shop)
    fix = await client.post("/v1/corrections", headers=shop.owner, json={
        "question": "Can I bring a gift back to the shop?", "corrected_answer": RETURNS["answer"]})
    assert fix.json()["queued"]["item"]["target_entry_id"] == returns
    edited = "Yes, within 60 days now, for free."
    r = await client.patch(f"/v1/knowledge/{returns}", headers=shop.owner,
                           json={"answer": edited})
    assert r.status_code == 200, r.text
    await apply_approved(runtime, shop_id=shop.shop_id)
    entry = (await client.get(f"/v1/knowledge/{returns}", headers=shop.owner)).json()
    assert entry["answer"] == edited
    assert "Can I bring a gift back to the shop?" in entry["variants"]


async def test_gaps_answered_alike_in_one_batch_make_one_entry(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    await _seed(client, shop)
    answer = "Yes: every first Saturday of the month, 25 per person."
    for question in ["Which moon of Jupiter has the best opera house?",
                     "Recite a sea shanty about turnips, please"]:
        said = (await client.post("/v1/answer", headers=shop.bot,
                                  json={"question": question})).json()
        assert said["fallback"]
    gaps = (await client.get("/v1/queue", headers=shop.owner, params={"kind": "gap"})).json()
    assert gaps["total"] == 2
    for gap in gaps["items"]:
        r = await client.post(f"/v1/queue/{gap['id']}/answer", headers=shop.owner,
                              json={"answer": answer})
        assert r.status_code == 200, r.text
    result = await apply_approved(runtime, shop_id=shop.shop_id)
    assert result.applied == 2 and result.created == 1
    listed = (await client.get("/v1/knowledge", headers=shop.owner)).json()
    assert listed["total"] == 3
    made = next(e for e in listed["items"] if e["answer"] == answer)
    assert len([made["question"], *made["variants"]]) == 2
