"""The learning loop over HTTP: signals, dedup outcomes, review, audit, apply."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from knowledge.access import CLI_ADMIN
from knowledge.answering.turn_log import turn_log_of
from knowledge.learning import apply as apply_module
from knowledge.learning.apply import apply_approved
from knowledge.learning.queue import ItemDraft, submit
from knowledge.runtime import Runtime
from knowledge.store.shops import get_shop
from tests.conftest import ShopKeys, make_shop

NORWAY = {"question": "Do you ship to Norway?",
          "answer": "No, sorry: we only ship within the European Union."}


async def _seed(client: httpx.AsyncClient, shop: ShopKeys,
                entries: list[dict[str, Any]] | None = None) -> list[str]:
    r = await client.post("/v1/knowledge", headers=shop.owner, json=entries or [
        NORWAY,
        {"question": "How long does delivery take?", "answer": "2 to 4 working days."},
        {"question": "Can I return an item?", "answer": "Yes, within 30 days."},
    ])
    assert r.status_code == 201, r.text
    return [e["entry_id"] for e in r.json()]


async def _ask(client: httpx.AsyncClient, shop: ShopKeys, question: str) -> dict[str, Any]:
    r = await client.post("/v1/answer", headers=shop.bot, json={"question": question})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _suggest(client: httpx.AsyncClient, shop: ShopKeys, question: str, answer: str,
                   confidence: int = 60) -> dict[str, Any]:
    r = await client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
        "question": question, "answer": answer, "confidence": confidence})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_the_whole_loop(client: httpx.AsyncClient, shop: ShopKeys,
                              runtime: Runtime) -> None:
    ids = await _seed(client, shop)
    wrong = await _ask(client, shop, "Do you ship to Norway?")
    assert wrong["sources"][0]["entry_id"] == ids[0] and "only ship within" in wrong["answer"]

    thumbs = await client.post("/v1/feedback", headers=shop.bot, json={
        "turn_id": wrong["turn_id"], "type": "thumbs_down", "reason": "that's outdated"})
    assert thumbs.status_code == 201, thumbs.text
    assert thumbs.json()["sentiment"] == "negative"
    assert thumbs.json()["queued"]["item"]["kind"] == "improve"
    assert thumbs.json()["queued"]["item"]["status"] == "pending"

    fix = await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": wrong["turn_id"], "priority": "urgent",
        "corrected_answer": "Yes! Since March we ship to Norway, in 5 to 8 working days.",
        "context": "new carrier contract"})
    assert fix.status_code == 201, fix.text
    queued = fix.json()["queued"]
    assert queued["auto_approved"] and queued["item"]["status"] == "approved"
    assert queued["item"]["target_entry_id"] == ids[0]

    result = await apply_approved(runtime, shop_id=shop.shop_id)
    assert result.applied >= 1 and result.superseded >= 1

    right = await _ask(client, shop, "can you deliver my order to Norway?")
    assert right["tier"] == "answer", right
    assert right["sources"][0]["entry_id"] == ids[0]
    assert "Since March" in right["answer"]
    history = (await client.get(f"/v1/knowledge/{ids[0]}/history", headers=shop.owner)).json()
    assert [h["version"] for h in history] == [1, 2]
    assert history[0]["answer"] == NORWAY["answer"] and history[0]["valid_to"]
    assert history[1]["created_by"] == "system"
    item = (await client.get(f"/v1/queue/{queued['item']['id']}", headers=shop.owner)).json()
    assert item["status"] == "applied" and item["applied_knowledge_id"] == history[1]["id"]
    trail = (await client.get("/v1/audit", headers=shop.owner,
                              params={"subject_id": queued["item"]["id"]})).json()
    assert {"queue.conflict", "queue.auto_approve", "queue.apply"} <= {
        a["action"] for a in trail} or {"queue.new", "queue.auto_approve", "queue.apply"} <= {
        a["action"] for a in trail}
    corrected = await runtime.pool.fetchval(
        "SELECT applied_at FROM owner_corrections WHERE id = $1",
        uuid.UUID(fix.json()["correction_id"]))
    assert corrected is not None


async def test_dedup_outcomes(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    ids = await _seed(client, shop)
    # new
    first = await _suggest(client, shop, "Do you sell descaler?", "Yes, DS-1, 9.90 a bottle.")
    assert first["outcome"] == "new" and first["item"]["status"] == "pending"
    # merge: the same question (rephrased) with the same answer
    again = await _suggest(client, shop, "do you sell descaler",
                           "Yes, DS-1, 9.90 a bottle.")
    assert again["outcome"] == "merged" and again["item"]["id"] == first["item"]["id"]
    assert again["item"]["observations"] == 2
    assert again["item"]["confidence"] > first["item"]["confidence"]
    assert len(again["item"]["signals"]) == 2
    # drop: live knowledge already says it
    known = await _suggest(client, shop, "Do you ship to Norway?", NORWAY["answer"])
    assert known["outcome"] == "dropped" and known["item"] is None
    # conflict: same question as live knowledge, another answer
    clash = await _suggest(client, shop, "Do you ship to Norway?", "Yes, in 5 days.", 99)
    assert clash["outcome"] == "conflict" and clash["item"]["status"] == "pending"
    assert clash["item"]["conflict_entry_id"] == ids[0]
    listed = (await client.get("/v1/queue", headers=shop.owner,
                               params={"conflict": "true"})).json()
    assert [i["id"] for i in listed["items"]] == [clash["item"]["id"]]
    assert listed["items"][0]["conflict"]["answer"] == NORWAY["answer"]
    # negative cache: a rejected suggestion does not come back, but is counted
    spam = await _suggest(client, shop, "Do you buy used grinders?", "Yes, for cash.")
    rejected = await client.post(f"/v1/queue/{spam['item']['id']}/reject", headers=shop.owner,
                                 json={"reason": "we never buy used machines"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    back = await _suggest(client, shop, "Do you buy used grinders?", "Yes, for cash.")
    assert back["outcome"] == "rejected_before" and back["item"]["status"] == "rejected"
    assert back["item"]["observations"] == 2
    pending = (await client.get("/v1/queue", headers=shop.owner,
                                params={"status": "pending"})).json()
    assert spam["item"]["id"] not in [i["id"] for i in pending["items"]]


@pytest.mark.parametrize(("threshold", "priority", "approved"), [
    (80, "normal", True), (81, "normal", False), (95, "urgent", True), (96, "urgent", False),
    (0, "low", True), (100, "urgent", False)])
async def test_auto_approval_threshold_edges(client: httpx.AsyncClient, runtime: Runtime,
                                             admin: dict[str, str], threshold: int,
                                             priority: str, approved: bool) -> None:
    shop = await make_shop(runtime, "edges")
    r = await client.patch(f"/v1/shops/{shop.slug}", headers=admin,
                           json={"auto_approve_threshold": threshold})
    assert r.json()["auto_approve_threshold"] == threshold
    fix = await client.post("/v1/corrections", headers=shop.owner, json={
        "question": "Is there a student discount?", "corrected_answer": "Yes, 10% off.",
        "priority": priority})
    assert fix.json()["queued"]["auto_approved"] is approved
    assert fix.json()["queued"]["item"]["status"] == ("approved" if approved else "pending")


async def test_merging_raises_confidence_to_auto_approval(client: httpx.AsyncClient,
                                                          shop: ShopKeys) -> None:
    body = {"question": "Do you have a loyalty card?", "priority": "normal",
            "corrected_answer": "Yes, every tenth bag of beans is free."}
    first = (await client.post("/v1/corrections", headers=shop.owner, json=body)).json()
    assert first["queued"]["item"]["status"] == "pending"  # 80 < 85
    second = (await client.post("/v1/corrections", headers=shop.owner, json=body)).json()
    assert second["queued"]["outcome"] == "merged"
    assert second["queued"]["item"]["confidence"] == 85
    assert second["queued"]["auto_approved"] and second["queued"]["item"]["status"] == "approved"


async def test_knowledge_gaps_gather_and_an_answer_teaches(client: httpx.AsyncClient,
                                                           shop: ShopKeys,
                                                           runtime: Runtime) -> None:
    await _seed(client, shop)
    for phrasing in ["Do you offer coffee roasting workshops?",
                     "do you have coffee roasting workshops",
                     "Are there any coffee roasting workshops?"]:
        assert (await _ask(client, shop, phrasing))["tier"] == "fallback"
    gaps = (await client.get("/v1/queue", headers=shop.owner,
                             params={"kind": "gap", "sort": "observations"})).json()
    assert gaps["total"] == 1
    gap = gaps["items"][0]
    assert gap["observations"] == 3 and gap["source_type"] == "gap"
    answered = await client.post(f"/v1/queue/{gap['id']}/answer", headers=shop.owner, json={
        "answer": "Yes: every first Saturday of the month, 25 per person."})
    assert answered.status_code == 200 and answered.json()["status"] == "approved"
    await apply_approved(runtime, shop_id=shop.shop_id)
    now = await _ask(client, shop, "when is your next roasting workshop?")
    assert "first Saturday" in now["answer"], now


async def test_bulk_review(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    made = [await _suggest(client, shop, f"Question {i} about kettle model K{i}00?",
                           f"Answer {i}.") for i in range(3)]
    ids = [m["item"]["id"] for m in made]
    rejected = await client.post("/v1/queue/bulk", headers=shop.owner,
                                 json={"action": "reject", "ids": ids[:1], "reason": "no"})
    assert rejected.json() == [{"id": ids[0], "ok": True, "status": "rejected",
                                "error": None}]
    results = (await client.post("/v1/queue/bulk", headers=shop.owner,
                                 json={"action": "approve", "ids": ids})).json()
    assert [r["ok"] for r in results] == [False, True, True]
    assert "rejected" in results[0]["error"]
    missing_reason = (await client.post("/v1/queue/bulk", headers=shop.owner,
                                        json={"action": "reject", "ids": ids[1:2]})).json()
    assert missing_reason[0]["ok"] is False and "reason" in missing_reason[0]["error"]
    edited = await client.post(f"/v1/queue/{ids[1]}/approve", headers=shop.owner,
                               json={"answer": "Answer 1, edited."})
    assert edited.status_code == 200 and edited.json()["proposed_content"] == "Answer 1, edited."
    merged = await client.post(f"/v1/queue/{ids[2]}/merge", headers=shop.owner,
                               json={"into": ids[1]})
    assert merged.status_code == 200 and merged.json()["observations"] == 2
    more = [(await _suggest(client, shop, f"Is kettle K{i}99 induction-safe?", "Yes."))["item"]
            for i in range(3)]
    folded = (await client.post("/v1/queue/bulk", headers=shop.owner, json={
        "action": "merge", "ids": [m["id"] for m in more[1:]], "into": more[0]["id"]})).json()
    assert [r["ok"] for r in folded] == [True, True]
    target = (await client.get(f"/v1/queue/{more[0]['id']}", headers=shop.owner)).json()
    assert target["observations"] == 3 and len(target["signals"]) == 3


async def test_review_listing_sorts_filters_and_pages(client: httpx.AsyncClient, shop: ShopKeys,
                                                     runtime: Runtime) -> None:
    low = await _suggest(client, shop, "Do you sell kettle model K100?", "Yes, in steel.")
    often = await _suggest(client, shop, "Do you sell toaster model T200?", "Yes, two slots.")
    for _ in range(2):
        again = await _suggest(client, shop, "Do you sell toaster model T200?", "Yes, two slots.")
        assert again["outcome"] == "merged"
    urgent = (await client.post("/v1/corrections", headers=shop.owner, json={
        "question": "Is blender B300 dishwasher-safe?", "corrected_answer": "Only its jug.",
        "priority": "urgent"})).json()["queued"]
    ids = {n: m["item"]["id"] for n, m in (("low", low), ("often", often), ("urgent", urgent))}

    async def listing(**params: Any) -> dict[str, Any]:
        r = await client.get("/v1/queue", headers=shop.owner, params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    order = [i["id"] for i in (await listing(sort="priority"))["items"]]
    assert order == [ids["urgent"], ids["often"], ids["low"]]
    assert (await listing(sort="observations"))["items"][0]["id"] == ids["often"]
    assert (await listing(sort="newest"))["items"][0]["id"] == ids["urgent"]
    corrections = await listing(source="correction")
    assert corrections["total"] == 1 and corrections["items"][0]["status"] == "approved"
    assert (await listing(status="pending"))["total"] == 2
    # Items alike in every sort key page in the order of their ids, without repeats or gaps
    # (enough of them that PostgreSQL's top-N sort would otherwise order them as it pleases).
    for i in range(6):
        ids[f"lamp {i}"] = (await _suggest(client, shop, f"Does lamp L{i}42 take LED bulbs?",
                                           "Yes."))["item"]["id"]
    await runtime.pool.execute(
        "UPDATE learning_queue SET created_at = '2026-01-01', observations = 1, "
        "priority = 'normal', confidence_score = 60 WHERE shop_id = $1", shop.shop_id)
    for sort in ("priority", "observations", "age", "newest", "confidence"):
        pages = [await listing(sort=sort, limit=2, offset=k) for k in range(0, 9, 2)]
        assert [p["total"] for p in pages] == [9] * 5
        assert [i["id"] for p in pages for i in p["items"]] == sorted(ids.values()), sort


async def test_redaction_before_storage(client: httpx.AsyncClient, shop: ShopKeys,
                                        runtime: Runtime) -> None:
    turn = await _ask(client, shop, "my card 4111 1111 1111 1111 was charged twice, "
                                    "mail me at jo@example.com")
    await turn_log_of(runtime).flush()
    stored = await runtime.pool.fetchval("SELECT question FROM conversation_memory WHERE id = $1",
                                         uuid.UUID(turn["turn_id"]))
    assert "4111" not in stored and "jo@example.com" not in stored and "[CARD]" in stored
    fix = (await client.post("/v1/corrections", headers=shop.owner, json={
        "question": "How do I get a refund?",
        "corrected_answer": "Call Anna on +49 30 1234 5678 or write to anna@shop.example."
    })).json()
    row = await runtime.pool.fetchrow(
        "SELECT corrected_answer, metadata FROM owner_corrections WHERE id = $1",
        uuid.UUID(fix["correction_id"]))
    assert "anna@shop.example" not in row["corrected_answer"]
    assert "[PHONE]" in row["corrected_answer"]
    assert row["metadata"]["redacted"] == {"email": 1, "phone": 1}
    assert "[EMAIL]" in fix["queued"]["item"]["proposed_content"]


async def test_shops_cannot_touch_each_others_learning(client: httpx.AsyncClient,
                                                       runtime: Runtime,
                                                       admin: dict[str, str]) -> None:
    a = await make_shop(runtime, "learn-a")
    b = await make_shop(runtime, "learn-b")
    await _seed(client, a)
    turn = await _ask(client, a, "Do you ship to Norway?")
    item = (await _suggest(client, a, "Do you sell gift cards?", "Yes, from 20."))["item"]
    for headers in (b.bot, b.owner):
        r = await client.post("/v1/feedback", headers=headers,
                              json={"turn_id": turn["turn_id"], "type": "thumbs_down"})
        assert r.status_code == 404, r.text
    r = await client.post("/v1/corrections", headers=b.owner,
                          json={"turn_id": turn["turn_id"], "corrected_answer": "x"})
    assert r.status_code == 404
    for method, path, body in [
            ("GET", f"/v1/queue/{item['id']}", None),
            ("POST", f"/v1/queue/{item['id']}/approve", {}),
            ("POST", f"/v1/queue/{item['id']}/reject", {"reason": "x"}),
            ("POST", f"/v1/queue/{item['id']}/answer", {"answer": "x"}),
            ("POST", f"/v1/queue/{item['id']}/merge", {"into": item["id"]})]:
        r = await client.request(method, path, headers=b.owner, json=body)
        assert r.status_code in {404, 422}, (path, r.text)
        assert "gift cards" not in r.text
    bulk = (await client.post("/v1/queue/bulk", headers=b.owner,
                              json={"action": "approve", "ids": [item["id"]]})).json()
    assert bulk[0]["ok"] is False
    assert (await client.get("/v1/queue", headers=b.owner)).json()["total"] == 0
    assert (await client.post("/v1/knowledge/suggestions", headers=b.bot, json={
        "question": "q", "answer": "a"})).status_code == 403
    assert (await client.get("/v1/queue", headers=b.bot)).status_code == 403
    assert (await client.get("/v1/audit", headers=b.owner)).json() == []
    # Across all shops (other tests' shops included, hence only what is this recent).
    everything = (await client.get("/v1/queue", headers=admin, params={
        "limit": 500, "since": item["created_at"]})).json()
    assert item["id"] in [i["id"] for i in everything["items"]]
    still = (await client.get(f"/v1/queue/{item['id']}", headers=a.owner)).json()
    assert still["status"] == "pending"


async def test_two_apply_workers_apply_each_item_once(client: httpx.AsyncClient,
                                                      shop: ShopKeys,
                                                      runtime: Runtime) -> None:
    for i in range(40):
        await _suggest(client, shop, f"Is accessory A{i}{i} compatible with grinder G{i}?",
                       f"Yes, A{i}{i} fits G{i}.", confidence=99)
    results = await asyncio.gather(apply_approved(runtime, batch_size=7, shop_id=shop.shop_id),
                                   apply_approved(runtime, batch_size=7, shop_id=shop.shop_id))
    assert sum(r.applied for r in results) == 40
    counts = await runtime.pool.fetch(
        "SELECT metadata->>'queue_item' AS item, count(*) FROM knowledge_base_rag "
        "WHERE shop_id = $1 AND source = 'learning' GROUP BY 1", shop.shop_id)
    assert len(counts) == 40 and all(r["count"] == 1 for r in counts)


async def test_batches_side_by_side_make_no_twin_entries(client: httpx.AsyncClient,
                                                       shop: ShopKeys,
                                                       runtime: Runtime) -> None:
    """Items with one answer, spread over batches applied at the same time: the batches do not
    see each other's uncommitted entries, so without reservations each would start its own."""
    answer = "Yes: every grinder we sell takes the universal burr set U1."
    for i in range(8):
        await _suggest(client, shop, f"Does the universal burr set fit grinder model {i}?",
                       answer, confidence=99)
    result = await apply_approved(runtime, batch_size=1, shop_id=shop.shop_id)
    assert result.applied == 8
    live = await runtime.pool.fetch(
        "SELECT question, variants FROM knowledge_base_rag "
        "WHERE shop_id = $1 AND valid_to IS NULL AND answer = $2", shop.shop_id, answer)
    assert len(live) == 1
    asked = {live[0]["question"], *live[0]["variants"]}
    assert asked == {f"Does the universal burr set fit grinder model {i}?" for i in range(8)}


