"""Bad input gets problem details that say what was wrong and the limit, never a 500."""

from __future__ import annotations

import httpx

from app.controllers.params import MAX_OFFSET
from knowledge.settings import Settings
from tests.conftest import ShopKeys


def _is_problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def test_question_over_the_limit_says_the_limit(client: httpx.AsyncClient,
                                                      shop: ShopKeys,
                                                      settings: Settings) -> None:
    limit = settings.max_question_chars
    body = _is_problem(await client.post("/v1/answer", headers=shop.bot,
                                         json={"question": "a" * (limit + 1)}), 422)
    assert body["limit"] == limit and str(limit) in str(body["detail"])
    assert body["field"] == "question"
    ok = await client.post("/v1/answer", headers=shop.bot, json={"question": "a" * limit})
    assert ok.status_code == 200


async def test_malformed_and_mistyped_bodies(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    r = await client.post("/v1/answer", headers={**shop.bot, "Content-Type": "application/json"},
                          content=b"{not json")
    assert r.status_code in {400, 422} and r.headers["content-type"].startswith(
        "application/problem+json")
    _is_problem(await client.post("/v1/answer", headers=shop.bot, json={"question": 42}), 422)
    _is_problem(await client.post("/v1/answer", headers=shop.bot, json={}), 422)
    body = _is_problem(await client.post("/v1/answer", headers=shop.bot,
                                         json={"question": "hi", "surprise": 1}), 422)
    assert "surprise" in str(body["detail"])
    _is_problem(await client.post("/v1/answer", headers=shop.bot,
                                  json={"question": "   "}), 422)


async def test_body_over_the_request_limit_is_413_with_the_limit(
        client: httpx.AsyncClient, shop: ShopKeys, settings: Settings) -> None:
    huge = b'{"question": "' + b"a" * (settings.max_request_bytes + 10) + b'"}'
    body = _is_problem(await client.post(
        "/v1/answer", headers={**shop.bot, "Content-Type": "application/json"}, content=huge),
        413)
    assert body["limit"] == settings.max_request_bytes


async def test_knowledge_limits(client: httpx.AsyncClient, shop: ShopKeys,
                                settings: Settings) -> None:
    _is_problem(await client.post("/v1/knowledge", headers=shop.owner,
                                  json={"answer": ""}), 422)
    body = _is_problem(await client.post("/v1/knowledge", headers=shop.owner, json={
        "answer": "x" * (settings.max_answer_chars + 1)}), 422)
    assert body["limit"] == settings.max_answer_chars
    _is_problem(await client.post("/v1/knowledge", headers=shop.owner, json={
        "answer": "ok", "variants": ["v"] * 51}), 422)
    _is_problem(await client.get("/v1/knowledge/not-a-uuid", headers=shop.owner), 404)
    _is_problem(await client.get("/v1/knowledge/00000000-0000-0000-0000-000000000000",
                                 headers=shop.owner), 404)
    _is_problem(await client.get("/v1/knowledge", headers=shop.owner,
                                 params={"limit": 100_000}), 422)


async def test_listing_offsets_have_a_limit(client: httpx.AsyncClient, shop: ShopKeys,
                                           admin: dict[str, str]) -> None:
    for path in ("/v1/knowledge", "/v1/queue", "/v1/audit", "/v1/documents", "/v1/keys",
                 "/v1/shops"):
        headers = admin if path == "/v1/keys" else shop.owner
        for offset in (MAX_OFFSET + 1, 10**19):
            body = _is_problem(await client.get(path, headers=headers,
                                                params={"offset": offset}), 422)
            assert str(MAX_OFFSET) in str(body["detail"]), (path, body)
        ok = await client.get(path, headers=headers, params={"offset": MAX_OFFSET})
        assert ok.status_code == 200, (path, ok.text)


async def test_shop_settings_are_range_checked(client: httpx.AsyncClient,
                                               admin: dict[str, str], shop: ShopKeys) -> None:
    for change in ({"auto_approve_threshold": 101}, {"auto_approve_threshold": -1},
                   {"answer_threshold": 1.5}, {"options_threshold": 0.9,
                                               "answer_threshold": 0.5}):
        _is_problem(await client.patch(f"/v1/shops/{shop.slug}", headers=admin, json=change),
                    422)
    _is_problem(await client.post("/v1/shops", headers=admin,
                                  json={"slug": "Bad Slug!", "name": "x"}), 422)


async def test_documents_reject_what_they_cannot_read(client: httpx.AsyncClient,
                                                      shop: ShopKeys) -> None:
    body = _is_problem(await client.post("/v1/documents", headers=shop.owner, files={
        "file": ("sheet.xlsx", b"PK\x03\x04", "application/vnd.ms-excel")}), 415)
    assert "Markdown" in str(body["detail"])
    _is_problem(await client.post("/v1/documents", headers=shop.owner,
                                  files={"file": ("empty.md", b"   ", "text/markdown")}), 422)
    _is_problem(await client.post("/v1/documents", headers=shop.owner,
                                  files={"file": ("bad.txt", b"\xff\xfe\xfa", "text/plain")}),
                422)
    _is_problem(await client.post("/v1/documents", headers=shop.owner,
                                  files={"file": ("bad.pdf", b"%PDF-1.4 broken",
                                                  "application/pdf")}), 422)
    body = _is_problem(await client.post("/v1/documents", headers=shop.owner, files={
        "attachment": ("x.md", b"# X\n\nx", "text/markdown")}), 422)
    assert "`file`" in str(body["detail"])
    r = await client.post("/v1/documents", headers=shop.owner, data={"x": "y"})
    assert r.status_code in {400, 422} and r.headers["content-type"].startswith(
        "application/problem+json")


async def test_unstorable_text_and_odd_references_are_4xx(client: httpx.AsyncClient,
                                                          shop: ShopKeys,
                                                          admin: dict[str, str]) -> None:
    _is_problem(await client.post("/v1/answer", headers=shop.bot,
                                  json={"question": "hi\u0000there"}), 422)
    _is_problem(await client.post("/v1/knowledge", headers=shop.owner,
                                  json={"answer": "nul\u0000inside"}), 422)
    _is_problem(await client.post("/v1/answer", headers=shop.bot, json={
        "question": "hello", "metadata": {"k": "nul\u0000"}}), 422)
    # The turn is written after the answer: what it could not store is refused before.
    for name in ("conversation_id", "user_id", "channel", "ab_variant"):
        r = await client.post("/v1/answer", headers=shop.bot,
                              json={"question": "hello", name: "a\u0000b"})
        _is_problem(r, 422)
        assert r.json()["field"] == name
    _is_problem(await client.get("/v1/shops/99999999999", headers=admin), 404)
    _is_problem(await client.get("/v1/knowledge", headers=admin,
                                 params={"shop": "²"}), 404)
