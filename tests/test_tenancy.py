"""Keys and scoping: every endpoint refuses another shop's keys and never shows its data."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from knowledge.runtime import Runtime
from tests.conftest import ShopKeys, make_shop


@dataclass(frozen=True)
class Victim:
    """Shop A with an entry, a document, an answered turn, a queue item, a call transcript, a
    logged conversation and an out-of-scope example."""

    keys: ShopKeys
    entry_id: str
    doc_id: str
    turn_id: str
    item_id: str
    transcript_id: str = ""
    example_id: int = 0


@pytest.fixture
async def victim(client: httpx.AsyncClient, runtime: Runtime) -> Victim:
    a = await make_shop(runtime, "victim")
    r = await client.post("/v1/knowledge", headers=a.owner, json={
        "question": "What is the secret discount code?", "answer": "SECRET-A-42"})
    entry_id = r.json()["entry_id"]
    d = await client.post("/v1/documents", headers=a.owner,
                          files={"file": ("notes.md", b"# Notes\n\nSECRET-A-42 details.",
                                          "text/markdown")})
    turn = await client.post("/v1/answer", headers=a.bot,
                             json={"question": "What is the secret discount code?"})
    item = await client.post("/v1/knowledge/suggestions", headers=a.owner, json={
        "question": "Is SECRET-A-42 still valid?", "answer": "Yes, SECRET-A-42 until May."})
    call = await client.post("/v1/transcripts", headers=a.bot, json={
        "user_id": "cust-a", "transcript": "Customer: Does SECRET-A-42 apply to grinders?\n"
                                          "Agent: Yes, SECRET-A-42 covers every grinder."})
    await client.post("/v1/conversations/bulk", headers=a.bot, json={"turns": [{
        "turn_id": "secret-1", "conversation_id": "conv-secret", "user_id": "cust-a",
        "message": "what is SECRET-A-42?", "answer": "SECRET-A-42 is our code.",
        "confidence": 0.9}]})
    example = await client.post("/v1/out-of-scope", headers=a.owner, json={
        "question": "do you sell SECRET-A-42 insurance?", "redirect": "SECRET-A-42 no"})
    return Victim(a, entry_id, d.json()["document"]["id"], turn.json()["turn_id"],
                  item.json()["item"]["id"], call.json()["id"], example.json()["id"])


def _requests(v: Victim) -> list[tuple[str, str, dict[str, object]]]:
    """Every shop-scoped endpoint, aimed at shop A's data."""
    a, entry_id, doc_id, item = v.keys, v.entry_id, v.doc_id, v.item_id
    return [
        ("POST", "/v1/answer", {"json": {"question": "secret discount code"},
                                "params": {"shop": a.slug}}),
        ("GET", "/v1/search", {"params": {"q": "secret discount code", "shop": a.slug}}),
        ("GET", "/v1/knowledge", {"params": {"shop": str(a.shop_id)}}),
        ("POST", "/v1/knowledge", {"json": {"answer": "x"}, "params": {"shop": a.slug}}),
        ("GET", f"/v1/knowledge/{entry_id}", {}),
        ("GET", f"/v1/knowledge/{entry_id}/history", {}),
        ("PATCH", f"/v1/knowledge/{entry_id}", {"json": {"answer": "stolen"}}),
        ("DELETE", f"/v1/knowledge/{entry_id}", {}),
        ("GET", "/v1/documents", {"params": {"shop": a.slug}}),
        ("GET", f"/v1/documents/{doc_id}", {}),
        ("DELETE", f"/v1/documents/{doc_id}", {}),
        ("POST", "/v1/documents", {"files": {"file": ("x.md", b"# X\n\nx", "text/markdown")},
                                   "params": {"shop": a.slug}}),
        ("GET", f"/v1/shops/{a.slug}", {}),
        ("PATCH", f"/v1/shops/{a.slug}", {"json": {"answer_threshold": 0.9}}),
        ("GET", "/v1/keys", {"params": {"shop": a.slug}}),
        ("POST", "/v1/keys", {"json": {"role": "bot", "shop": a.slug}}),
        ("POST", "/v1/feedback", {"json": {"turn_id": v.turn_id, "type": "thumbs_down"}}),
        ("POST", "/v1/feedback", {"json": {"turn_id": v.turn_id, "type": "thumbs_up"},
                                  "params": {"shop": a.slug}}),
        ("POST", "/v1/corrections", {"json": {"turn_id": v.turn_id,
                                              "corrected_answer": "stolen"}}),
        ("POST", "/v1/corrections", {"json": {"question": "q", "corrected_answer": "a"},
                                     "params": {"shop": a.slug}}),
        ("POST", "/v1/knowledge/suggestions", {"json": {"question": "q", "answer": "a"},
                                               "params": {"shop": a.slug}}),
        ("GET", "/v1/queue", {"params": {"shop": a.slug}}),
        ("GET", f"/v1/queue/{item}", {}),
        ("POST", f"/v1/queue/{item}/approve", {"json": {}}),
        ("POST", f"/v1/queue/{item}/answer", {"json": {"answer": "stolen"}}),
        ("POST", f"/v1/queue/{item}/reject", {"json": {"reason": "sabotage"}}),
        ("POST", f"/v1/queue/{item}/merge", {"json": {"into": item}}),
        ("POST", "/v1/queue/compare", {"json": {"pairs": [{"a": "q", "b": "q"}]},
                                       "params": {"shop": a.slug}}),
        ("GET", "/v1/audit", {"params": {"shop": a.slug}}),
        ("GET", "/v1/export/qa", {"params": {"shop": a.slug}}),
        ("GET", "/v1/export/preferences", {"params": {"shop": a.slug}}),
        ("GET", "/v1/export/label-studio", {"params": {"shop": a.slug}}),
        ("GET", "/v1/export/out-of-scope", {"params": {"shop": a.slug}}),
        ("GET", f"/v1/shops/{a.slug}/calibration", {}),
        ("POST", f"/v1/shops/{a.slug}/calibration", {"json": {"strictness": 1.0}}),
        ("GET", "/v1/out-of-scope", {"params": {"shop": a.slug}}),
        ("POST", "/v1/out-of-scope", {"json": {"question": "q"}, "params": {"shop": a.slug}}),
        ("DELETE", f"/v1/out-of-scope/{v.example_id}", {}),
        ("POST", f"/v1/queue/{item}/out-of-scope", {"json": {}}),
        ("POST", "/v1/transcripts", {"json": {"transcript": "Customer: hi there, what?"},
                                     "params": {"shop": a.slug}}),
        ("GET", "/v1/transcripts", {"params": {"shop": a.slug}}),
        ("GET", f"/v1/transcripts/{v.transcript_id}", {}),
        ("POST", f"/v1/transcripts/{v.transcript_id}/reviewed", {}),
        ("POST", "/v1/conversations/bulk", {"json": {"turns": [{
            "turn_id": "x", "conversation_id": "x", "message": "m", "answer": "a",
            "confidence": 0.5}]}, "params": {"shop": a.slug}}),
        ("GET", "/v1/conversations/conv-secret", {}),
        ("DELETE", "/v1/users/cust-a", {"params": {"shop": a.slug}}),
        ("GET", "/v1/metrics/summary", {"params": {"shop": a.slug}}),
        ("GET", "/v1/metrics/daily", {"params": {"shop": a.slug}}),
        ("GET", "/v1/alerts", {"params": {"shop": a.slug}}),
    ]


