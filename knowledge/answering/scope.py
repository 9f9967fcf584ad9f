"""Whether a shop knows a question at all: its calibrated decision, and the declines taught by
its owner's out-of-scope examples.

A shop's decision (scope_model.py) is fitted from its own knowledge, its owner's "not ours"
marks and its rated turns, stored in `scope_calibrations`, and recomputed by the calibrate job
when any of those changed. Answering reads it, and the nearest example, through a per-process
cache. Owners' marks are written by knowledge/learning/out_of_scope.py.
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
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Queryable, Vector
from knowledge.store.locks import lock_key
from knowledge.store.shops import Shop, update_shop

log = logging.getLogger(__name__)

# A question at least this similar to an owner's out-of-scope example, and nearer to it than to
# any entry, is declined with that example's redirect.
DECLINE_MIN_SIMILARITY = 0.55
# The most question vectors (the newest) and rated turns a calibration reads: a bounded read
# and a few seconds of CPU for a shop of any size.
MAX_VECTORS = 50_000
MAX_RATED_TURNS = 2_000
MAX_PROBES = 1_000
# How long a process trusts its copy of a shop's model and example count.
CACHE_SECONDS = 10.0

SHOP_VECTORS = """
SELECT entry_id, embedding, kind <> 'chunk' AS askable FROM knowledge_vectors
WHERE shop_id = $1 AND kind IN ('question', 'variant', 'chunk')
ORDER BY id DESC LIMIT $2
"""
SHOP_EXAMPLES = """
SELECT embedding FROM out_of_scope_examples WHERE shop_id = $1 AND model = $2
"""
# Turns the bot answered that a customer then rated (helpful: it was right; unhelpful: wrong),
# with the evidence the answer was decided on.
RATED_TURNS = """
SELECT a.metrics -> 'scope' -> 'evidence' AS evidence,
       bool_or(f.feedback_type = 'thumbs_up' OR f.rating >= 4) AS helpful,
       bool_or(f.feedback_type = 'thumbs_down' OR f.rating <= 2) AS unhelpful
