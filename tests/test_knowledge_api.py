"""Knowledge entries and documents over HTTP: supersede history, re-ingestion by content hash."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import ShopKeys
from tests.pdf_fixture import pdf_with_text

FAQ_V1 = b"""# Shop FAQ

## Delivery

Parcels are delivered within 3 working days by DHL.

## Returns

Items can be returned within 14 days.
"""

FAQ_V2 = b"""# Shop FAQ

## Delivery

Parcels are delivered within 5 working days by UPS.

## Returns

Items can be returned within 60 days.
"""


async def test_update_supersedes_and_keeps_history(client: httpx.AsyncClient,
                                                   shop: ShopKeys) -> None:
    created = (await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "Do you ship to Iceland?", "answer": "No, not yet.",
        "category": "shipping"})).json()
    entry_id = created["entry_id"]
    r = await client.patch(f"/v1/knowledge/{entry_id}", headers=shop.owner, json={
        "answer": "Yes, since March, in 6 to 9 days.", "reason": "new carrier",
        "expected_version": 1})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["version"] == 2 and new["entry_id"] == entry_id and new["live"]
    assert new["supersedes"] == created["id"] and new["question"] == "Do you ship to Iceland?"
    stale = await client.patch(f"/v1/knowledge/{entry_id}", headers=shop.owner, json={
        "answer": "lost update", "expected_version": 1})
    assert stale.status_code == 409 and stale.json()["current_version"] == 2
    history = (await client.get(f"/v1/knowledge/{entry_id}/history",
                                headers=shop.owner)).json()
    assert [h["version"] for h in history] == [1, 2]
    old = history[0]
    assert old["answer"] == "No, not yet." and old["valid_to"] and not old["live"]
    assert old["superseded_by"] == new["id"]
    answer = (await client.post("/v1/answer", headers=shop.bot,
                                json={"question": "can you deliver to Iceland?"})).json()
    assert answer["sources"][0]["knowledge_id"] == new["id"]
    assert "since March" in answer["answer"]
    # A changed question re-embeds: the entry is now found by its new wording.
    await client.patch(f"/v1/knowledge/{entry_id}", headers=shop.owner, json={
        "question": "Do you sell espresso beans?", "answer": "Yes, six roasts."})
    found = (await client.get("/v1/search", headers=shop.bot,
                              params={"q": "espresso beans for sale"})).json()
    assert found["results"][0]["entry_id"] == entry_id
    assert found["results"][0]["version"] == 3


async def test_retire_takes_an_entry_out_of_answers(client: httpx.AsyncClient,
                                                    shop: ShopKeys) -> None:
    created = (await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "Is the summer sale on?", "answer": "Yes, 20% off."})).json()
    r = await client.delete(f"/v1/knowledge/{created['entry_id']}", headers=shop.owner,
                            params={"reason": "sale ended"})
    assert r.status_code == 200 and not r.json()["live"]
    assert r.json()["change_reason"] == "sale ended"
    answer = (await client.post("/v1/answer", headers=shop.bot,
                                json={"question": "is the summer sale on?"})).json()
    assert answer["tier"] == "fallback"
    listed = (await client.get("/v1/knowledge", headers=shop.owner)).json()
    assert listed["total"] == 0
    again = await client.delete(f"/v1/knowledge/{created['entry_id']}", headers=shop.owner)
    assert again.status_code == 404
    assert (await client.get(f"/v1/knowledge/{created['entry_id']}",
                             headers=shop.owner)).json()["answer"] == "Yes, 20% off."


async def test_list_filters_and_pages(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json=[
        {"answer": f"answer {i}", "question": f"question {i}",
         "category": "a" if i % 2 else "b"} for i in range(5)])
    page = (await client.get("/v1/knowledge", headers=shop.owner,
                             params={"limit": 2, "offset": 2})).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    only_a = (await client.get("/v1/knowledge", headers=shop.owner,
                               params={"category": "a"})).json()
    assert {e["category"] for e in only_a["items"]} == {"a"} and len(only_a["items"]) == 2


async def _upload(client: httpx.AsyncClient, shop: ShopKeys, body: bytes,
                  name: str = "faq.md", media: str = "text/markdown") -> httpx.Response:
    return await client.post("/v1/documents", headers=shop.owner,
                             files={"file": (name, body, media)})


async def test_document_ingest_reingest_and_delete(client: httpx.AsyncClient,
                                                   shop: ShopKeys) -> None:
    first = await _upload(client, shop, FAQ_V1)
    assert first.status_code == 201, first.text
    doc = first.json()
    assert doc["changed"] and doc["chunks_added"] >= 2 and doc["document"]["version"] == 1
    answer = (await client.post("/v1/answer", headers=shop.bot,
                                json={"question": "how many days until my parcel arrives?"})
              ).json()
    assert "3 working days" in answer["answer"], answer
    assert answer["sources"][0]["document_id"] == doc["document"]["id"]
    assert not answer["answer"].lstrip().startswith("#")

    same = (await _upload(client, shop, FAQ_V1)).json()
    assert not same["changed"] and same["chunks_added"] == 0
    assert same["document"]["version"] == 1

    changed = (await _upload(client, shop, FAQ_V2)).json()
    assert changed["changed"] and changed["document"]["version"] == 2
    assert changed["chunks_retired"] == doc["chunks_added"]
    entries = (await client.get("/v1/knowledge", headers=shop.owner,
                                params={"document_id": doc["document"]["id"]})).json()
    assert entries["total"] == changed["chunks_added"]
    assert all("DHL" not in e["answer"] for e in entries["items"])
    answer = (await client.post("/v1/answer", headers=shop.bot,
                                json={"question": "how many days until my parcel arrives?"})
              ).json()
    assert "5 working days" in answer["answer"] and "3 working days" not in answer["answer"]

    deleted = await client.delete(f"/v1/documents/{doc['document']['id']}", headers=shop.owner)
    assert deleted.status_code == 200 and deleted.json()["deleted_at"]
    gone = (await client.post("/v1/answer", headers=shop.bot,
                              json={"question": "how many days until my parcel arrives?"})
            ).json()
    assert gone["tier"] == "fallback"


async def test_html_and_text_documents(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    html = (b"<html><body><h1>Care guide</h1><p>Descale the kettle KT-300 every month with "
            b"citric acid.</p></body></html>")
    r = await _upload(client, shop, html, "care.html", "text/html")
    assert r.status_code == 201 and r.json()["chunks_added"] >= 1
    text = b"Gift wrapping is free for all orders placed before December 20."
    r = await _upload(client, shop, text, "gifts.txt", "text/plain")
    assert r.status_code == 201
    found = (await client.get("/v1/search", headers=shop.bot,
                              params={"q": "KT-300 descaling"})).json()
    assert "KT-300" in found["results"][0]["answer"]
    found = (await client.get("/v1/search", headers=shop.bot,
                              params={"q": "do you wrap presents?"})).json()
    assert "Gift wrapping" in found["results"][0]["answer"]
    listed = (await client.get("/v1/documents", headers=shop.owner)).json()
    assert {d["name"] for d in listed} == {"care.html", "gifts.txt"}


async def test_pdf_documents_are_read(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    pdf = pdf_with_text(["Warranty terms for the Aurora espresso machine.",
                         "The Aurora carries a two year warranty on the pump and boiler."])
    r = await _upload(client, shop, pdf, "warranty.pdf", "application/pdf")
    assert r.status_code == 201, r.text
    found = (await client.get("/v1/search", headers=shop.bot,
                              params={"q": "how long is the Aurora warranty?"})).json()
    assert "two year warranty" in found["results"][0]["answer"]


async def test_concurrent_updates_one_wins_one_conflicts(client: httpx.AsyncClient,
                                                         shop: ShopKeys) -> None:
    entry = (await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "Opening hours?", "answer": "9 to 5."})).json()
    first, second = await asyncio.gather(*(
        client.patch(f"/v1/knowledge/{entry['entry_id']}", headers=shop.owner,
                     json={"answer": answer, "expected_version": 1})
        for answer in ("9 to 6.", "8 to 5.")))
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    history = (await client.get(f"/v1/knowledge/{entry['entry_id']}/history",
                                headers=shop.owner)).json()
    assert [h["version"] for h in history] == [1, 2]


async def test_list_total_follows_the_filters(client: httpx.AsyncClient,
                                              shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json=[
        {"answer": "a", "category": "x"}, {"answer": "b", "category": "y"},
        {"answer": "c", "category": "y"}])
    page = (await client.get("/v1/knowledge", headers=shop.owner,
                             params={"category": "y"})).json()
    assert page["total"] == 2
