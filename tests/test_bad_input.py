"""Bad input gets problem details that say what was wrong and the limit, never a 500."""

from __future__ import annotations

import json

import httpx

from app.bodies import MAX_JSON_DEPTH
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


async def test_deeply_nested_json_is_a_422_with_the_limit(client: httpx.AsyncClient,
                                                          shop: ShopKeys) -> None:
    """Deep JSON was a 500: past about 400 levels in an answer's metadata (the NUL check
    recursed), past about 990 anywhere (decoding exhausted Python's recursion)."""

    def nested(depth: int) -> str:
        return '{"a":' * depth + "1" + "}" * depth

    for path, headers, template in (
            ("/v1/answer", shop.bot, '{"question": "hi", "metadata": %s}'),
            ("/v1/knowledge", shop.owner, '{"answer": "deep", "metadata": %s}'),
            ("/v1/transcripts", shop.bot,
             '{"turns": [{"speaker": "agent", "text": "hello", "extra": %s}]}')):
        for depth in (MAX_JSON_DEPTH, 500, 5_000, 100_000):
            body = _is_problem(await client.post(
                path, headers={**headers, "Content-Type": "application/json"},
                content=(template % nested(depth)).encode()), 422)
            assert body["limit"] == MAX_JSON_DEPTH and str(MAX_JSON_DEPTH) in body["detail"]
    shallow = await client.post("/v1/answer", headers=shop.bot, json={
        "question": "hi", "metadata": json.loads(nested(MAX_JSON_DEPTH - 3))})
    assert shallow.status_code == 200, shallow.text
    deep_list = b'{"question": "hi", "metadata": {"a": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    _is_problem(await client.post("/v1/answer", content=deep_list, headers={
        **shop.bot, "Content-Type": "application/json"}), 422)


async def test_a_slug_with_a_final_newline_is_refused(client: httpx.AsyncClient,
                                                      admin: dict[str, str]) -> None:
    # Python's `$` matches before a final newline: the check passed, the table's CHECK
    # refused, a 500.
    for slug in ("fine\n", "fine\n\n", "\nfine"):
        body = _is_problem(await client.post("/v1/shops", headers=admin,
                                             json={"slug": slug, "name": "x"}), 422)
        assert body.get("field") == "slug" or "slug" in body["detail"], body


async def test_wrong_content_types_and_body_shapes(client: httpx.AsyncClient,
                                                   shop: ShopKeys) -> None:
    for content_type, content in (("application/x-www-form-urlencoded", b"question=hi"),
                                  ("application/xml", b"<question>hi</question>"),
                                  ("application/msgpack", b"\x81\xa8question\xa2hi"),
                                  ("application/json", b""), ("application/json", b"null"),
                                  ("application/json", b'"hi"'),
                                  ("application/json", b'[{"question": "hi"}]'),
                                  ("application/json", b'{"question": "caf\xe9"}'),
                                  ("application/json", b'{"question": "\\udc80"}')):
        r = await client.post("/v1/answer", content=content,
                              headers={**shop.bot, "Content-Type": content_type})
        _is_problem(r, r.status_code if r.status_code in {400, 415, 422} else 400)
    # A multipart upload sent as JSON, and JSON sent as a form.
    _is_problem(await client.post("/v1/documents", headers={
        **shop.owner, "Content-Type": "application/json"}, content=b'{"file": "x"}'), 400)
    r = await client.post("/v1/knowledge", headers=shop.owner, files={
        "answer": ("a.txt", b"x", "text/plain")})
    _is_problem(r, r.status_code if r.status_code in {400, 415, 422} else 400)


async def test_text_in_urls_with_nul_surrogates_and_invalid_utf8(client: httpx.AsyncClient,
                                                                 shop: ShopKeys) -> None:
    """Query and path text arrive percent-encoded: a NUL, an encoded surrogate or bytes that
    are not UTF-8 are a 4xx problem or plain text, never a 500."""
    for url in ("/v1/search?q=a%00b", "/v1/search?q=%ED%A0%80", "/v1/search?q=%FF%FE",
                "/v1/transcripts?q=%00", "/v1/knowledge?category=a%00",
                "/v1/audit?action=%00", "/v1/queue?status=%00&kind=%FF",
                "/v1/knowledge?shop=%00", "/v1/conversations/a%00b",
                "/v1/conversations/%ED%A0%80", "/v1/shops/%00", "/v1/export/%FF"):
        r = await client.get(url, headers=shop.owner)
        assert r.status_code < 500, (url, r.status_code, r.text)
        if r.status_code >= 400:
            _is_problem(r, r.status_code)
    for user in ("a%00b", "%ED%A0%80", "%FF"):
        r = await client.delete(f"/v1/users/{user}", headers=shop.owner)
        assert r.status_code in {200, 422}, (user, r.status_code, r.text)


async def test_negative_and_zero_pages(client: httpx.AsyncClient, shop: ShopKeys) -> None:
    for path in ("/v1/knowledge", "/v1/queue", "/v1/audit", "/v1/documents",
                 "/v1/transcripts", "/v1/out-of-scope"):
        for params in ({"offset": -1}, {"offset": -(10**19)}, {"limit": 0}, {"limit": -5},
                       {"limit": 10**19}, {"offset": "1.5"}, {"offset": "ten"}):
            body = _is_problem(await client.get(path, headers=shop.owner, params=params), 422)
            assert next(iter(params)) in body["detail"], (path, params, body)


async def test_a_document_over_its_limit_is_413_with_the_limit(client: httpx.AsyncClient,
                                                               shop: ShopKeys,
                                                               settings: Settings) -> None:
    huge = b"# Big\n\n" + b"a" * (settings.max_document_bytes + 100_000)
    body = _is_problem(await client.post("/v1/documents", headers=shop.owner, files={
        "file": ("big.md", huge, "text/markdown")}), 413)
    assert body["limit"] == settings.max_document_bytes
    assert str(settings.max_document_bytes) in body["detail"]
