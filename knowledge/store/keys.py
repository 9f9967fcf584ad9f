"""API keys: made once and shown once, stored as a hash, looked up per request, revocable."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from knowledge.access import Principal, Role
from knowledge.errors import Forbidden, Invalid, NotFound, Unauthorized
from knowledge.store.db import Queryable

_KEY_PREFIX = "lkb_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    shop_id: int | None
    role: Role
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    key: ApiKey
    secret: str


_COLUMNS = "id, shop_id, role, name, prefix, created_at, revoked_at, last_used_at"

INSERT_KEY = f"""
INSERT INTO api_keys (shop_id, role, name, prefix, key_hash, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_COLUMNS}
"""
# last_used_at is touched at most once a minute, so busy keys do not contend on their row.
LOOKUP_KEY = """
WITH k AS (
    SELECT id, role, shop_id, name, last_used_at FROM api_keys
    WHERE key_hash = $1 AND revoked_at IS NULL
), touched AS (
    UPDATE api_keys SET last_used_at = now() FROM k
    WHERE api_keys.id = k.id
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
)
SELECT id, role, shop_id, name FROM k
"""
SELECT_KEY = f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1"
SELECT_KEYS = f"""
SELECT {_COLUMNS} FROM api_keys
WHERE ($1::integer IS NULL OR shop_id = $1) AND ($2::text IS NULL OR role = $2)
ORDER BY created_at, id
LIMIT $3 OFFSET $4
"""
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
RETURNING {_COLUMNS}
"""


def hash_secret(secret: str) -> bytes:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough: there is nothing to guess.
    return hashlib.sha256(secret.encode()).digest()


def _key(row: asyncpg.Record) -> ApiKey:
    values = dict(row)
    values["role"] = Role(values["role"])
    return ApiKey(**values)


async def create_key(conn: Queryable, role: Role | str,
                     shop_id: int | None, name: str = "",
                     created_by: Principal | None = None) -> NewKey:
    """A new key; its secret is in the result and nowhere else."""
    try:
        role = Role(role)
    except ValueError as exc:
        raise Invalid("role is one of admin, owner, bot", field="role") from exc
    if (role is Role.ADMIN) != (shop_id is None):
        raise Invalid("admin keys belong to no shop; owner and bot keys need a shop",
                      field="shop")
    if len(name) > 200:
        raise Invalid("a key name is at most 200 characters", field="name", limit=200)
    if created_by is not None and created_by.role is not Role.ADMIN and (
            role is not Role.BOT or shop_id != created_by.shop_id):
        raise Forbidden("an owner key may create bot keys for its own shop only")
    body = secrets.token_urlsafe(32)
    secret = f"{_KEY_PREFIX}{body}"
    try:
        row = await conn.fetchrow(INSERT_KEY, shop_id, role.value, name, secret[:12],
                                  hash_secret(secret),
                                  created_by.key_id if created_by else None)
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"no shop {shop_id}") from exc
    assert row is not None
    return NewKey(_key(row), secret)


async def authenticate(conn: Queryable, secret: str | None) -> Principal:
    if not secret:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    if not secret.startswith(_KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized("the API key is not valid")
    row = await conn.fetchrow(LOOKUP_KEY, hash_secret(secret))
    if row is None:
        raise Unauthorized("the API key is not valid or was revoked")
    return Principal(key_id=row["id"], role=Role(row["role"]), shop_id=row["shop_id"],
                     name=row["name"])


class KeyCache:
    """Verified keys for a few seconds, so a busy bot's every request is not a key lookup."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._known: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(self, conn: Queryable, secret: str | None) -> Principal:
        if self.ttl <= 0 or not secret:
            return await authenticate(conn, secret)
        digest = hash_secret(secret)
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await authenticate(conn, secret)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[digest] = (principal, now + self.ttl)
        return principal

    def forget(self, key_id: UUID) -> None:
        for digest, (principal, _) in list(self._known.items()):
            if principal.key_id == key_id:
                del self._known[digest]


async def get_key(conn: Queryable, key_id: UUID) -> ApiKey:
    row = await conn.fetchrow(SELECT_KEY, key_id)
    if row is None:
        raise NotFound(f"no key {key_id}")
    return _key(row)


async def list_keys(conn: Queryable, shop_id: int | None,
                    role: Role | None = None, limit: int = 100,
                    offset: int = 0) -> list[ApiKey]:
    rows = await conn.fetch(SELECT_KEYS, shop_id, role.value if role else None, limit, offset)
    return [_key(r) for r in rows]


async def revoke_key(conn: Queryable, key_id: UUID) -> ApiKey:
    row = await conn.fetchrow(REVOKE_KEY, key_id)
    if row is None:
        raise NotFound(f"no key {key_id}")
    return _key(row)
