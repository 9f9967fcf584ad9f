"""Every endpoint x every role, from a table: anonymous and revoked keys get 401, a role that
may not act 403, a role that may gets through (whatever the data then says), and no response
ever carries another shop's data. Shop B's keys against shop A are in test_tenancy.py."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from knowledge.runtime import Runtime
from tests.conftest import ShopKeys, make_shop
from tests.test_tenancy import Victim, _requests, victim  # noqa: F401 - victim is a fixture

BOT, OWNER, ADMIN = "bot", "owner", "admin"
EVERYONE = frozenset({BOT, OWNER, ADMIN})
STAFF = frozenset({OWNER, ADMIN})

# Who may call each endpoint, by method and path (ids replaced by {id}).
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/answer"): EVERYONE,
    ("GET", "/v1/search"): EVERYONE,
    ("POST", "/v1/feedback"): EVERYONE,
    ("POST", "/v1/transcripts"): EVERYONE,
    ("POST", "/v1/conversations/bulk"): EVERYONE,
    ("PATCH", "/v1/shops/{id}"): frozenset({ADMIN}),
}


def _template(path: str) -> str:
    path = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", path)
    path = re.sub(r"/v1/shops/[a-z0-9-]+", "/v1/shops/{id}", path)
    path = re.sub(r"/v1/out-of-scope/\d+", "/v1/out-of-scope/{id}", path)
    path = re.sub(r"/v1/conversations/(?!bulk)[^/]+", "/v1/conversations/{id}", path)
    return re.sub(r"/v1/users/[^/]+", "/v1/users/{id}", path)


def allowed(method: str, path: str) -> frozenset[str]:
    return ALLOWED.get((method, _template(path)), STAFF)


async def _call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str],
                kwargs: dict[str, Any]) -> httpx.Response:
    return await client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
async def bystander(client: httpx.AsyncClient, runtime: Runtime) -> ShopKeys:
    """Shop C, whose data no answer to shop A's keys may ever show."""
    c = await make_shop(runtime, "bystander")
    await client.post("/v1/knowledge", headers=c.owner, json={
        "question": "What is the secret discount code?", "answer": "SECRET-C-77"})
    await client.post("/v1/knowledge/suggestions", headers=c.owner, json={
        "question": "Is SECRET-C-77 still valid?", "answer": "SECRET-C-77 until June."})
    return c


@pytest.mark.parametrize("role", [BOT, OWNER, ADMIN])
async def test_each_role_gets_exactly_what_it_may_on_every_endpoint(
        client: httpx.AsyncClient, runtime: Runtime, victim: Victim,  # noqa: F811
        bystander: ShopKeys, admin: dict[str, str], role: str) -> None:
    headers = {BOT: victim.keys.bot, OWNER: victim.keys.owner, ADMIN: admin}[role]
    wrong = []
    for method, path, kwargs in _requests(victim):
        if role == ADMIN:  # an admin names the shop it acts on
            kwargs = {**kwargs, "params": {**kwargs.get("params", {}),
                                           "shop": victim.keys.slug}}
        r = await _call(client, method, path, headers, kwargs)
        may = role in allowed(method, path)
        ok = (r.status_code < 500 and r.status_code not in {401, 403, 404}) if may \
            else r.status_code == 403
        if not ok:
            wrong.append((role, method, path, r.status_code, r.text[:200]))
        assert "SECRET-C-77" not in r.text, (method, path)
    assert not wrong, "\n".join(map(str, wrong))


async def test_anonymous_and_revoked_keys_get_401_everywhere(
        client: httpx.AsyncClient, victim: Victim) -> None:  # noqa: F811
    a = victim.keys
    made = (await client.post("/v1/keys", headers=a.owner, json={"role": "bot"})).json()
    revoked = {"Authorization": f"Bearer {made['secret']}"}
    assert (await client.delete(f"/v1/keys/{made['key']['id']}",
                                headers=a.owner)).status_code == 200
    for headers in ({}, revoked, {"Authorization": "Bearer nonsense"},
                    {"X-API-Key": "lkb_" + "A" * 43}):
        for method, path, kwargs in _requests(victim):
            r = await _call(client, method, path, headers, kwargs)
            assert r.status_code == 401, (headers, method, path, r.status_code, r.text[:200])
            assert "SECRET-A-42" not in r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
