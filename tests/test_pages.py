"""The review pages over real HTTP without a browser: sign-in, sessions, CSRF, walls between
shops, headers, and every page rendering what the shop holds. The browser tests
(test_pages_browser.py) drive the same pages through Chromium."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from knowledge.runtime import Runtime
from knowledge.store import keys
from tests.conftest import ShopKeys, make_shop

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, secret: str) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in with `secret`, and its session's CSRF token."""
    browser = httpx.AsyncClient(base_url=client.base_url, timeout=60)
    form = await browser.get("/admin/sign-in")
    token = CSRF.search(form.text)
    assert token, form.text
    r = await browser.post("/admin/sign-in", data={"_csrf": token.group(1), "key": secret})
    assert r.status_code == 303, r.text
    page = await browser.get("/admin/queue")
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found
    return browser, found.group(1)


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def suggest(client: httpx.AsyncClient, shop: ShopKeys, question: str,
                  answer: str) -> str:
    r = await client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
        "question": question, "answer": answer, "confidence": 40})
    assert r.status_code in {200, 201}, r.text
    item_id: str = r.json()["item"]["id"]
    return item_id


async def test_sign_in_sets_a_strict_http_only_session_and_sign_out_ends_it(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    browser = httpx.AsyncClient(base_url=client.base_url, timeout=60)
    form = await browser.get("/admin/sign-in")
    assert "learnkb_sign_in" in form.headers["set-cookie"]
    token = CSRF.search(form.text)
    assert token
    r = await browser.post("/admin/sign-in", data={
        "_csrf": token.group(1), "key": secret_of(shop.owner), "next": "/admin/dashboard"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/dashboard"
    cookie = next(c for c in r.headers.get_list("set-cookie")
                  if c.startswith("learnkb_session="))
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https gets Secure
    page = await browser.get("/admin/queue")
    assert page.status_code == 200
    csrf = CSRF.search(page.text)
    assert csrf
    out = await browser.post("/admin/sign-out", data={"_csrf": csrf.group(1)})
    assert out.status_code == 303
    after = await browser.get("/admin/queue")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/admin/sign-in?next=")
    await browser.aclose()


async def test_sign_in_refuses_bad_keys_bot_keys_and_forged_forms(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    browser = httpx.AsyncClient(base_url=client.base_url, timeout=60)
    token = CSRF.search((await browser.get("/admin/sign-in")).text)
    assert token
    wrong = await browser.post("/admin/sign-in", data={"_csrf": token.group(1),
                                                       "key": "lkb_not-a-key"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    token = CSRF.search(wrong.text)
    assert token
    bot = await browser.post("/admin/sign-in", data={"_csrf": token.group(1),
                                                     "key": secret_of(shop.bot)})
    assert bot.status_code == 403 and "bot key" in bot.text
    # A form posted from elsewhere has no matching sign-in cookie.
    forged = await httpx.AsyncClient(base_url=client.base_url).post(
        "/admin/sign-in", data={"_csrf": "x", "key": secret_of(shop.owner)})
    assert forged.status_code == 403
    # Never a redirect off the site after sign-in.
    token = CSRF.search(bot.text)
    assert token
    offsite = await browser.post("/admin/sign-in", data={
        "_csrf": token.group(1), "key": secret_of(shop.owner), "next": "//evil.example/"})
    assert offsite.headers["location"] == "/admin/queue"
    await browser.aclose()


async def test_forms_without_their_csrf_token_are_refused(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    item = await suggest(client, shop, "Do you gift wrap?", "Yes, for two euros.")
    browser, csrf = await sign_in(client, secret_of(shop.owner))
    for data in ({}, {"_csrf": "wrong"}):
        r = await browser.post(f"/admin/queue/{item}/approve", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    still = await client.get(f"/v1/queue/{item}", headers=shop.owner)
    assert still.json()["status"] == "pending"
    ok = await browser.post(f"/admin/queue/{item}/approve", data={"_csrf": csrf},
                            headers={"HX-Request": "true"})
    assert ok.status_code == 200 and "approved" in ok.text
    await browser.aclose()


async def test_an_owner_never_sees_another_shops_items_or_entries(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    other = await make_shop(runtime, "wall")
    theirs = await suggest(client, other, "What is the staff discount?", "SECRET-B-7")
    entry = (await client.post("/v1/knowledge", headers=other.owner, json={
        "question": "Other shop secret?", "answer": "SECRET-B-8"})).json()["entry_id"]
    browser, csrf = await sign_in(client, secret_of(shop.owner))
    for url in (f"/admin/queue/{theirs}", f"/admin/knowledge/{entry}"):
        r = await browser.get(url)
        assert r.status_code == 404 and "SECRET-B" not in r.text
    act = await browser.post(f"/admin/queue/{theirs}/approve", data={"_csrf": csrf})
    assert act.status_code == 404
    listing = await browser.get("/admin/queue", params={"status": ""})
    assert "SECRET-B" not in listing.text
    # An owner cannot pick another shop.
    pick = await browser.post("/admin/shop", data={"_csrf": csrf, "shop": other.slug})
    assert pick.status_code == 403
    assert (await client.get(f"/v1/queue/{theirs}", headers=other.owner)).json()[
        "status"] == "pending"
    await browser.aclose()


async def test_a_revoked_key_ends_its_sessions_and_expired_sessions_end(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    made = await keys.create_key(runtime.pool, "owner", shop.shop_id, "page owner")
    browser, _ = await sign_in(client, made.secret)
    await keys.revoke_key(runtime.pool, made.key.id)
    r = await browser.get("/admin/queue")
    assert r.status_code == 303 and "/admin/sign-in" in r.headers["location"]
    second, _ = await sign_in(client, secret_of(shop.owner))
    await runtime.pool.execute("UPDATE web_sessions SET expires_at = now() - interval '1 s' "
                               "WHERE key_id = (SELECT id FROM api_keys WHERE name = 'owner' "
                               "AND shop_id = $1)", shop.shop_id)
    assert (await second.get("/admin/queue")).status_code == 303
    idle, _ = await sign_in(client, secret_of(shop.owner))
    await runtime.pool.execute("UPDATE web_sessions SET last_seen_at = now() - interval '2 h' "
                               "WHERE key_id = (SELECT id FROM api_keys WHERE name = 'owner' "
                               "AND shop_id = $1)", shop.shop_id)
    htmx = await idle.get("/admin/queue", headers={"HX-Request": "true"})
    assert htmx.headers.get("hx-redirect", "").startswith("/admin/sign-in")
    for b in (browser, second, idle):
        await b.aclose()


async def test_every_page_renders_the_shops_data_with_security_headers(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    entry = (await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "How long does delivery take?",
        "answer": "Two to three working days."})).json()["entry_id"]
    await client.patch(f"/v1/knowledge/{entry}", headers=shop.owner, json={
        "answer": "Two to four working days.", "reason": "carrier change"})
    item = await suggest(client, shop, "How long does delivery take to Austria?",
                         "Two to four working days, five to Austria.")
    # A call with times and one without: an excerpt shows its times when it has them.
    t1 = await client.post("/v1/transcripts", headers=shop.bot, json={"transcript": (
        "Customer: Do you sell gift vouchers?\nAgent: Yes, from ten euros, in the shop.\n")})
    assert t1.status_code == 201
    await client.post("/v1/transcripts", headers=shop.bot, json={"format": "json", "transcript": (
        '[{"speaker": "Customer", "text": "Can I return opened beans?", "start": 3, "end": 5},'
        ' {"speaker": "Agent", "text": "No, only unopened bags.", "start": 6, "end": 8}]')})
    browser, _ = await sign_in(client, secret_of(shop.owner))
    pages = {
        "/admin/queue": ["Austria", "<ins>", "Two to four working days",
                         "Agent: Yes, from ten euros", "3–8 s"],
        f"/admin/queue/{item}": ["Austria"],
        "/admin/knowledge": ["How long does delivery take?"],
        f"/admin/knowledge/{entry}": ["carrier change", "<del>three", "<ins>four"],
        "/admin/knowledge?q=delivery+time": ["The bot would", "tier <code>"],
        "/admin/try": ["Try the bot"],
        "/admin/dashboard": ["<svg", "Learning curve"],
        "/admin/audit": ["knowledge.supersede"],
    }
    for url, expected in pages.items():
        r = await browser.get(url)
        assert r.status_code == 200, (url, r.text[:500])
        for text in expected:
            assert text in r.text, (url, text)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["cache-control"] == "no-store"
        assert "<script>" not in r.text and " style=" not in r.text
    static = await browser.get("/admin/static/vendor/htmx.min.js")
    assert static.status_code == 200 and "htmx" in static.text
    await browser.aclose()


async def test_bad_form_input_gets_a_clear_message_not_a_500(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    item = await suggest(client, shop, "Do you sell gift cards?", "Yes, from ten euros.")
    browser, csrf = await sign_in(client, secret_of(shop.owner))
    cases = [
        (f"/admin/queue/{item}/reject", {"reason": ""}, 422, "reason is required"),
        (f"/admin/queue/{item}/edit", {"answer": "x" * 20_001}, 422, "20000"),
        (f"/admin/queue/{item}/merge", {"into": "not-an-id"}, 422, "not an item id"),
        ("/admin/queue/bulk", {"action": "explode", "ids": item}, 422, "action is one of"),
        ("/admin/queue/bulk", {"action": "approve"}, 422, "select at least one"),
        (f"/admin/queue/{uuid.uuid4()}/approve", {}, 404, "no queue item"),
        (f"/admin/queue/{item}/edit", {"answer": "nul\x00byte"}, 422, "NUL"),
    ]
    for url, data, status, words in cases:
        r = await browser.post(url, data={"_csrf": csrf, **data})
        assert r.status_code == status, (url, r.status_code, r.text[:300])
        assert words in r.text, (url, r.text[:300])
        inplace = await browser.post(url, data={"_csrf": csrf, **data},
                                     headers={"HX-Request": "true"})
        assert inplace.headers.get("hx-retarget") == "#flash" and words in inplace.text
    for url in ("/admin/queue?offset=-1", "/admin/queue?sort=sideways",
                "/admin/dashboard?days=5", "/admin/audit?subject=nope"):
        r = await browser.get(url)
        assert r.status_code in {400, 422}, (url, r.status_code)
    assert (await client.get(f"/v1/queue/{item}", headers=shop.owner)).json()[
        "status"] == "pending"
    await browser.aclose()


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_bulk_actions_report_each_item_and_redraw_them(
        client: httpx.AsyncClient, shop: ShopKeys, action: str) -> None:
    ids = [await suggest(client, shop, f"Question number {n} about {action}?",
                         f"Answer {n}.") for n in range(3)]
    browser, csrf = await sign_in(client, secret_of(shop.owner))
    r = await browser.post("/admin/queue/bulk", headers={"HX-Request": "true"}, data={
        "_csrf": csrf, "action": action, "reason": "duplicate", "ids": [*ids, ids[0]]})
    assert r.status_code == 200 and "3 items done." in r.text
    assert r.text.count('hx-swap-oob="outerHTML"') == 3
    expected = "approved" if action == "approve" else "rejected"
    for i in ids:
        assert (await client.get(f"/v1/queue/{i}", headers=shop.owner)).json()[
            "status"] == expected
    await browser.aclose()


async def test_an_admin_picks_a_shop_or_sees_all(
        client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]) -> None:
    a, b = await make_shop(runtime, "pick-a"), await make_shop(runtime, "pick-b")
    await suggest(client, a, "Alpha question about opening hours?", "Alpha answer.")
    await suggest(client, b, "Beta question about opening hours?", "Beta answer.")
    browser, csrf = await sign_in(client, secret_of(admin))
    # Newest first: the all-shops queue holds every earlier test's items too.
    everything = await browser.get("/admin/queue", params={"status": "", "sort": "newest"})
    assert "Alpha question" in everything.text and "Beta question" in everything.text
    assert (await browser.get("/admin/knowledge")).status_code == 422  # pick a shop first
    r = await browser.post("/admin/shop", data={"_csrf": csrf, "shop": a.slug})
    assert r.status_code == 303
    one = await browser.get("/admin/queue", params={"status": ""})
    assert "Alpha question" in one.text and "Beta question" not in one.text
    assert (await browser.get("/admin/knowledge")).status_code == 200
    await browser.aclose()


async def test_knowledge_is_added_edited_retired_and_uploaded_from_the_pages(
        client: httpx.AsyncClient, shop: ShopKeys) -> None:
    browser, csrf = await sign_in(client, secret_of(shop.owner))
    made = await browser.post("/admin/knowledge/new", data={
        "_csrf": csrf, "question": "Do you sell descaler?", "variants": "descaling powder?\n",
        "answer": "Yes, the DS-1 descaler.", "category": "care"})
    assert made.status_code == 303
    entry_url = made.headers["location"]
    entry_id = entry_url.rsplit("/", 1)[1]
    edited = await browser.post(f"{entry_url}/edit", data={
        "_csrf": csrf, "version": "1", "question": "Do you sell descaler?",
        "variants": "descaling powder?", "answer": "Yes, the DS-2 descaler replaced DS-1.",
        "category": "care", "reason": "new product"})
    assert edited.status_code == 303
    stale = await browser.post(f"{entry_url}/edit", data={
        "_csrf": csrf, "version": "1", "answer": "an edit made on an old page"})
    assert stale.status_code == 409 and "version 2" in stale.text
    history = (await client.get(f"/v1/knowledge/{entry_id}/history",
                                headers=shop.owner)).json()
    assert [v["answer"] for v in history] == ["Yes, the DS-1 descaler.",
                                              "Yes, the DS-2 descaler replaced DS-1."]
    assert history[1]["variants"] == ["descaling powder?"]
    page = await browser.get(entry_url)
    assert "<ins>DS-2" in page.text and "new product" in page.text
    retired = await browser.post(f"{entry_url}/retire", data={"_csrf": csrf,
                                                               "reason": "discontinued"})
    assert retired.status_code == 303
    assert (await client.get(f"/v1/knowledge/{entry_id}", headers=shop.owner)).json()[
        "valid_to"] is not None
    upload = await browser.post(
        "/admin/knowledge/documents", headers={"HX-Request": "true"}, data={"_csrf": csrf},
        files={"file": ("care.md", b"# Care\n\nDescale the Aurora every month with DS-2.",
                        "text/markdown")})
    assert upload.status_code == 200 and "care.md: 1 passage added" in upload.text
    asked = await client.post("/v1/answer", headers=shop.bot,
                              json={"question": "how often should I descale the Aurora?"})
    assert "every month" in asked.json()["answer"]
    nothing = await browser.post("/admin/knowledge/documents", data={"_csrf": csrf})
    assert nothing.status_code == 422 and "choose a file" in nothing.text
    await browser.aclose()


async def test_the_try_page_asks_as_the_bot_and_files_real_signals(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    await client.post("/v1/knowledge", headers=shop.owner, json={
        "question": "Do you have a loyalty card?", "answer": "Yes, every tenth coffee is free."})
    browser, csrf = await sign_in(client, secret_of(shop.owner))
    asked = await browser.post("/admin/try", headers={"HX-Request": "true"}, data={
        "_csrf": csrf, "question": "do you have a loyalty card?"})
    assert asked.status_code == 200 and "every tenth coffee" in asked.text
    turn_id = re.search(r'name="turn_id" value="([^"]+)"', asked.text)
    assert turn_id
    down = await browser.post("/admin/try/feedback", headers={"HX-Request": "true"}, data={
        "_csrf": csrf, "turn_id": turn_id.group(1), "verdict": "down"})
    assert down.status_code == 200 and "learning queue" in down.text
    # The item it became shows the conversation turn it came from.
    listing = await browser.get("/admin/queue")
    assert "1 conversation turn" in listing.text
    assert "Customer: do you have a loyalty card?" in listing.text
    # A real turn (written once the answer was out), told apart from customers' turns.
    channel = await runtime.pool.fetchval(
        "SELECT channel FROM conversation_memory WHERE id = $1", uuid.UUID(turn_id.group(1)))
    assert channel == "review-page"
    fixed = await browser.post("/admin/try/correction", headers={"HX-Request": "true"}, data={
        "_csrf": csrf, "turn_id": turn_id.group(1),
        "corrected_answer": "Yes: every tenth coffee is free, and beans count too."})
    assert fixed.status_code == 200 and "Correction" in fixed.text
    queue = (await client.get("/v1/queue", headers=shop.owner)).json()["items"]
    assert any(i["proposed_content"] == "Yes: every tenth coffee is free, and beans count too."
               for i in queue)
    bad = await browser.post("/admin/try/feedback", data={
        "_csrf": csrf, "turn_id": "nope", "verdict": "down"})
    assert bad.status_code == 422
    await browser.aclose()


async def test_a_calls_pair_without_times_renders_in_the_queue(client: httpx.AsyncClient,
                                                               shop: ShopKeys) -> None:
    """A plain-text call has no times: its pair's signal carries an excerpt without `start`,
    which the queue page formatted as a number (a 500 for every page that listed it)."""
    call = ("Agent: Good morning, Brew & Co.\nCustomer: Do you repair grinders?\n"
            "Agent: Yes, grinder repairs take about a week in our workshop.\n")
    made = await client.post("/v1/transcripts", headers=shop.bot, json={"transcript": call})
    assert made.status_code == 201, made.text
    queued = [q for q in made.json()["queued"] if q.get("item_id")]
    assert queued, made.json()
    browser, _ = await sign_in(client, secret_of(shop.owner))
    for url in ("/admin/queue", f"/admin/queue/{queued[0]['item_id']}"):
        r = await browser.get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert "grinder repairs take about a week" in r.text and " s</span>" not in r.text
    await browser.aclose()


async def test_a_page_says_when_the_database_is_away_as_the_api_does(
        client: httpx.AsyncClient, shop: ShopKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    from knowledge.learning import review

    browser, _ = await sign_in(client, secret_of(shop.owner))

    async def away(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("the database went away")

    monkeypatch.setattr(review, "list_items", away)
    page = await browser.get("/admin/queue")
    api = await client.get("/v1/queue", headers=shop.owner)
    assert page.status_code == api.status_code == 503
    assert page.headers["retry-after"] == api.headers["retry-after"]
    assert page.headers["content-type"].startswith("text/html")
    assert "nothing of this request was stored" in page.text
    await browser.aclose()
