"""Authentication of API keys and the shop a request acts on (rules live in knowledge.access)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from knowledge.access import Action, Principal, Role, scope_shop
from knowledge.errors import NotFound
from knowledge.rate_limits import RateLimiter
from knowledge.runtime import Runtime
from knowledge.store import keys
from knowledge.store.key_revocations import Revocations
from knowledge.store.shops import Shop, ShopCache, get_shop

T = TypeVar("T")

# The authenticated caller, as a handler parameter.
Caller = NamedDependency[Principal]


def runtime_of(state: State) -> Runtime:
    rt = state.get("runtime")
    assert isinstance(rt, Runtime), "the app's runtime is not started"
    return rt


def _held(state: State, name: str, kind: type[T], make: Callable[[], T]) -> T:
    """One object of `kind` per app, made on first use and kept in its state."""
    value = state.get(name)
    if not isinstance(value, kind):
        value = make()
        state[name] = value
    return value


def shop_cache_of(state: State) -> ShopCache:
    return _held(state, "shop_cache", ShopCache, ShopCache)


def _secret(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key")


def revocations_of(rt: Runtime) -> Revocations:
    """The process's listener for revoked keys, shared by every app on this runtime."""
    return rt.helper("key_revocations", Revocations, lambda: Revocations(rt.database_url))


def key_cache_of(state: State) -> keys.KeyCache:
    return _held(state, "key_cache", keys.KeyCache,
                 lambda: keys.KeyCache(runtime_of(state).settings.auth_cache_seconds,
                                       revocations_of(runtime_of(state))))


def rate_limiter_of(state: State) -> RateLimiter:
    return _held(state, "rate_limiter", RateLimiter, RateLimiter)


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller: every /v1 request carries an API key, held to its shop's rate limit. A key
    seen lately is held to it before any database work, so a flood costs nothing."""
    state = request.app.state
    rt = runtime_of(state)
    cache, secret = key_cache_of(state), _secret(request)
    known = cache.peek(secret)
    if known is not None:
        await _limit(state, known)
    principal = await cache.authenticate(rt.pool, secret)
    if known is None:
        await _limit(state, principal)
    return principal


async def _limit(state: State, principal: Principal) -> None:
    rt = runtime_of(state)
    rate = rt.settings.rate_limit_per_second
    if principal.shop_id is not None:
        rate = (await shop_cache_of(state).get(rt.pool, principal.shop_id)
                ).rate_limit_per_second or rate
    if principal.key_id is not None:
        rate_limiter_of(state).take(principal.key_id, rate)


async def resolve_shop(state: State, principal: Principal, action: Action,
                       shop: str | None) -> Shop:
    """The shop a request acts on: the key's own, or for admins the one named by `shop`."""
    rt = runtime_of(state)
    requested: int | None = None
    if shop is not None:
        if principal.role is Role.ADMIN:
            requested = (await get_shop(rt.pool, shop)).id
        else:
            own = await shop_cache_of(state).get(rt.pool, principal.shop_id or 0)
            if shop not in {str(own.id), own.slug}:
                raise NotFound(f"no shop {shop!r}")
            requested = own.id
    shop_id = scope_shop(principal, action, requested)
    return await shop_cache_of(state).get(rt.pool, shop_id)