FROM conversation_feedback AS f
JOIN response_analytics AS a ON a.shop_id = f.shop_id AND a.conversation_id = f.conversation_id
WHERE f.shop_id = $1 AND a.response_type = 'answer' AND a.metrics ? 'scope'
GROUP BY a.id, a.metrics
ORDER BY max(f.created_at) DESC
LIMIT $2
"""
# One calibration of a shop at a time, across processes: a second waits, then finds the first's
# result current instead of fitting again (or overwriting a newer fit with an older one).
LOCK_SHOP = "SELECT pg_advisory_lock($1)"
UNLOCK_SHOP = "SELECT pg_advisory_unlock($1)"
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
# Only vectors of the loaded model compare (the reembed job brings the rest over).
NEAREST_EXAMPLE = """
SELECT id, question, redirect, 1 - (embedding <=> $2) AS similarity
FROM out_of_scope_examples WHERE shop_id = $1 AND model = $3
ORDER BY embedding <=> $2 LIMIT 1
"""
COUNT_EXAMPLES = "SELECT count(*) FROM out_of_scope_examples WHERE shop_id = $1"
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
    refitted: bool = False        # fitted by this call, not read back

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
    # evidence | identifier | rare_words | document_floor | out_of_scope_example |
    # nothing_found | nothing_near
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


def _names_a_product(lexeme: str) -> bool:
    """A product code or model number (QX-7731, a11), not a bare number ("2 to 4 days")."""
    return any(ch.isdigit() for ch in lexeme) and any(ch.isalpha() for ch in lexeme)


def decide(model: ScopeModel, strictness: float, candidates: list[Candidate],
           example: Example | None, floor: float) -> ScopeDecision:
    """In scope when the model's chance that the best entry is right reaches the shop's
    strictness, or when the best entry holds every identifier (a product code) or every rare
    word the question uses; a question nearer an owner's out-of-scope example than any entry
    is declined. A shop not yet calibrated whose best match is a document passage keeps the
    similarity floor: passages are not questions, and the prior was fitted on questions."""
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
            and any(_names_a_product(x) for x in best.lexemes_matched)):
        return made(True, "identifier")
    # Every word of the question that few of the shop's entries use is in this entry (common
    # words never count): lexical evidence by rarity, not any word in common.
    if (best.lexical_coverage >= LEXICAL_WEIGHT
            and any(any(ch.isalpha() for ch in x) for x in best.lexemes_matched)):
        return made(True, "rare_words")
    if not model.calibrated and best.entry.source == "document":
        return made((best.similarity or 0.0) >= floor, "document_floor")
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

    async def nearest_example(self, pool: asyncpg.Pool, shop_id: int, vector: Vector,
                              model: str) -> Example | None:
        now = time.monotonic()
        hit = self._examples.get(shop_id)
        if hit is None or hit[1] <= now:
            async with pool.acquire() as conn:
                hit = (int(await conn.fetchval(COUNT_EXAMPLES, shop_id)), now + self.ttl)
            self._examples[shop_id] = hit
        if hit[0] == 0:
            return None  # most shops have none: no query at all
        async with pool.acquire() as conn:
            row = await conn.fetchrow(NEAREST_EXAMPLE, shop_id, vector, model)
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
    async with rt.pool.acquire() as locked:
        await locked.fetchval(LOCK_SHOP, lock_key(f"calibrate:{shop_id}"))
        try:
            return await _calibrate(rt, locked, shop_id, force)
        finally:
            await locked.fetchval(UNLOCK_SHOP, lock_key(f"calibrate:{shop_id}"))


async def _calibrate(rt: Runtime, conn: Queryable, shop_id: int, force: bool) -> Calibration:
    stamp = str(await conn.fetchval(STAMP, shop_id))
    current = await read_calibration(conn, shop_id)
    if not force and current.stamp == stamp:
        return current
    vectors = await conn.fetch(SHOP_VECTORS, shop_id, MAX_VECTORS)
    examples = await conn.fetch(SHOP_EXAMPLES, shop_id, rt.embedder.model_name)
    rated = await conn.fetch(RATED_TURNS, shop_id, MAX_RATED_TURNS)
    ids: dict[UUID, int] = {}
    entries = np.array([ids.setdefault(r["entry_id"], len(ids)) for r in vectors],
                       dtype=np.int64)
    dims = rt.embedder.dimensions
    matrix = (np.stack([r["embedding"] for r in vectors]) if vectors
              else np.zeros((0, dims), dtype=np.float32))
    askable = np.array([bool(r["askable"]) for r in vectors], dtype=bool)
    marked = (np.stack([r["embedding"] for r in examples]) if examples
              else np.zeros((0, dims), dtype=np.float32))
    turns = []
    for r in rated:
        evidence = Evidence.from_dict(_json(r["evidence"]) if r["evidence"] else {})
        # Both helpful and unhelpful (a thumbs up and a low rating) says nothing either way.
        if evidence is not None and bool(r["helpful"]) != bool(r["unhelpful"]):
            turns.append((evidence, bool(r["helpful"])))
    # Seconds of numpy for a large shop: off the event loop.
    model = await asyncio.to_thread(fit_shop, Knowledge(matrix, entries, askable), marked,
                                    turns, MAX_PROBES)
    computed_at = await conn.fetchval(UPSERT_CALIBRATION, shop_id, model.to_json(), stamp)
    cache_of(rt).forget(shop_id)
    log.info("calibrated shop %s: %s", shop_id, model.counts)
    return Calibration(shop_id, model, stamp, computed_at, refitted=True)


async def calibrate_all(rt: Runtime) -> tuple[int, int]:
    """Refit every shop whose knowledge, examples or ratings changed: (refitted, shops). A shop
    that fails is logged and tried again next time; the others go on."""
    async with rt.pool.acquire() as conn:
        shops = [int(r["id"]) for r in await conn.fetch(SHOPS_TO_CALIBRATE)]
    refitted = 0
    for shop_id in shops:
        try:
            # calibrate compares the shop's stamp itself and refits only what changed.
            refitted += (await calibrate(rt, shop_id)).refitted
        except (asyncpg.PostgresError, ValueError, np.linalg.LinAlgError):
            log.exception("calibrating shop %s failed; it is tried again next time", shop_id)
    return refitted, len(shops)


async def set_strictness(rt: Runtime, shop: Shop, strictness: float, actor: Principal) -> Shop:
    """The owner's say in how readily the bot falls back (audited)."""
    async with rt.pool.acquire() as conn, conn.transaction():
        changed = await update_shop(conn, shop.id, scope_strictness=strictness)
        await audit.record(conn, shop_id=shop.id, actor=actor, action="shop.scope_strictness",
                           subject_type="shop", subject_id=None,
                           before={"scope_strictness": shop.scope_strictness},
                           after={"scope_strictness": changed.scope_strictness})
    return changed