async def test_batches_side_by_side_keep_the_order_of_answers(client: httpx.AsyncClient,
                                                             shop: ShopKeys,
                                                             runtime: Runtime) -> None:
    """Two answers for one entry, approved one after the other, land in two batches applied at
    once; the later one is the entry's answer at the end, as when applied one batch at a time.
    The earlier one sits last in the first batch, behind nine other changes, so the second
    batch would reach the entry first if entries were taken when written, not when claimed."""
    ids = await _seed(client, shop, [{"question": f"What does kit K{i}{i} contain?",
                                      "answer": f"Kit K{i}{i}: the basics."} for i in range(10)])
    owner = await get_shop(runtime.pool, shop.shop_id)

    async def approve(entry: str, question: str, answer: str) -> None:
        queued = await submit(runtime, owner, ItemDraft(
            kind="answer", source_type="manual", question=question, answer=answer,
            confidence=99, target_entry_id=uuid.UUID(entry)), CLI_ADMIN)
        assert queued.outcome == "new" and queued.item is not None, queued
        assert queued.item.status == "approved", queued

    for i in range(9):
        await approve(ids[i], f"Is a tamper in kit K{i}{i}?", f"Kit K{i}{i}: a tamper too.")
    older, newer = "Kit K99: a scale and a knock box.", "Since May, kit K99 holds only a scale."
    await approve(ids[9], "Is a scale in kit K99?", older)
    await approve(ids[9], "Does kit K99 come with a scale?", newer)
    result = await apply_approved(runtime, batch_size=10, shop_id=shop.shop_id)
    assert result.applied == 11
    live = await runtime.pool.fetchval(
        "SELECT answer FROM knowledge_base_rag WHERE shop_id = $1 AND entry_id = $2 "
        "AND valid_to IS NULL", shop.shop_id, uuid.UUID(ids[9]))
    assert live == newer


