"""Shops and their settings (thresholds with validated ranges)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from knowledge.errors import Conflict, Invalid, NotFound
from knowledge.store.db import Queryable

# As the table's CHECK has it. Matched whole (fullmatch): `$` also matches before a final
# newline, so "shop\n" passed here and the CHECK refused it, a 500.
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Shop:
    id: int
    slug: str
    name: str
    auto_approve_threshold: int
    answer_threshold: float
    options_threshold: float
    created_at: datetime
    dedup_question_similarity: float = 0.88
    dedup_answer_ratio: int = 90
    # The lowest chance that the best entry is right at which the bot still answers from it
    # (knowledge/answering/scope.py); higher falls back more. Chosen on banking77's train split.
    scope_strictness: float = 0.25
    # Days raw text (transcripts, conversation text) is kept; None keeps it.
    retention_days: int | None = None
    # Requests per second per key; None: the server's default.
    rate_limit_per_second: float | None = None


_COLUMNS = ("id, slug, name, auto_approve_threshold, answer_threshold, options_threshold, "
            "created_at, dedup_question_similarity, dedup_answer_ratio, scope_strictness, "
            "retention_days, rate_limit_per_second")

INSERT_SHOP = f"INSERT INTO shops (slug, name) VALUES ($1, $2) RETURNING {_COLUMNS}"
SELECT_SHOP_BY_ID = f"SELECT {_COLUMNS} FROM shops WHERE id = $1"
SELECT_SHOP_BY_SLUG = f"SELECT {_COLUMNS} FROM shops WHERE slug = $1"
SELECT_SHOPS = f"SELECT {_COLUMNS} FROM shops ORDER BY id LIMIT $1 OFFSET $2"
UPDATE_SHOP = f"""
UPDATE shops SET name = coalesce($2, name),
                 auto_approve_threshold = coalesce($3, auto_approve_threshold),
                 answer_threshold = coalesce($4, answer_threshold),
                 options_threshold = coalesce($5, options_threshold),
                 dedup_question_similarity = coalesce($6, dedup_question_similarity),
                 dedup_answer_ratio = coalesce($7, dedup_answer_ratio),
                 scope_strictness = coalesce($8, scope_strictness),
                 retention_days = CASE WHEN $9::boolean THEN $10 ELSE retention_days END,
                 rate_limit_per_second = CASE WHEN $11::boolean THEN $12
                                              ELSE rate_limit_per_second END
WHERE id = $1
RETURNING {_COLUMNS}
"""


def _shop(row: asyncpg.Record) -> Shop:
    values = dict(row)
    # Stored as 4-byte reals: 0.88 comes back as 0.8799999952, which would put a similarity
    # of exactly 0.88 on the wrong side of its own threshold.
    for name in ("answer_threshold", "options_threshold", "dedup_question_similarity",
                 "scope_strictness"):
        values[name] = round(float(values[name]), 6)
    return Shop(**values)


def validate_slug(slug: str) -> str:
    if not SLUG.fullmatch(slug):
        raise Invalid("a shop slug is 1-63 lowercase letters, digits or dashes, starting with a "
                      "letter or digit", field="slug", value=slug)
    return slug


async def create_shop(conn: Queryable, slug: str, name: str) -> Shop:
    validate_slug(slug)
    if not 1 <= len(name) <= 200:
        raise Invalid("a shop name is 1 to 200 characters", field="name", limit=200)
    try:
        row = await conn.fetchrow(INSERT_SHOP, slug, name)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"a shop with slug {slug!r} already exists") from exc
    assert row is not None
    return _shop(row)


async def get_shop(conn: Queryable, ref: int | str) -> Shop:
    """A shop by numeric id or slug."""
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        ref = int(ref)
    if isinstance(ref, int):
        if not 0 < ref < 2**31:
            raise NotFound(f"no shop {ref!r}")
        row = await conn.fetchrow(SELECT_SHOP_BY_ID, ref)
    else:
        row = await conn.fetchrow(SELECT_SHOP_BY_SLUG, ref)
    if row is None:
        raise NotFound(f"no shop {ref!r}")
    return _shop(row)


async def list_shops(conn: Queryable, limit: int = 100,
                     offset: int = 0) -> list[Shop]:
    return [_shop(r) for r in await conn.fetch(SELECT_SHOPS, limit, offset)]


async def update_shop(conn: Queryable, shop_id: int,
                      **changes: Any) -> Shop:
    """Change a shop's name or thresholds; every value is range-checked, none is dropped."""
    current = await get_shop(conn, shop_id)
    auto = changes.get("auto_approve_threshold")
    if auto is not None and not 0 <= auto <= 100:
        raise Invalid("auto_approve_threshold is between 0 and 100",
                      field="auto_approve_threshold", minimum=0, maximum=100)
    answer = changes.get("answer_threshold")
    options = changes.get("options_threshold")
    similarity = changes.get("dedup_question_similarity")
    ratio = changes.get("dedup_answer_ratio")
    if ratio is not None and not 0 <= ratio <= 100:
        raise Invalid("dedup_answer_ratio is between 0 and 100", field="dedup_answer_ratio",
                      minimum=0, maximum=100)
    strictness = changes.get("scope_strictness")
    for name, value in (("answer_threshold", answer), ("options_threshold", options),
                        ("dedup_question_similarity", similarity),
                        ("scope_strictness", strictness)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise Invalid(f"{name} is between 0 and 1", field=name, minimum=0, maximum=1)
    new_answer = current.answer_threshold if answer is None else answer
    new_options = current.options_threshold if options is None else options
    if new_options > new_answer:
        raise Invalid("options_threshold may not exceed answer_threshold",
                      field="options_threshold", maximum=new_answer)
    retention = changes.get("retention_days")
    if retention is not None and not 1 <= retention <= 36_500:
        raise Invalid("retention_days is between 1 and 36500 (or null to keep raw text)",
                      field="retention_days", minimum=1, maximum=36_500)
    rate = changes.get("rate_limit_per_second")
    if rate is not None and not 0.1 <= rate <= 100_000:
        raise Invalid("rate_limit_per_second is between 0.1 and 100000 (or null for the "
                      "server's default)", field="rate_limit_per_second", minimum=0.1,
                      maximum=100_000)
    row = await conn.fetchrow(UPDATE_SHOP, shop_id, changes.get("name"), auto, answer, options,
                              similarity, ratio, strictness, "retention_days" in changes,
                              retention, "rate_limit_per_second" in changes, rate)
    assert row is not None
    return _shop(row)


class ShopCache:
    """Shops by id for the answer path, re-read after a few seconds so changes show up."""

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self.ttl = ttl_seconds
        self._shops: dict[int, tuple[Shop, float]] = {}

    async def get(self, conn: Queryable, shop_id: int) -> Shop:
        now = time.monotonic()
        hit = self._shops.get(shop_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        shop = await get_shop(conn, shop_id)
        self._shops[shop_id] = (shop, now + self.ttl)
        return shop

    def forget(self, shop_id: int) -> None:
        self._shops.pop(shop_id, None)
