"""Keys: stored as a slow salted hash, never as themselves; old SHA-256 rows upgraded on use;
a revocation applies at once in every process, whatever it cached."""

from __future__ import annotations

import hashlib
import logging
import secrets

import httpx
import pytest

from app.factory import create_app
from knowledge.access import Role
from knowledge.runtime import Runtime
from knowledge.settings import Settings
from knowledge.store import keys
from tests.conftest import ShopKeys, bearer, serving


async def test_keys_are_stored_as_salted_scrypt_hashes(runtime: Runtime, shop: ShopKeys) -> None:
    made = await keys.create_key(runtime.pool, Role.OWNER, shop.shop_id, "hash check")
    row = await runtime.pool.fetchrow(
        "SELECT key_hash, key_salt, hash_kind, prefix FROM api_keys WHERE id = $1", made.key.id)
    assert row["hash_kind"] == "scrypt" and len(row["key_salt"]) == keys.SALT_BYTES
    assert row["key_hash"] == keys.slow_hash(made.secret, row["key_salt"])
    assert row["key_hash"] != hashlib.sha256(made.secret.encode()).digest()
    assert made.secret.startswith(row["prefix"]) and len(row["prefix"]) == keys.PREFIX_CHARS
    # The secret itself is in no column of the table.
    text = await runtime.pool.fetchval("SELECT string_agg(t::text, ' ') FROM api_keys AS t")
    assert made.secret not in text and made.secret[keys.PREFIX_CHARS:] not in text
    # A key that shares the prefix but not the rest is refused.
    forged = made.secret[:keys.PREFIX_CHARS] + secrets.token_urlsafe(32)
    with pytest.raises(Exception, match="not valid"):
        await keys.authenticate(runtime.pool, forged)


async def test_a_key_made_before_slow_hashes_works_and_is_hashed_again_on_first_use(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    secret = "lkb_" + secrets.token_urlsafe(32)
    key_id = await runtime.pool.fetchval(
        "INSERT INTO api_keys (shop_id, role, name, prefix, key_hash) "
        "VALUES ($1, 'owner', 'old', $2, $3) RETURNING id", shop.shop_id, secret[:12],
        hashlib.sha256(secret.encode()).digest())
    r = await client.get("/v1/knowledge", headers=bearer(secret))
    assert r.status_code == 200, r.text
    row = await runtime.pool.fetchrow(
        "SELECT key_hash, key_salt, hash_kind FROM api_keys WHERE id = $1", key_id)
    assert row["hash_kind"] == "scrypt"
    assert row["key_hash"] == keys.slow_hash(secret, row["key_salt"])


async def test_a_revoked_key_fails_at_once_in_another_process_that_cached_it(
        settings: Settings, runtime: Runtime, client: httpx.AsyncClient, shop: ShopKeys,
        admin: dict[str, str]) -> None:
    made = await keys.create_key(runtime.pool, Role.BOT, shop.shop_id, "revoke me")
    headers = bearer(made.secret)
    # A second app with its own key cache stands for another process.
    async with serving(create_app(settings, runtime=runtime)) as other_base, \
            httpx.AsyncClient(base_url=other_base, timeout=30) as other:
        for c in (client, other):
            assert (await c.get("/v1/search", headers=headers,
                                params={"q": "hello"})).status_code == 200
        revoked = await client.delete(f"/v1/keys/{made.key.id}", headers=admin)
        assert revoked.status_code == 200, revoked.text
        for c in (client, other):
            r = await c.get("/v1/search", headers=headers, params={"q": "hello"})
            assert r.status_code == 401, r.text


async def test_no_key_or_customer_pii_reaches_the_logs(
        client: httpx.AsyncClient, shop: ShopKeys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    email, phone = "jane.doe@example.com", "+44 7911 123456"
    await client.post("/v1/answer", headers=shop.bot, json={
        "question": f"my email is {email} and phone {phone}, where is my order?"})
    await client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
        "question": f"Can {email} get a refund?", "answer": f"Call {phone}."})
    await client.get("/v1/search", headers=bearer("lkb_" + "x" * 43), params={"q": "x"})
    await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": f"Customer: I'm {email}, can I pay by card?\nAgent: Yes, any card.\n"})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (shop.owner["Authorization"], shop.bot["Authorization"]):
        assert secret.removeprefix("Bearer ") not in logged
    assert email not in logged and phone not in logged


async def test_customer_pii_is_redacted_on_every_path_that_stores_text(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    from tests.test_conversations import _tables_holding

    tag = secrets.token_hex(3)
    email = f"pii.{tag}@example.org"
    phone = f"+44 7700 9{int(tag, 16) % 100000:05d}"
    card = "4111 1111 1111 1111"
    pii = f"I am {email}, call {phone}, card {card}"
    said = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": f"{pii}: where is my parcel?", "user_id": f"u-{tag}",
        "conversation_id": f"c-{tag}"})).json()
    await client.post("/v1/feedback", headers=shop.bot, json={
        "turn_id": said["turn_id"], "type": "thumbs_down", "reason": pii})
    await client.post("/v1/corrections", headers=shop.owner, json={
        "turn_id": said["turn_id"], "corrected_answer": f"Sorry! {pii}", "context": pii})
    await client.post("/v1/corrections", headers=shop.owner, json={
        "question": f"{pii} refund?", "corrected_answer": "Within 14 days.",
        "original_response": pii})
    await client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
        "question": f"{pii}: gift wrap?", "answer": f"Yes. {pii}"})
    await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": f"Customer: {pii}. Do you ship to Spain?\nAgent: Yes, {pii}.\n"})
    await client.post("/v1/conversations/bulk", headers=shop.bot, json={"turns": [{
        "turn_id": f"t-{tag}", "conversation_id": f"c2-{tag}", "user_id": f"u-{tag}",
        "message": f"{pii} help?", "answer": f"We will call {phone}.", "confidence": 0.2}]})
    await client.post("/v1/out-of-scope", headers=shop.owner, json={
        "question": f"{pii} do you sell cars?", "redirect": f"Ask {email}"})
    # The turn log writes after the answer; a feedback waits for its turn.
    await client.post("/v1/feedback", headers=shop.bot, json={
        "turn_id": said["turn_id"], "type": "thumbs_up"})
    from jobs import embed_turns
    await embed_turns.run(runtime)
    for value in (email, phone, card, card.replace(" ", "")):
        assert await _tables_holding(runtime, value) == set(), value
    # The scan does see what was stored: the user id (not PII by itself) is everywhere.
    assert {"conversation_memory.user_id"} <= await _tables_holding(
        runtime, f"u-{tag}")