async def test_an_answer_given_to_an_entry_and_proposed_as_new_makes_no_twin(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime) -> None:
    """In one batch, one item gives an entry a new answer and another proposes the same answer
    as a new entry (before it and after it): the second joins the entry."""
    ids = await _seed(client, shop, [{"question": f"What does kit K{i}{i} contain?",
                                      "answer": f"Kit K{i}{i}: the basics."} for i in range(2)])
    owner = await get_shop(runtime.pool, shop.shop_id)

    async def approve(question: str, answer: str, entry: str | None = None) -> None:
        queued = await submit(runtime, owner, ItemDraft(
            kind="answer", source_type="manual", question=question, answer=answer,
            confidence=99, target_entry_id=uuid.UUID(entry) if entry else None), CLI_ADMIN)
        assert queued.outcome == "new" and queued.item is not None, queued
        assert queued.item.status == "approved", queued

    first, second = "Kit K00 now has a milk jug.", "Kit K11 now has a knock box."
    await approve("Is a milk jug in kit K00?", first, ids[0])
    await approve("Which kit has the milk jug?", first)
    await approve("Which kit has the knock box?", second)
    await approve("Is a knock box in kit K11?", second, ids[1])
    result = await apply_approved(runtime, shop_id=shop.shop_id)
    assert result.applied == 4 and result.created == 0
    for entry, answer, asked in ((ids[0], first, "Which kit has the milk jug?"),
                                 (ids[1], second, "Which kit has the knock box?")):
        live = await runtime.pool.fetch(
            "SELECT entry_id, variants FROM knowledge_base_rag "
            "WHERE shop_id = $1 AND valid_to IS NULL AND answer = $2", shop.shop_id, answer)
        assert [r["entry_id"] for r in live] == [uuid.UUID(entry)]
        assert asked in live[0]["variants"]