async def test_another_shops_keys_get_nothing_of_shop_a(
        client: httpx.AsyncClient, runtime: Runtime,
        victim: Victim) -> None:
    a, entry_id, doc_id = victim.keys, victim.entry_id, victim.doc_id
    b = await make_shop(runtime, "intruder")
    for headers in (b.owner, b.bot):
        for method, path, kwargs in _requests(victim):
            r = await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            assert r.status_code in {403, 404}, (method, path, r.status_code, r.text)
            assert "SECRET-A-42" not in r.text
            assert r.headers["content-type"].startswith("application/problem+json")
    # Shop A's data is untouched and still answers for shop A.
    r = await client.get(f"/v1/knowledge/{entry_id}", headers=a.owner)
    assert r.status_code == 200 and r.json()["answer"] == "SECRET-A-42"
    assert r.json()["version"] == 1
    docs = await client.get("/v1/documents", headers=a.owner)
    assert [d["id"] for d in docs.json()] == [doc_id]
    item = (await client.get(f"/v1/queue/{victim.item_id}", headers=a.owner)).json()
    assert item["status"] == "pending" and item["observations"] == 1
    call = await client.get(f"/v1/transcripts/{victim.transcript_id}", headers=a.owner)
    assert call.status_code == 200 and call.json()["needs_review"] is False
    assert (await client.get("/v1/conversations/conv-secret", headers=a.owner)).status_code == 200
    examples = (await client.get("/v1/out-of-scope", headers=a.owner)).json()
    assert [e["id"] for e in examples["examples"]] == [victim.example_id]
    calibration = (await client.get(f"/v1/shops/{a.slug}/calibration", headers=a.owner)).json()
    assert calibration["strictness"] == 0.25
    feedback = await runtime.pool.fetchval(
        "SELECT count(*) FROM conversation_feedback WHERE shop_id = $1", a.shop_id)
    assert feedback == 0


