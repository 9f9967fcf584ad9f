"""API keys: made once and shown once, stored as a slow salted hash (scrypt), verified in
constant time, revocable at once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from knowledge.access import Principal, Role
from knowledge.errors import Forbidden, Invalid, NotFound, Unauthorized
from knowledge.store.db import Queryable
from knowledge.store.key_revocations import Revocations

_KEY_PREFIX = "lkb_"
# The public part of a key (shown in listings) by which its row is found.
PREFIX_CHARS = 12


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
INSERT INTO api_keys (shop_id, role, name, prefix, key_hash, key_salt, hash_kind, created_by)
VALUES ($1, $2, $3, $4, $5, $6, 'scrypt', $7)
RETURNING {_COLUMNS}
"""
# The keys that may be the one presented: found by their public prefix, told apart by hash.
CANDIDATES = """
SELECT id, role, shop_id, name, key_hash, key_salt, hash_kind FROM api_keys
WHERE prefix = $1 AND revoked_at IS NULL
"""
# A key made before slow hashes, hashed again the new way on its first use.
REHASH = """
UPDATE api_keys SET key_hash = $2, key_salt = $3, hash_kind = 'scrypt'
WHERE id = $1 AND hash_kind = 'sha256'
"""
# On every request, even when the key's hash was verified moments ago: a revocation made by
# any process applies at once. last_used_at is touched at most once a minute, so busy keys do
# not contend on their row.
STILL_VALID = """
WITH k AS (
    SELECT id, last_used_at FROM api_keys WHERE id = $1 AND revoked_at IS NULL
), touched AS (
    UPDATE api_keys SET last_used_at = now() FROM k
    WHERE api_keys.id = k.id
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
)
SELECT count(*) FROM k
"""
# How long a cached key goes without asking the database even while revocations are pushed:
# the same minute that bounds how stale last_used_at may be.
TOUCH_SECONDS = 60.0
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


# scrypt at 16 MiB and about 40 ms a key: a stolen table gives nothing to test guesses against
# cheaply (on top of keys being 256-bit random strings). Verified once per process per
# AUTH_CACHE_SECONDS; revocation is checked on every request regardless.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16


def slow_hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=64 * 1024 * 1024, dklen=32)


def hash_secret(secret: str) -> bytes:
    """A fast digest, only to find a secret in a process's own cache (never stored)."""
    return hashlib.sha256(secret.encode()).digest()


def _matches(secret: str, row: asyncpg.Record) -> bool:
    """Constant-time comparison of the presented secret with a stored hash."""
    if row["hash_kind"] == "scrypt":
        return hmac.compare_digest(slow_hash(secret, row["key_salt"]), row["key_hash"])
    return hmac.compare_digest(hash_secret(secret), row["key_hash"])


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
    salt = secrets.token_bytes(SALT_BYTES)
    digest = await asyncio.to_thread(slow_hash, secret, salt)
    try:
        row = await conn.fetchrow(INSERT_KEY, shop_id, role.value, name, secret[:PREFIX_CHARS],
                                  digest, salt, created_by.key_id if created_by else None)
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"no shop {shop_id}") from exc
    assert row is not None
    return NewKey(_key(row), secret)


async def authenticate(conn: Queryable, secret: str | None) -> Principal:
    """Verify a presented key against its stored hash (slow: about 40 ms, off the loop)."""
    if not secret:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    if not secret.startswith(_KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized("the API key is not valid")
    for row in await conn.fetch(CANDIDATES, secret[:PREFIX_CHARS]):
        if not await asyncio.to_thread(_matches, secret, row):
            continue
        if row["hash_kind"] == "sha256":
            salt = secrets.token_bytes(SALT_BYTES)
            await conn.execute(REHASH, row["id"],
                               await asyncio.to_thread(slow_hash, secret, salt), salt)
        await conn.fetchval(STILL_VALID, row["id"])  # marks it used
        return Principal(key_id=row["id"], role=Role(row["role"]), shop_id=row["shop_id"],
                         name=row["name"])
    raise Unauthorized("the API key is not valid or was revoked")


class KeyCache:
    """Keys whose slow hash this process verified lately, so a busy bot's every request is not
    a scrypt. Whether a cached key is still valid is asked of the database per request unless
    `revocations` has listened since the key was last found valid (then a revocation would have
    been notified); even so the key is asked about once a minute, which marks it used."""

    def __init__(self, ttl_seconds: float, revocations: Revocations | None = None) -> None:
        self.ttl = ttl_seconds
        self.revocations = revocations
        # secret digest -> (principal, cached until, when last found valid); times monotonic.
        self._known: dict[bytes, tuple[Principal, float, float]] = {}

    def peek(self, secret: str | None) -> Principal | None:
        """Whose key this is, if verified lately: no database work, nothing decided."""
        hit = self._known.get(hash_secret(secret)) if secret and self.ttl > 0 else None
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    async def authenticate(self, conn: Queryable, secret: str | None) -> Principal:
        if self.ttl <= 0 or not secret:
            return await authenticate(conn, secret)
        if self.revocations is not None:
            self.revocations.start()
        digest = hash_secret(secret)
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and hit[1] > now:
            principal, expires, checked_at = hit
            trusted = (None if self.revocations is None or now - checked_at > TOUCH_SECONDS
                       else self.revocations.trusted(principal.key_id, checked_at))
            if trusted:
                return principal
            if trusted is None and await conn.fetchval(STILL_VALID, principal.key_id):
                self._known[digest] = (principal, expires, now)
                return principal
            del self._known[digest]
            raise Unauthorized("the API key is not valid or was revoked")
        principal = await authenticate(conn, secret)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[digest] = (principal, now + self.ttl, now)
        return principal

    def forget(self, key_id: UUID) -> None:
        for digest, (principal, _, _) in list(self._known.items()):
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
