"""Out of scope over HTTP: the per-shop calibration job, the strictness, and the decline tier
that an owner's "not ours" on a queue item teaches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import numpy as np

from jobs.scheduler import run_job
from knowledge.answering.retrieval import Candidate
from knowledge.answering.scope import Example, decide
from knowledge.answering.scope_model import PRIOR, Evidence, Knowledge, fit_shop
from knowledge.runtime import Runtime
from knowledge.store.entries import Entry
from tests.conftest import ShopKeys

# Twelve topics of a bicycle shop, three phrasings each: enough for the shop's own
# leave-one-out probes (36 in scope, 36 out of scope) to be fitted on.
TOPICS = [
    (["how long does delivery take", "when will my order arrive",
      "how many days until my parcel comes"], "Delivery takes 2 to 4 working days."),
    (["can I return a bike", "what is your return policy",
      "how do I send an item back"], "Unused items can be returned within 30 days."),
    (["do you repair punctures", "can you fix a flat tyre",
      "do you mend inner tubes"], "Yes, puncture repairs take about an hour."),
    (["which payment methods do you accept", "can I pay with paypal",
      "do you take credit cards"], "We accept Visa, Mastercard and PayPal."),
    (["do you sell electric bikes", "have you got e-bikes",
      "are there any pedal assist bicycles"], "We stock e-bikes from three brands."),
    (["what size frame do I need", "how do I choose a frame size",
      "which bike size fits my height"], "Measure your inside leg and use our size chart."),
    (["when are you open", "what are your opening hours",
      "are you open on sundays"], "We are open 9 to 6, Monday to Saturday."),
    (["do you offer bike servicing", "can I book a service",
      "how much is a full service"], "A full service costs 80 euros; book online."),
    (["is there a warranty on frames", "how long is the frame guarantee",
      "what does the warranty cover"], "Frames carry a five year warranty."),
    (["can I rent a bike", "do you hire out bicycles",
      "how much is bike rental per day"], "Rental is 25 euros a day, helmet included."),
    (["do you sell helmets", "which helmets do you have",
      "have you got childrens helmets"], "We sell helmets for adults and children."),
    (["can I trade in my old bike", "do you buy used bikes",
      "will you take my old bicycle in part exchange"], "We take trade-ins after a check."),
]


async def _load(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    body = [{"question": qs[0], "variants": qs[1:], "answer": a} for qs, a in TOPICS]
    created = await client.post("/v1/knowledge", headers=shop.owner, json=body)
    assert created.status_code == 201, created.text


async def test_calibration_job_fits_each_shop_on_its_own_knowledge(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    path = f"/v1/shops/{shop.slug}/calibration"
    before = (await client.get(path, headers=shop.owner)).json()
    assert before["calibrated"] is False  # a new shop starts from the prior
    await _load(client, shop)
    assert "calibrated" in await run_job(runtime, "calibrate")
    fitted = (await client.get(path, headers=shop.owner)).json()
    assert fitted["calibrated"] is True, fitted
    counts = fitted["model"]["counts"]
    assert counts["in_scope"] == 36 and counts["out_of_scope"] == 36
    assert fitted["model"]["weights"] != list(PRIOR.weights)
    # Unchanged knowledge is not refitted; new knowledge is.
    await run_job(runtime, "calibrate")
    again = (await client.get(path, headers=shop.owner)).json()
    assert again["computed_at"] == fitted["computed_at"]
    added = await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "do you ship abroad", "variants": ["can you deliver to france"],
        "answer": "We ship across the EU."})
    assert added.status_code == 201
    await run_job(runtime, "calibrate")
    refitted = (await client.get(path, headers=shop.owner)).json()
    assert refitted["computed_at"] != fitted["computed_at"]
    assert refitted["model"]["counts"]["in_scope"] == 38
    # The answer says which evidence decided, on the shop's own calibration.
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how many days does delivery take?", "learn": False})).json()
    assert said["tier"] == "answer", said
    assert said["scope"]["calibrated"] is True
    assert said["scope"]["decided_by"] == "evidence"
    assert said["scope"]["in_scope"] is True
    assert set(said["scope"]["evidence"]) == {"fit", "margin", "similarity"}


async def test_out_of_scope_question_falls_back_and_strictness_is_the_owners(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys,
        other_shop: ShopKeys) -> None:
    await _load(client, shop)
    path = f"/v1/shops/{shop.slug}/calibration"
    assert (await client.post(path, headers=shop.owner)).status_code == 200
    question = {"question": "what is the capital of australia?", "learn": False}
    said = (await client.post("/v1/answer", headers=shop.bot, json=question)).json()
    assert said["tier"] == "fallback" and said["fallback"] is True, said
    assert said["sources"] == []
    assert said["scope"]["p_right"] < said["scope"]["threshold"]
    # The owner sets how sure the bot must be: at the strictest, questions it answered by
    # the calibrated evidence alone now fall back.
    paraphrases = ["what's the delivery time?", "may I give back a purchase?",
                   "which cards are accepted?"]
    answered = []
    for text in paraphrases:
        said = (await client.post("/v1/answer", headers=shop.bot,
                                  json={"question": text, "learn": False})).json()
        if said["tier"] != "fallback" and said["scope"]["decided_by"] == "evidence":
            answered.append(text)
    assert answered, "no paraphrase was answered on the evidence at the default strictness"
    strict = await client.post(path, headers=shop.owner, json={"strictness": 1.0})
    assert strict.status_code == 200 and strict.json()["strictness"] == 1.0
    now = [(await client.post("/v1/answer", headers=shop.bot,
                              json={"question": text, "learn": False})).json()
           for text in answered]
    assert any(n["tier"] == "fallback" for n in now), now
    # At the most lenient, something near enough is offered rather than a fallback, but a
    # question with nothing near at all still falls back: there is nothing to show.
    lenient = await client.post(path, headers=shop.owner, json={"strictness": 0.0})
    assert lenient.status_code == 200 and lenient.json()["strictness"] == 0.0
    for text in answered:
        said = (await client.post("/v1/answer", headers=shop.bot,
                                  json={"question": text, "learn": False})).json()
        assert said["tier"] != "fallback", said
    said = (await client.post("/v1/answer", headers=shop.bot, json=question)).json()
    assert said["tier"] == "fallback" and said["scope"]["decided_by"] == "nothing_near", said
    bad = await client.post(path, headers=shop.owner, json={"strictness": 1.5})
    assert bad.status_code in {400, 422}
    assert bad.headers["content-type"].startswith("application/problem+json")
    # A bot may not change it, nor another shop's owner read it.
    assert (await client.post(path, headers=shop.bot)).status_code == 403
    assert (await client.get(path, headers=other_shop.owner)).status_code == 404
    assert (await client.post(path, headers=other_shop.owner,
                              json={"strictness": 1.0})).status_code == 404
    trail = (await client.get("/v1/audit", headers=shop.owner)).json()
    assert any(r["action"] == "shop.scope_strictness" and r["after"]["scope_strictness"] == 1.0
               for r in trail)


async def test_owner_marks_a_gap_out_of_scope_and_similar_questions_are_declined(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys,
        other_shop: ShopKeys) -> None:
    await _load(client, shop)
    await client.post(f"/v1/shops/{shop.slug}/calibration", headers=shop.owner)
    first = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "do you sell car insurance?"})).json()
    assert first["tier"] == "fallback", first
    queue = (await client.get("/v1/queue", headers=shop.owner,
                              params={"kind": "gap", "status": "pending"})).json()
    gap = next(i for i in queue["items"] if i["question"] == "do you sell car insurance?")
    # Another shop's owner cannot see or mark it.
    foreign = await client.post(f"/v1/queue/{gap['id']}/out-of-scope",
                                headers=other_shop.owner, json={})
    assert foreign.status_code == 404
    redirect = "We only sell and repair bicycles; an insurance broker can help with cars."
    marked = await client.post(f"/v1/queue/{gap['id']}/out-of-scope", headers=shop.owner,
                               json={"redirect": redirect})
    assert marked.status_code == 200, marked.text
    assert marked.json()["item"]["status"] == "rejected"
    assert marked.json()["item"]["out_of_scope"] is True
    assert marked.json()["item"]["redirect"] == redirect
    # Marking twice is a conflict, not a second example.
    again = await client.post(f"/v1/queue/{gap['id']}/out-of-scope", headers=shop.owner,
                              json={})
    assert again.status_code == 409
    assert again.json()["item_status"] == "rejected"
    # Nor can a dismissed item be approved (this was a 500 before: the item's status clashed
    # with the problem's own).
    approved = await client.post(f"/v1/queue/{gap['id']}/approve", headers=shop.owner,
                                 json={"answer": "We do not."})
    assert approved.status_code == 409 and approved.json()["status"] == 409
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "can I buy car insurance from you?"})).json()
    assert said["tier"] == "decline", said
    assert said["fallback"] is True and said["sources"] == []
    assert redirect in said["answer"]
    assert said["scope"]["decided_by"] == "out_of_scope_example"
    # A decline opens no knowledge gap: the owner already said this is not theirs.
    gaps = (await client.get("/v1/queue", headers=shop.owner,
                             params={"kind": "gap", "status": "pending"})).json()
    assert not any("insurance" in (i["question"] or "") for i in gaps["items"])
    # The shop's own business is still answered.
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how long does delivery take?"})).json()
    assert said["tier"] == "answer", said
    # The example is listed, exported, audited, and it teaches the calibration.
    listed = (await client.get("/v1/out-of-scope", headers=shop.owner)).json()
    assert listed["total"] == 1 and listed["examples"][0]["redirect"] == redirect
    assert (await client.get("/v1/out-of-scope", headers=other_shop.owner)).json()["total"] == 0
    exported = await client.get("/v1/export/out-of-scope", headers=shop.owner)
    assert exported.status_code == 200
    assert "car insurance" in exported.text and redirect in exported.text
    trail = (await client.get("/v1/audit", headers=shop.owner,
                              params={"subject_id": gap["id"]})).json()
    assert {"queue.out_of_scope", "scope.mark_out_of_scope"} <= {r["action"] for r in trail}
    fitted = (await client.post(f"/v1/shops/{shop.slug}/calibration",
                                headers=shop.owner)).json()
    assert fitted["model"]["counts"]["marked_out_of_scope"] == 1
    # Forgetting the example ends the declines.
    example_id = listed["examples"][0]["id"]
    assert (await client.delete(f"/v1/out-of-scope/{example_id}",
                                headers=other_shop.owner)).status_code == 404
    assert (await client.delete(f"/v1/out-of-scope/{example_id}",
                                headers=shop.owner)).status_code == 204
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "can I buy car insurance from you?", "learn": False})).json()
    assert said["tier"] != "decline", said
    # ... and the gap it came from waits for review again, instead of staying dismissed.
    item = (await client.get(f"/v1/queue/{gap['id']}", headers=shop.owner)).json()
    assert item["status"] == "pending" and item["out_of_scope"] is False


async def test_an_owner_adds_an_out_of_scope_question_directly(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    await _load(client, shop)
    made = await client.post("/v1/out-of-scope", headers=shop.owner, json={
        "question": "do you sell cars?", "redirect": "Try a car dealer."})
    assert made.status_code == 201, made.text
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "are you selling cars?", "learn": False})).json()
    assert said["tier"] == "decline" and "Try a car dealer." in said["answer"], said
    too_long = await client.post("/v1/out-of-scope", headers=shop.owner, json={
        "question": "x", "redirect": "y" * 2_001})
    assert too_long.status_code == 400 or too_long.status_code == 422
    assert (await client.post("/v1/out-of-scope", headers=shop.bot, json={
        "question": "do you sell cars?"})).status_code == 403


async def test_rated_turns_teach_the_calibration_with_the_evidence_they_were_answered_on(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    await _load(client, shop)
    path = f"/v1/shops/{shop.slug}/calibration"
    before = (await client.post(path, headers=shop.owner)).json()
    assert "rated_helpful" not in before["model"]["counts"]
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "when does my parcel come?"})).json()
    assert said["tier"] == "answer", said
    liked = await client.post("/v1/feedback", headers=shop.bot, json={
        "turn_id": said["turn_id"], "type": "thumbs_up"})
    assert liked.status_code in {200, 201}, liked.text
    after = (await client.post(path, headers=shop.owner)).json()
    assert after["model"]["counts"]["rated_helpful"] == 1, after
    assert after["computed_at"] != before["computed_at"]


async def test_a_shop_of_documents_answers_from_its_passages(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    body = ("# Delivery\n\nOrders are delivered in 2 to 4 working days by courier.\n\n"
            "# Returns\n\nUnused items can be sent back within 30 days for a refund.\n")
    made = await client.post("/v1/documents", headers=shop.owner,
                             files={"file": ("faq.md", body.encode(), "text/markdown")})
    assert made.status_code in {200, 201}, made.text
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how many days does delivery take?", "learn": False})).json()
    assert said["tier"] != "fallback", said
    assert "2 to 4 working days" in said["answer"]
    off = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "what is the capital of australia?", "learn": False})).json()
    assert off["tier"] == "fallback", off


async def test_bad_out_of_scope_input_is_a_clear_error(client: httpx.AsyncClient,
                                                      shop: ShopKeys) -> None:
    for body in ({"question": "a\u0000b"}, {"question": "cars?", "redirect": "x\u0000"},
                 {"question": "   "}):
        r = await client.post("/v1/out-of-scope", headers=shop.owner, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    long = await client.post("/v1/out-of-scope", headers=shop.owner,
                             json={"question": "q" * 2_001})
    assert long.status_code == 422 and long.json()["limit"] == 2_000


def test_the_fit_survives_degenerate_shops() -> None:
    dims = 8
    rng = np.random.default_rng(1)
    empty = fit_shop(Knowledge(np.zeros((0, dims), np.float32), np.zeros(0, np.int64)),
                     np.zeros((0, dims), np.float32), [])
    assert empty.calibrated is False
    one = fit_shop(Knowledge(rng.normal(size=(5, dims)).astype(np.float32),
                             np.zeros(5, np.int64)), np.zeros((0, dims), np.float32), [])
    assert one.calibrated is False  # one entry: nothing to contrast it with
    # Forty entries of identical phrasings: the features barely vary, and the model must not
    # turn that into certainty either way.
    same = np.tile(rng.normal(size=(1, dims)).astype(np.float32), (120, 1))
    same /= np.linalg.norm(same, axis=1, keepdims=True)
    model = fit_shop(Knowledge(same, np.repeat(np.arange(40), 3)),
                     np.zeros((0, dims), np.float32), [])
    assert all(s >= 0.02 for s in model.scale)
    p = model.p_right(Evidence(0.9, 0.1, 0.9))
    assert 0.0 <= p <= 1.0 and np.isfinite(p)


def _candidate(source: str, similarity: float, lexemes: tuple[str, ...] = ()) -> Candidate:
    now = datetime.now(UTC)
    entry = Entry(id=uuid.uuid4(), entry_id=uuid.uuid4(), version=1, shop_id=1, category=None,
                  question=None if source == "document" else "q", variants=[], answer="a",
                  source=source, document_id=None, chunk_index=None, metadata={},
                  created_by=None, change_reason=None, created_at=now, valid_from=now,
                  valid_to=None, supersedes=None, superseded_by=None)
    return Candidate(entry=entry, similarity=similarity, profile_similarity=None,
                     discriminative_similarity=None, vector_rank=1, vector_hits=1,
                     lexical_score=0.1 if lexemes else None, lexical_rank=1 if lexemes else None,
                     lexemes_matched=lexemes, lexemes_asked=lexemes, score=0.01)


def test_decisions_that_the_model_alone_would_not_make() -> None:
    # Two passages about equally near: the prior alone is unsure, but an uncalibrated shop
    # of documents keeps its similarity floor (the prior was fitted on questions).
    passages = [_candidate("document", 0.45), _candidate("document", 0.44)]
    assert PRIOR.p_right(Evidence(0.45, 0.01, 0.45)) < 0.25
    kept = decide(PRIOR, 0.25, passages, None, floor=0.3)
    assert kept.in_scope and kept.decided_by == "document_floor"
    entries = [_candidate("manual", 0.45), _candidate("manual", 0.44)]
    assert not decide(PRIOR, 0.25, entries, None, floor=0.3).in_scope
    # A product code the entry names settles it; a bare number ("2 to 4 days") does not.
    coded = [_candidate("manual", 0.45, ("qx-7731",)), _candidate("manual", 0.44)]
    assert decide(PRIOR, 0.25, coded, None, floor=0.3).decided_by == "identifier"
    number = [_candidate("manual", 0.45, ("2",)), _candidate("manual", 0.44)]
    assert not decide(PRIOR, 0.25, number, None, floor=0.3).in_scope
    # Nearer an owner's out-of-scope example than any entry: declined with its redirect.
    example = Example(7, "do you sell cars?", "Try a dealer.", similarity=0.8)
    declined = decide(PRIOR, 0.25, entries, example, floor=0.3)
    assert declined.declined == example and not declined.in_scope


async def test_many_gaps_are_marked_out_of_scope_at_once(client: httpx.AsyncClient,
                                                         shop: ShopKeys) -> None:
    await _load(client, shop)
    await client.post(f"/v1/shops/{shop.slug}/calibration", headers=shop.owner)
    for question in ("what is the capital of australia?", "do you sell car insurance?"):
        said = (await client.post("/v1/answer", headers=shop.bot,
                                  json={"question": question})).json()
        assert said["tier"] == "fallback", said
    gaps = (await client.get("/v1/queue", headers=shop.owner,
                             params={"kind": "gap", "status": "pending"})).json()["items"]
    assert len(gaps) == 2
    done = await client.post("/v1/queue/bulk", headers=shop.owner, json={
        "action": "out_of_scope", "ids": [g["id"] for g in gaps],
        "redirect": "We only do bicycles."})
    assert done.status_code == 200 and all(r["ok"] for r in done.json()), done.text
    assert (await client.get("/v1/out-of-scope", headers=shop.owner)).json()["total"] == 2
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "which city is the capital of australia?", "learn": False})).json()
    assert said["tier"] == "decline" and "We only do bicycles." in said["answer"], said