async def test_searching_in_own_shop_never_returns_other_shops_entries(
        client: httpx.AsyncClient, runtime: Runtime,
        victim: Victim) -> None:
    b = await make_shop(runtime, "neighbour")
    r = await client.get("/v1/search", headers=b.bot, params={"q": "secret discount code"})
    assert r.status_code == 200 and r.json()["results"] == []
    r = await client.post("/v1/answer", headers=b.bot,
                          json={"question": "What is the secret discount code?"})
    assert r.json()["tier"] == "fallback" and "SECRET-A-42" not in r.text


async def test_roles(client: httpx.AsyncClient, shop: ShopKeys, admin: dict[str, str]) -> None:
    # A bot may ask but not write knowledge, read lists, or manage anything.
    assert (await client.post("/v1/knowledge", headers=shop.bot,
                              json={"answer": "x"})).status_code == 403
    assert (await client.get("/v1/knowledge", headers=shop.bot)).status_code == 403
    assert (await client.post("/v1/keys", headers=shop.bot,
                              json={"role": "bot"})).status_code == 403
    # An owner manages its shop's bot keys, but may not mint owner or admin keys or shops.
    made = await client.post("/v1/keys", headers=shop.owner, json={"role": "bot", "name": "b2"})
    assert made.status_code == 201 and made.json()["secret"].startswith("lkb_")
    assert (await client.post("/v1/keys", headers=shop.owner,
                              json={"role": "owner"})).status_code == 403
    assert (await client.post("/v1/keys", headers=shop.owner,
                              json={"role": "admin"})).status_code == 403
    assert (await client.post("/v1/shops", headers=shop.owner,
                              json={"slug": "nope", "name": "Nope"})).status_code == 403
    assert (await client.patch(f"/v1/shops/{shop.slug}", headers=shop.owner,
                               json={"answer_threshold": 0.5})).status_code == 403
    # An admin must say which shop a shop-scoped request is for.
    r = await client.get("/v1/knowledge", headers=admin)
    assert r.status_code == 422 and "shop" in r.json()["detail"]
    assert (await client.get("/v1/knowledge", headers=admin,
                             params={"shop": shop.slug})).status_code == 200


async def test_missing_unknown_and_revoked_keys(client: httpx.AsyncClient,
                                                shop: ShopKeys) -> None:
    r = await client.post("/v1/answer", json={"question": "hi"})
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem")
    r = await client.post("/v1/answer", headers={"Authorization": "Bearer lkb_nope"},
                          json={"question": "hi"})
    assert r.status_code == 401
    made = (await client.post("/v1/keys", headers=shop.owner, json={"role": "bot"})).json()
    fresh = {"X-API-Key": made["secret"]}
    assert (await client.post("/v1/answer", headers=fresh,
                              json={"question": "hi"})).status_code == 200
    listed = await client.get("/v1/keys", headers=shop.owner)
    assert made["secret"] not in listed.text
    revoked = await client.delete(f"/v1/keys/{made['key']['id']}", headers=shop.owner)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await client.post("/v1/answer", headers=fresh,
                              json={"question": "hi"})).status_code == 401


async def test_owner_cannot_revoke_another_shops_key(client: httpx.AsyncClient,
                                                     runtime: Runtime, shop: ShopKeys) -> None:
    other = await make_shop(runtime, "keyholder")
    made = (await client.post("/v1/keys", headers=other.owner, json={"role": "bot"})).json()
    r = await client.delete(f"/v1/keys/{made['key']['id']}", headers=shop.owner)
    assert r.status_code == 404
    ok = await client.post("/v1/answer", headers={"X-API-Key": made["secret"]},
                           json={"question": "hi"})
    assert ok.status_code == 200


async def test_admin_manages_shops_and_keys(client: httpx.AsyncClient,
                                            admin: dict[str, str]) -> None:
    r = await client.post("/v1/shops", headers=admin, json={"slug": "admin-made",
                                                            "name": "Admin Made"})
    assert r.status_code == 201, r.text
    dup = await client.post("/v1/shops", headers=admin, json={"slug": "admin-made",
                                                              "name": "Again"})
    assert dup.status_code == 409
    key = await client.post("/v1/keys", headers=admin, json={"role": "owner",
                                                             "shop": "admin-made"})
    assert key.status_code == 201
    owner = {"Authorization": f"Bearer {key.json()['secret']}"}
    mine = await client.get("/v1/shops", headers=owner)
    assert [s["slug"] for s in mine.json()] == ["admin-made"]
    patched = await client.patch("/v1/shops/admin-made", headers=admin,
                                 json={"auto_approve_threshold": 0, "options_threshold": 0.3})
    assert patched.status_code == 200
    assert patched.json()["auto_approve_threshold"] == 0
    assert patched.json()["options_threshold"] == 0.3
