"""The audit trail: every change to the knowledge base or the queue, with who made it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from knowledge.access import Principal
from knowledge.store.db import Queryable

INSERT_AUDIT = """
INSERT INTO learning_audit_log (shop_id, actor, actor_key_id, action, subject_type, subject_id,
                                before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
INSERT_AUDIT_MANY = """
INSERT INTO learning_audit_log (shop_id, actor, actor_key_id, action, subject_type, subject_id,
                                before, after)
SELECT $1, $2, $3, $4, $5, t.subject_id, t.before, t.after
FROM unnest($6::uuid[], $7::jsonb[], $8::jsonb[]) AS t(subject_id, before, after)
"""
# What happens in no shop (an admin key signing in): a trail of its own, so a shop's trail
# holds only rows of that shop (its shop_id is a key, migration 0023).
INSERT_ADMIN_AUDIT = """
INSERT INTO admin_audit_log (actor, actor_key_id, action, subject_type, subject_id, before,
                             after)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
SELECT_AUDIT = """
SELECT id, shop_id, actor, action, subject_type, subject_id, before, after, created_at
FROM learning_audit_log
WHERE shop_id = $1 AND ($2::uuid IS NULL OR subject_id = $2)
  AND ($5::text IS NULL OR action = $5)
ORDER BY id DESC
LIMIT $3 OFFSET $4
"""
# The kinds of change a shop's trail holds, for filtering it.
SELECT_ACTIONS = """
SELECT DISTINCT action FROM learning_audit_log WHERE shop_id = $1 ORDER BY action
"""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    shop_id: int
    actor: str
    action: str
    subject_type: str
    subject_id: UUID | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: datetime


async def record(conn: Queryable, *, shop_id: int,
                 actor: Principal, action: str, subject_type: str, subject_id: UUID | None,
                 before: dict[str, Any] | None = None,
                 after: dict[str, Any] | None = None) -> None:
    await conn.execute(INSERT_AUDIT, shop_id, actor.actor, actor.key_id, action, subject_type,
                       subject_id, before, after)


async def record_many(conn: Queryable, *, shop_id: int, actor: Principal, action: str,
                      subject_type: str,
                      changes: Sequence[tuple[UUID | None, dict[str, Any] | None,
                                              dict[str, Any] | None]]) -> None:
    """One audit row per (subject, before, after), in one statement."""
    if not changes:
        return
    subjects, befores, afters = (list(c) for c in zip(*changes, strict=True))
    await conn.execute(INSERT_AUDIT_MANY, shop_id, actor.actor, actor.key_id, action,
                       subject_type, subjects, befores, afters)


async def record_admin(conn: Queryable, *, actor: Principal, action: str, subject_type: str,
                       subject_id: UUID | None, before: dict[str, Any] | None = None,
                       after: dict[str, Any] | None = None) -> None:
    """An admin's event that belongs to no shop."""
    await conn.execute(INSERT_ADMIN_AUDIT, actor.actor, actor.key_id, action, subject_type,
                       subject_id, before, after)


async def list_records(conn: Queryable, shop_id: int,
                       subject_id: UUID | None = None, limit: int = 100,
                       offset: int = 0, *, action: str | None = None) -> list[AuditRecord]:
    rows = await conn.fetch(SELECT_AUDIT, shop_id, subject_id, limit, offset, action)
    return [AuditRecord(**dict(r)) for r in rows]


async def actions_of(conn: Queryable, shop_id: int) -> list[str]:
    return [r["action"] for r in await conn.fetch(SELECT_ACTIONS, shop_id)]