async def test_an_owner_edit_made_while_applying_is_kept(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner adds a phrasing to an entry after apply read it and before apply writes its
    new version: apply reads it again instead of writing the variants it read before."""
    ids = await _seed(client, shop)
    owner = await get_shop(runtime.pool, shop.shop_id)
    queued = await submit(runtime, owner, ItemDraft(
        kind="answer", source_type="manual", question="Is shipping to Oslo possible?",
        answer="Yes, to Norway in 5 to 8 days.", confidence=99,
        target_entry_id=uuid.UUID(ids[0])), CLI_ADMIN)
    assert queued.item is not None and queued.item.status == "approved", queued
    real = apply_module.supersede_entry
    edited = False

    async def owner_edits_first(*args: Any, **kwargs: Any) -> Any:
        nonlocal edited
        if not edited:
            edited = True
            await real(runtime, shop.shop_id, uuid.UUID(ids[0]), CLI_ADMIN,
                       variants=["Do you deliver to Norway?"])
        return await real(*args, **kwargs)

    monkeypatch.setattr(apply_module, "supersede_entry", owner_edits_first)
    result = await apply_approved(runtime, shop_id=shop.shop_id)
    assert result.applied == 1 and edited
    live = await runtime.pool.fetchrow(
        "SELECT answer, variants FROM knowledge_base_rag WHERE shop_id = $1 AND entry_id = $2 "
        "AND valid_to IS NULL", shop.shop_id, uuid.UUID(ids[0]))
    assert live["answer"] == "Yes, to Norway in 5 to 8 days."
    assert set(live["variants"]) == {"Do you deliver to Norway?", "Is shipping to Oslo possible?"}


async def test_a_crash_half_way_applies_each_item_exactly_once(
        client: httpx.AsyncClient, shop: ShopKeys, runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(6):
        await _suggest(client, shop, f"Does the tamper T{i}{i}{i} fit the portafilter?",
                       f"Yes, T{i}{i}{i} fits.", confidence=99)
    real = apply_module.add_entries
    calls = 0

    async def crash_on_second_batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the worker died")
        return await real(*args, **kwargs)

    monkeypatch.setattr(apply_module, "add_entries", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="the worker died"):
        await apply_approved(runtime, batch_size=3, shop_id=shop.shop_id)
    monkeypatch.setattr(apply_module, "add_entries", real)
    # The batch beside the crashed one may have committed first, or been cancelled with it.
    before = await runtime.pool.fetchval(
        "SELECT count(*) FROM learning_queue WHERE shop_id = $1 AND status = 'applied'",
        shop.shop_id)
    again = await apply_approved(runtime, batch_size=3, shop_id=shop.shop_id)
    assert before in {0, 3} and before + again.applied == 6
    counts = await runtime.pool.fetch(
        "SELECT metadata->>'queue_item' AS item, count(*) FROM knowledge_base_rag "
        "WHERE shop_id = $1 AND source = 'learning' GROUP BY 1", shop.shop_id)
    assert len(counts) == 6 and all(r["count"] == 1 for r in counts)


async def test_exports_stream_training_data(client: httpx.AsyncClient, shop: ShopKeys,
                                            runtime: Runtime) -> None:
    await _seed(client, shop)
    wrong = await _ask(client, shop, "Do you ship to Norway?")
    await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": wrong["turn_id"], "priority": "urgent",
        "corrected_answer": "Yes, to Norway in 5 to 8 days."})
    await _suggest(client, shop, "Do you sell oat milk?", "No, only coffee and gear.")
    await apply_approved(runtime, shop_id=shop.shop_id)

    qa = await client.get("/v1/export/qa", headers=shop.owner)
    assert qa.status_code == 200 and qa.headers["content-type"].startswith(
        "application/x-ndjson")
    pairs = [json.loads(line) for line in qa.text.splitlines()]
    assert [p["answer"] for p in pairs] == ["Yes, to Norway in 5 to 8 days."]
    assert pairs[0]["messages"][1] == {"role": "assistant",
                                       "content": "Yes, to Norway in 5 to 8 days."}
    prefs = [json.loads(line) for line in
             (await client.get("/v1/export/preferences", headers=shop.owner)).text.splitlines()]
    assert prefs == [{"prompt": "Do you ship to Norway?",
                      "chosen": "Yes, to Norway in 5 to 8 days.",
                      "rejected": wrong["answer"], "meta": prefs[0]["meta"]}]
    tasks = (await client.get("/v1/export/label-studio", headers=shop.owner)).json()
    assert [t["data"]["text"] for t in tasks] == ["Do you sell oat milk?"]
    assert tasks[0]["data"]["proposed_answer"] == "No, only coffee and gear."
    assert (await client.get("/v1/export/qa", headers=shop.bot)).status_code == 403
    assert (await client.get("/v1/export/nope", headers=shop.owner)).status_code == 404


async def test_review_rules(client: httpx.AsyncClient, shop: ShopKeys,
                            runtime: Runtime, admin: dict[str, str]) -> None:
    item = (await _suggest(client, shop, "Do you sell tea?", "No, coffee only."))["item"]
    blank = await client.post(f"/v1/queue/{item['id']}/approve", headers=shop.owner,
                              json={"answer": "   "})
    assert blank.status_code == 422
    not_gap = await client.post(f"/v1/queue/{item['id']}/answer", headers=shop.owner,
                                json={"answer": "Yes."})
    assert not_gap.status_code == 409
    past_end = (await client.get("/v1/queue", headers=shop.owner,
                                 params={"offset": 50})).json()
    assert past_end["items"] == [] and past_end["total"] == 1
    # An approved item that cannot be applied goes back to review instead of blocking others.
    r = await client.patch(f"/v1/shops/{shop.slug}", headers=admin,
                           json={"auto_approve_threshold": 0})
    assert r.status_code == 200
    good = (await _suggest(client, shop, "Do you sell mugs?", "Yes, six colours."))["item"]
    await runtime.pool.execute(
        "UPDATE learning_queue SET status = 'approved', proposed_content = $2 WHERE id = $1",
        uuid.UUID(item["id"]), "x" * (runtime.settings.max_answer_chars + 1))
    result = await apply_approved(runtime, shop_id=shop.shop_id)
    assert result.applied == 1 and result.returned_to_review == 1
    bounced = (await client.get(f"/v1/queue/{item['id']}", headers=shop.owner)).json()
    assert bounced["status"] == "pending" and "could not be applied" in bounced["review_note"]
    assert (await client.get(f"/v1/queue/{good['id']}", headers=shop.owner)
            ).json()["status"] == "applied"


async def test_an_urgent_correction_settles_a_waiting_conflict(client: httpx.AsyncClient,
                                                               shop: ShopKeys) -> None:
    await _seed(client, shop)
    body = {"question": "Do you ship to Norway?", "priority": "normal",
            "corrected_answer": "Yes, in 5 to 8 days."}
    first = (await client.post("/v1/corrections", headers=shop.owner, json=body)).json()
    assert first["queued"]["outcome"] == "conflict"
    assert first["queued"]["item"]["status"] == "pending"
    urgent = (await client.post("/v1/corrections", headers=shop.owner,
                                json={**body, "priority": "urgent"})).json()
    assert urgent["queued"]["outcome"] == "merged" and urgent["queued"]["auto_approved"]
    assert urgent["queued"]["item"]["status"] == "approved"


async def test_concurrent_identical_signals_make_one_item(client: httpx.AsyncClient,
                                                          shop: ShopKeys) -> None:
    made = await asyncio.gather(*(
        client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
            "question": "Do you have a shop in Lyon?", "answer": "Not yet."})
        for _ in range(6)))
    outcomes = sorted(m.json()["outcome"] for m in made)
    assert outcomes == ["merged"] * 5 + ["new"]
    assert len({m.json()["item"]["id"] for m in made}) == 1
    # No row of a signal that merged into another is left behind.
    listed = (await client.get("/v1/queue", headers=shop.owner, params={"limit": 500})).json()
    lyon = [i for i in listed["items"] if i["question"] == "Do you have a shop in Lyon?"]
    assert len(lyon) == 1 and lyon[0]["observations"] == 6
