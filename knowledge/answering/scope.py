"""Out of scope: each shop's calibrated fallback decision, and its owner's out-of-scope examples.

A shop's decision (knowledge/scope_model.py) is fitted from its own knowledge, its owner's
"not ours" marks and its rated turns, stored in `scope_calibrations`, and recomputed by the
calibrate job when any of those changed. Answering reads it through a per-process cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np

from knowledge.access import Principal
from knowledge.answering.retrieval import IDENTIFIER_WEIGHT, LEXICAL_WEIGHT, Candidate
from knowledge.answering.scope_model import (
    PRIOR,
    Evidence,
    Knowledge,
    ScopeModel,
    evidence_of,
    fit_shop,
)
from knowledge.errors import Conflict, Invalid, NotFound
from knowledge.learning.queue import COLUMNS, item_from_row
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Conn, Queryable, Vector

log = logging.getLogger(__name__)

# A question at least this similar to an owner's out-of-scope example, and nearer to it than to
# any entry, is declined with that example's redirect.
DECLINE_MIN_SIMILARITY = 0.55
# The most question vectors (the newest) and rated turns a calibration reads: a bounded read
# and a few seconds of CPU for a shop of any size.
MAX_VECTORS = 50_000
MAX_RATED_TURNS = 2_000
MAX_PROBES = 1_000
MAX_REDIRECT = 2_000
# How long a process trusts its copy of a shop's model and example count.
CACHE_SECONDS = 10.0

SHOP_VECTORS = """
SELECT entry_id, embedding FROM knowledge_vectors
WHERE shop_id = $1 AND kind IN ('question', 'variant', 'chunk')
ORDER BY id DESC LIMIT $2
"""
SHOP_EXAMPLES = "SELECT embedding FROM out_of_scope_examples WHERE shop_id = $1"
# Turns the bot answered that a customer then rated: helpful ones were right, unhelpful wrong.
RATED_TURNS = """
SELECT m.embedding,
       bool_or(f.feedback_type = 'thumbs_up' OR f.rating >= 4) AS helpful,
       bool_or(f.feedback_type = 'thumbs_down' OR f.rating <= 2) AS unhelpful
FROM conversation_feedback AS f
JOIN conversation_memory AS m ON m.id = f.conversation_id
WHERE f.shop_id = $1 AND m.tier = 'answer' AND m.embedding IS NOT NULL
GROUP BY m.id, m.embedding
ORDER BY max(f.created_at) DESC
LIMIT $2
"""
# What the calibration depends on; equal stamps mean nothing to refit.
STAMP = """
SELECT concat_ws(':',
    (SELECT count(*) || '/' || coalesce(max(id), 0) FROM knowledge_vectors
     WHERE shop_id = $1 AND kind IN ('question', 'variant', 'chunk')),
    (SELECT count(*) || '/' || coalesce(max(id), 0) FROM out_of_scope_examples
     WHERE shop_id = $1),
    (SELECT count(*) FROM conversation_feedback WHERE shop_id = $1))
"""
SELECT_CALIBRATION = """
SELECT model, stamp, computed_at FROM scope_calibrations WHERE shop_id = $1
"""
UPSERT_CALIBRATION = """
INSERT INTO scope_calibrations (shop_id, model, stamp) VALUES ($1, $2, $3)
ON CONFLICT (shop_id) DO UPDATE SET model = EXCLUDED.model, stamp = EXCLUDED.stamp,
                                    computed_at = now()
