"""Past capacity learnkb sheds load quickly, with Retry-After: a key over its shop's rate limit
gets 429, and questions beyond what the model can take on get 503."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from app.factory import create_app
from knowledge.model.embedding import Embedder
from knowledge.runtime import Runtime
from knowledge.settings import Settings
from tests.conftest import ShopKeys, make_shop, serving


async def test_a_key_over_its_shops_rate_limit_gets_429_and_other_keys_do_not(
        client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]) -> None:
    slow, other = await make_shop(runtime, "limited"), await make_shop(runtime, "free")
    r = await client.patch(f"/v1/shops/{slow.slug}", headers=admin,
                           json={"rate_limit_per_second": 2})
    assert r.status_code == 200 and r.json()["rate_limit_per_second"] == 2
    bad = await client.patch(f"/v1/shops/{slow.slug}", headers=admin,
                             json={"rate_limit_per_second": 0})
    assert bad.status_code == 422
    await asyncio.sleep(5.1)  # the shop cache picks the new limit up
    statuses = [(await client.get("/v1/search", headers=slow.bot, params={"q": "hi"}))
                for _ in range(8)]
    codes = [s.status_code for s in statuses]
    assert codes[:4] == [200] * 4 and 429 in codes, codes  # a burst of 2 s x 2/s passes
    refused = next(s for s in statuses if s.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["limit"] == 2 and "2 requests per second" in refused.json()["detail"]
    # The shop's owner key has a bucket of its own; another shop is not limited.
    assert (await client.get("/v1/search", headers=slow.owner,
                             params={"q": "hi"})).status_code == 200
    for _ in range(8):
        assert (await client.get("/v1/search", headers=other.bot,
                                 params={"q": "hi"})).status_code == 200
    await asyncio.sleep(1.1)  # refilled
    assert (await client.get("/v1/search", headers=slow.bot,
                             params={"q": "hi"})).status_code == 200
    await client.patch(f"/v1/shops/{slow.slug}", headers=admin,
                       json={"rate_limit_per_second": None})


async def test_questions_beyond_the_models_queue_are_shed_with_503(
        settings: Settings, runtime: Runtime, shop: ShopKeys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    small = settings.with_overrides(embed_queue_max=4, rate_limit_per_second=10_000)
    runtime.settings, saved = small, runtime.settings
    runtime.embedder.settings, saved_embed = small, runtime.embedder.settings
    encode = Embedder.encode_sync

    def slow_model(self: Embedder, texts: list[str], worker: int = 0) -> list[Any]:
        time.sleep(0.3)  # a model far slower than the questions arriving
        return encode(self, texts, worker)

    monkeypatch.setattr(Embedder, "encode_sync", slow_model)
    try:
        async with serving(create_app(small, runtime=runtime)) as base, \
                httpx.AsyncClient(base_url=base, timeout=60) as c:
            replies = await asyncio.gather(*[
                c.post("/v1/answer", headers=shop.bot,
                       json={"question": f"distinct question number {n} about parcels?"})
                for n in range(60)])
    finally:
        runtime.settings, runtime.embedder.settings = saved, saved_embed
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503}, codes
    shed = [r for r in replies if r.status_code == 503]
    assert shed and codes.count(200) >= 4, codes
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert "at most 4" in shed[0].json()["detail"]


async def test_requests_past_the_in_flight_bound_are_refused_at_once(
        settings: Settings, runtime: Runtime, shop: ShopKeys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    encode = Embedder.encode_sync

    def slow_model(self: Embedder, texts: list[str], worker: int = 0) -> list[Any]:
        time.sleep(0.5)
        return encode(self, texts, worker)

    monkeypatch.setattr(Embedder, "encode_sync", slow_model)
    bounded = settings.with_overrides(max_in_flight=3, rate_limit_per_second=10_000)
    async with serving(create_app(bounded, runtime=runtime)) as base, \
            httpx.AsyncClient(base_url=base, timeout=60) as c:

        async def ask(n: int) -> tuple[int, float, str]:
            started = time.monotonic()
            r = await c.post("/v1/answer", headers=shop.bot,
                             json={"question": f"in flight question {n} about returns?"})
            return r.status_code, time.monotonic() - started, r.headers.get("retry-after", "")

        replies = await asyncio.gather(*[ask(n) for n in range(12)])
        probe = await c.get("/ready")  # probes are never refused
    refused = [r for r in replies if r[0] == 503]
    assert sum(1 for r in replies if r[0] == 200) >= 3, replies
    assert refused and all(r[2] == "1" for r in refused), replies
    # Refused before any work: far sooner than one pass of the (slowed) model.
    assert max(r[1] for r in refused) < 0.4, replies
    assert probe.status_code == 200
