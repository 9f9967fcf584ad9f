"""Sign-in sessions of the review pages: an owner or admin key exchanged for a cookie."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from knowledge.access import Principal, Role
from knowledge.errors import Forbidden, Unauthorized
from knowledge.store import audit, keys
from knowledge.store.db import Queryable

INSERT_SESSION = """
INSERT INTO web_sessions (token_hash, key_id, csrf_token, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
RETURNING expires_at
"""
# last_seen_at is touched at most once a minute, so a busy page does not rewrite its row on
# every request; the idle limit is checked against it.
LOOKUP_SESSION = """
WITH s AS (
    SELECT s.token_hash, s.key_id, s.shop_id AS picked_shop, s.csrf_token, s.expires_at,
           s.last_seen_at, k.role, k.shop_id, k.name
    FROM web_sessions AS s JOIN api_keys AS k ON k.id = s.key_id
    WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL
      AND s.last_seen_at > now() - make_interval(secs => $2)
), touched AS (
    UPDATE web_sessions SET last_seen_at = now() FROM s
    WHERE web_sessions.token_hash = s.token_hash
      AND s.last_seen_at < now() - interval '1 minute'
)
SELECT key_id, picked_shop, csrf_token, expires_at, role, shop_id, name FROM s
"""
DELETE_SESSION = "DELETE FROM web_sessions WHERE token_hash = $1"
DELETE_EXPIRED = "DELETE FROM web_sessions WHERE expires_at <= now()"
PICK_SHOP = "UPDATE web_sessions SET shop_id = $2 WHERE token_hash = $1"


@dataclass(frozen=True, slots=True)
class WebSession:
    principal: Principal
    # The shop the pages act on: an owner's own, the one an admin picked, or None (all shops).
    shop_id: int | None
    csrf_token: str
    expires_at: datetime

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf_token.encode(),
                                                  (sent or "").encode())


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    session: WebSession


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def sign_in(conn: Queryable, secret: str | None, hours: float) -> NewSession:
    """Exchange an owner or admin key for a session; the token is in the result only."""
    principal = await keys.authenticate(conn, (secret or "").strip() or None)
    if principal.role is Role.BOT:
        raise Forbidden("a bot key cannot sign in to the review pages; use an owner or "
                        "admin key")
    assert principal.key_id is not None
    await conn.execute(DELETE_EXPIRED)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = await conn.fetchval(INSERT_SESSION, _hash(token), principal.key_id, csrf,
                                  hours * 3600)
    if principal.shop_id is None:  # an admin, who signs in to no shop
        await audit.record_admin(conn, actor=principal, action="sign_in",
                                 subject_type="session", subject_id=None)
    else:
        await audit.record(conn, shop_id=principal.shop_id, actor=principal, action="sign_in",
                           subject_type="session", subject_id=None)
    return NewSession(token, WebSession(principal, principal.shop_id, csrf, expires))


async def lookup(conn: Queryable, token: str | None, idle_minutes: float) -> WebSession:
    if not token or len(token) > 200:
        raise Unauthorized("sign in to use the review pages")
    row = await conn.fetchrow(LOOKUP_SESSION, _hash(token), idle_minutes * 60)
    if row is None:
        raise Unauthorized("the session has ended; sign in again")
    principal = Principal(key_id=row["key_id"], role=Role(row["role"]),
                          shop_id=row["shop_id"], name=row["name"])
    shop_id = row["shop_id"] if principal.role is not Role.ADMIN else row["picked_shop"]
    return WebSession(principal, shop_id, row["csrf_token"], row["expires_at"])


async def pick_shop(conn: Queryable, token: str, shop_id: int | None) -> None:
    """An admin's choice of shop (None: all shops), kept for the rest of the session."""
    await conn.execute(PICK_SHOP, _hash(token), shop_id)


async def sign_out(conn: Queryable, token: str | None) -> None:
    if token:
        await conn.execute(DELETE_SESSION, _hash(token))