RETURNING computed_at
"""
SHOPS_TO_CALIBRATE = "SELECT id FROM shops ORDER BY id"
SELECT_STAMP = "SELECT stamp FROM scope_calibrations WHERE shop_id = $1"
NEAREST_EXAMPLE = """
SELECT id, question, redirect, 1 - (embedding <=> $2) AS similarity
FROM out_of_scope_examples WHERE shop_id = $1
ORDER BY embedding <=> $2 LIMIT 1
"""
COUNT_EXAMPLES = "SELECT count(*) FROM out_of_scope_examples WHERE shop_id = $1"
INSERT_EXAMPLE = """
INSERT INTO out_of_scope_examples (shop_id, question, redirect, embedding, model, queue_item_id,
                                   created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, shop_id, question, redirect, queue_item_id, created_at
"""
LIST_EXAMPLES = """
SELECT id, shop_id, question, redirect, queue_item_id, created_at, count(*) OVER () AS total
FROM out_of_scope_examples WHERE shop_id = $1
ORDER BY id DESC LIMIT $2 OFFSET $3
"""
DELETE_EXAMPLE = """
DELETE FROM out_of_scope_examples WHERE shop_id = $1 AND id = $2
RETURNING id, question, redirect
"""
LOCK_ITEM = f"SELECT {COLUMNS} FROM learning_queue WHERE id = $1 FOR UPDATE"
# The item is dismissed (a rejected item is deduplication's negative cache, so the same
# question is not queued again) and says why.
MARK_ITEM = f"""
UPDATE learning_queue
SET status = 'rejected', reviewed_at = now(), reviewed_by = $2, review_note = $3,
    metadata = metadata || jsonb_build_object('out_of_scope', true, 'redirect', $4::text)
WHERE id = $1
RETURNING {COLUMNS}
"""


@dataclass(frozen=True, slots=True)
class Example:
    id: int
    question: str
    redirect: str | None
    similarity: float = 0.0


@dataclass(frozen=True, slots=True)
class Calibration:
    shop_id: int
    model: ScopeModel
    stamp: str
    computed_at: Any

    def as_dict(self, strictness: float) -> dict[str, Any]:
        return {"shop_id": self.shop_id, "strictness": strictness,
                "calibrated": self.model.calibrated, "computed_at": self.computed_at,
                "stamp": self.stamp, "model": self.model.to_json()}


@dataclass(frozen=True, slots=True)
class ScopeDecision:
    """Whether to answer from the shop's knowledge, and which evidence decided it."""

    in_scope: bool
    declined: Example | None
    p_right: float
    threshold: float
    # evidence | identifier | rare_words | out_of_scope_example | nothing_found
    decided_by: str
    calibrated: bool
    evidence: Evidence
    contributions: dict[str, float]

    def explain(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "in_scope": self.in_scope, "p_right": round(self.p_right, 4),
            "threshold": round(self.threshold, 4), "decided_by": self.decided_by,
            "calibrated": self.calibrated, "evidence": self.evidence.as_dict(),
            "contributions": self.contributions}
        if self.declined is not None:
            out["out_of_scope_example"] = {"id": self.declined.id,
                                           "question": self.declined.question,
                                           "similarity": round(self.declined.similarity, 4)}
        return out


def decide(model: ScopeModel, strictness: float, candidates: list[Candidate],
           example: Example | None) -> ScopeDecision:
    """In scope when the model's chance that the best entry is right reaches the shop's
    strictness, or when the best entry holds every identifier (a product code) or every rare
    word the question uses; a question nearer an owner's out-of-scope example than any entry
    is declined."""
    ev = evidence_of([c.fit for c in candidates],
                     [c.similarity or 0.0 for c in candidates])
    p = model.p_right(ev) if candidates else 0.0

    def made(in_scope: bool, decided_by: str, declined: Example | None = None) -> ScopeDecision:
        return ScopeDecision(in_scope, declined, p, strictness, decided_by, model.calibrated,
                             ev, model.contributions(ev))

    if (example is not None and example.similarity >= DECLINE_MIN_SIMILARITY
            and example.similarity >= ev.similarity):
        return made(False, "out_of_scope_example", example)
    if not candidates:
        return made(False, "nothing_found")
    best = candidates[0]
    if p >= strictness:
        return made(True, "evidence")
    if (best.lexical_coverage >= IDENTIFIER_WEIGHT
            and any(any(ch.isdigit() for ch in x) for x in best.lexemes_matched)):
        return made(True, "identifier")
    # Every word of the question that few of the shop's entries use is in this entry (common
    # words never count): lexical evidence by rarity, not any word in common.
    if best.lexical_coverage >= LEXICAL_WEIGHT:
        return made(True, "rare_words")
    return made(False, "evidence")


class ScopeCache:
    """Each shop's model and whether it has out-of-scope examples, re-read every few seconds."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._models: dict[int, tuple[ScopeModel, float]] = {}
        self._examples: dict[int, tuple[int, float]] = {}

    async def model(self, pool: asyncpg.Pool, shop_id: int) -> ScopeModel:
        now = time.monotonic()
        hit = self._models.get(shop_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        async with pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_CALIBRATION, shop_id)
        model = PRIOR if row is None else ScopeModel.from_json(_json(row["model"]))
        self._models[shop_id] = (model, now + self.ttl)
        return model

    async def nearest_example(self, pool: asyncpg.Pool, shop_id: int,
                              vector: Vector) -> Example | None:
        now = time.monotonic()
        hit = self._examples.get(shop_id)
        if hit is None or hit[1] <= now:
            async with pool.acquire() as conn:
                hit = (int(await conn.fetchval(COUNT_EXAMPLES, shop_id)), now + self.ttl)
            self._examples[shop_id] = hit
        if hit[0] == 0:
            return None  # most shops have none: no query at all
        async with pool.acquire() as conn:
            row = await conn.fetchrow(NEAREST_EXAMPLE, shop_id, vector)
        return None if row is None else Example(row["id"], row["question"], row["redirect"],
                                                float(row["similarity"]))

    def forget(self, shop_id: int) -> None:
        self._models.pop(shop_id, None)
        self._examples.pop(shop_id, None)


def cache_of(rt: Runtime) -> ScopeCache:
    return rt.helper("scope_cache", ScopeCache, ScopeCache)


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


async def read_calibration(conn: Queryable, shop_id: int) -> Calibration:
    row = await conn.fetchrow(SELECT_CALIBRATION, shop_id)
    if row is None:
        return Calibration(shop_id, PRIOR, "", None)
    return Calibration(shop_id, ScopeModel.from_json(_json(row["model"])), row["stamp"],
                       row["computed_at"])


async def calibrate(rt: Runtime, shop_id: int, force: bool = False) -> Calibration:
    """Fit the shop's decision from its knowledge, examples and rated turns (unless nothing
    changed since the last fit), store it, and use it in this process at once."""
    async with rt.pool.acquire() as conn:
        stamp = str(await conn.fetchval(STAMP, shop_id))
        current = await read_calibration(conn, shop_id)
        if not force and current.stamp == stamp:
            return current
        vectors = await conn.fetch(SHOP_VECTORS, shop_id, MAX_VECTORS)
        examples = await conn.fetch(SHOP_EXAMPLES, shop_id)
        rated = await conn.fetch(RATED_TURNS, shop_id, MAX_RATED_TURNS)
    ids: dict[UUID, int] = {}
    entries = np.array([ids.setdefault(r["entry_id"], len(ids)) for r in vectors],
                       dtype=np.int64)
    matrix = (np.stack([r["embedding"] for r in vectors]) if vectors
              else np.zeros((0, rt.embedder.dimensions), dtype=np.float32))
    marked = (np.stack([r["embedding"] for r in examples]) if examples
              else np.zeros((0, rt.embedder.dimensions), dtype=np.float32))
    turns = [(r["embedding"], bool(r["helpful"])) for r in rated
             if bool(r["helpful"]) != bool(r["unhelpful"])]
    # Seconds of numpy for a large shop: off the event loop.
    model = await asyncio.to_thread(fit_shop, Knowledge(matrix, entries), marked, turns,
                                    MAX_PROBES)
    async with rt.pool.acquire() as conn:
        computed_at = await conn.fetchval(UPSERT_CALIBRATION, shop_id, model.to_json(), stamp)
    cache_of(rt).forget(shop_id)
    log.info("calibrated shop %s: %s", shop_id, model.counts)
    return Calibration(shop_id, model, stamp, computed_at)


async def calibrate_all(rt: Runtime) -> tuple[int, int]:
    """Refit every shop whose knowledge, examples or ratings changed: (refitted, shops)."""
    async with rt.pool.acquire() as conn:
        shops = [int(r["id"]) for r in await conn.fetch(SHOPS_TO_CALIBRATE)]
    refitted = 0
    for shop_id in shops:
        async with rt.pool.acquire() as conn:
            stamp = str(await conn.fetchval(STAMP, shop_id))
            known = await conn.fetchval(SELECT_STAMP, shop_id)
        if stamp != known:
            await calibrate(rt, shop_id, force=True)
            refitted += 1
    return refitted, len(shops)


def _clean_redirect(rt: Runtime, redirect: str | None) -> str | None:
    if redirect is None or not redirect.strip():
        return None
    if len(redirect) > MAX_REDIRECT or "\x00" in redirect:
        raise Invalid(f"a redirect is at most {MAX_REDIRECT} characters of text",
                      field="redirect", limit=MAX_REDIRECT)
    return rt.redactor.redact(redirect.strip()).text


async def add_example(rt: Runtime, conn: Conn, shop_id: int, question: str,
                      redirect: str | None, actor: Principal,
                      queue_item_id: UUID | None = None) -> dict[str, Any]:
    """Record a question the shop does not answer (redacted), with an optional redirect."""
    text = question.strip()
    if not text or len(text) > rt.settings.max_question_chars or "\x00" in text:
        raise Invalid(f"the question is 1 to {rt.settings.max_question_chars} characters of "
                      "text", field="question", limit=rt.settings.max_question_chars)
    clean = rt.redactor.redact(text).text
    vector = await rt.embedder.embed(clean)
    row = await conn.fetchrow(INSERT_EXAMPLE, shop_id, clean, _clean_redirect(rt, redirect),
                              vector, rt.embedder.model_name, queue_item_id, actor.key_id)
    assert row is not None
    example = _example_json(row)
    await audit.record(conn, shop_id=shop_id, actor=actor, action="scope.mark_out_of_scope",
                       subject_type="out_of_scope", subject_id=queue_item_id,
                       after={k: v for k, v in example.items() if k != "created_at"})
    cache_of(rt).forget(shop_id)
    return example


def _example_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "shop_id": row["shop_id"], "question": row["question"],
            "redirect": row["redirect"],
            "queue_item_id": None if row["queue_item_id"] is None else str(row["queue_item_id"]),
            "created_at": row["created_at"].isoformat()}


async def mark_item(rt: Runtime, shop_id: int | None, item_id: UUID, actor: Principal,
                    redirect: str | None, note: str | None) -> tuple[Any, dict[str, Any]]:
    """The owner says a pending item (a gap, an answer to improve) is not the shop's business:
    the item is dismissed and its question becomes an out-of-scope example."""
    if note is not None and len(note) > 1_000:
        raise Invalid("a note is at most 1000 characters", field="note", limit=1_000)
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(LOCK_ITEM, item_id)
        if row is None or (shop_id is not None and row["shop_id"] != shop_id):
            raise NotFound(f"no queue item {item_id}")
        item = item_from_row(row)
        if item.status not in {"pending", "approved"}:
            raise Conflict(f"queue item {item_id} is {item.status}; only pending or approved "
                           "items can be marked out of scope",
                           item_status=item.status)
        if not item.question:
            raise Invalid("this item has no question to mark", field="item_id")
        clean = _clean_redirect(rt, redirect)
        marked = item_from_row(await conn.fetchrow(
            MARK_ITEM, item_id, actor.key_id, (note or "out of scope").strip(), clean))
        await audit.record(conn, shop_id=item.shop_id, actor=actor,
                           action="queue.out_of_scope", subject_type="queue",
                           subject_id=item_id, before=item.summary(),
                           after={**marked.summary(), "redirect": clean})
        example = await add_example(rt, conn, item.shop_id, item.question, clean, actor,
                                    queue_item_id=item_id)
    return marked, example


async def list_examples(conn: Queryable, shop_id: int, limit: int,
                        offset: int) -> tuple[list[dict[str, Any]], int]:
    rows = await conn.fetch(LIST_EXAMPLES, shop_id, limit, offset)
    total = int(rows[0]["total"]) if rows else int(await conn.fetchval(COUNT_EXAMPLES, shop_id))
    return [_example_json(r) for r in rows], total


async def delete_example(rt: Runtime, shop_id: int, example_id: int,
                         actor: Principal) -> None:
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(DELETE_EXAMPLE, shop_id, example_id)
        if row is None:
            raise NotFound(f"no out-of-scope example {example_id}")
        await audit.record(conn, shop_id=shop_id, actor=actor,
                           action="scope.delete_example", subject_type="out_of_scope",
                           subject_id=None, before={"id": row["id"], "question": row["question"],
                                                    "redirect": row["redirect"]})
    cache_of(rt).forget(shop_id)
