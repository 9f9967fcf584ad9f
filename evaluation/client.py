"""The evaluation's HTTP client: keys per role, problem details raised, requests in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from evaluation.report import progress

T = TypeVar("T")
R = TypeVar("R")


class ServiceError(RuntimeError):
    """The service refused a request the evaluation needed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Api:
    def __init__(self, base_url: str, concurrency: int = 8) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=120,
            limits=httpx.Limits(max_connections=concurrency,
                                max_keepalive_connections=concurrency))

    async def call(self, method: str, path: str, key: str, *, json: Any = None,
                   params: dict[str, Any] | None = None) -> Any:
        response = await self.http.request(method, path, json=json, params=params,
                                           headers={"Authorization": f"Bearer {key}"})
        if response.status_code >= 400:
            raise ServiceError(f"{method} {path} -> {response.status_code}: {response.text}",
                               response.status_code)
        return response.json()

    async def close(self) -> None:
        await self.http.aclose()


@dataclass(frozen=True, slots=True)
class ShopKeys:
    slug: str
    owner: str
    bot: str


async def create_shop(api: Api, admin: str, slug: str) -> ShopKeys:
    """A shop with an owner key and a bot key, made through the API as an admin would."""
    await api.call("POST", "/v1/shops", admin, json={"slug": slug, "name": slug})
    owner = await api.call("POST", "/v1/keys", admin,
                           json={"role": "owner", "shop": slug, "name": "eval owner"})
    bot = await api.call("POST", "/v1/keys", admin,
                         json={"role": "bot", "shop": slug, "name": "eval bot"})
    return ShopKeys(slug, owner["secret"], bot["secret"])


async def each(items: Sequence[T], work: Callable[[T], Awaitable[R]], concurrency: int,
               description: str) -> list[R]:
    """work(item) for every item, `concurrency` at a time, results in the items' order."""
    results: list[Any] = [None] * len(items)
    cursor = iter(range(len(items)))
    bar = progress(len(items), description)

    async def worker() -> None:
        for i in cursor:
            results[i] = await work(items[i])
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        bar.close()
    return results
