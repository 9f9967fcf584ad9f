"""What tells a shop's entries apart: the spread of each entry's own phrasings, whitened away.

The several known questions of one entry differ from each other in ways that say nothing about
which entry a customer means (word order, politeness, "my card" against "the card"). Measured on
the shop's own knowledge, that within-entry spread is a covariance; comparing a question with
an entry after dividing it out (a whitening, as in linear discriminant analysis) weighs the
directions in which entries differ over the ones in which phrasings of one entry vary. Nothing is
trained: the matrix is computed from the live questions and follows the knowledge as it changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
from numpy.typing import NDArray

from knowledge.store.db import Queryable, Vector

log = logging.getLogger(__name__)

# Shrinkage toward the identity, as a share of the mean within-entry variance: a few phrasings
# per entry estimate the spread roughly, and a direction seen once must not be erased. Chosen on
# banking77's train split (0.05 to 0.5 within 0.002 of each other), not its test set.
SHRINKAGE = 0.1
# Below this many phrasings that have a sibling, the spread is not measured well enough to use.
MIN_PHRASINGS = 40
# The most phrasings read to measure the spread (the most recent entries first): enough to
# estimate a 384 x 384 covariance, and a bounded read for a shop of any size.
MAX_PHRASINGS = 20_000
# How long a shop's matrix is used before the knowledge is checked for changes; a changed
# shop's matrix is recomputed in the background while the old one keeps serving.
TTL_SECONDS = 10.0
# Shops whose matrix is kept in memory (about 0.6 MB each).
CACHED_SHOPS = 64

# Only entries with two or more questions say anything about within-entry spread: first which
# (the most recent first), then their vectors. Not one join: right after a bulk load, before
# the table is analyzed, the planner took the shop for a row or two and re-ran the grouping for
# every vector (4.4 s at 3,000 entries, past the command timeout at 10,000).
SPREAD_ENTRIES = """
SELECT entry_id FROM knowledge_vectors
WHERE shop_id = $1 AND kind IN ('question', 'variant')
GROUP BY entry_id HAVING count(*) >= 2
ORDER BY max(id) DESC
LIMIT $2
"""
SPREAD_VECTORS = """
SELECT entry_id, embedding FROM knowledge_vectors
WHERE shop_id = $1 AND kind IN ('question', 'variant') AND entry_id = ANY($2::uuid[])
"""
# Changes to a shop's questions: vectors are only ever added (with a new id) or deleted.
QUESTIONS_STAMP = """
SELECT count(*) AS n, coalesce(max(id), 0) AS newest FROM knowledge_vectors
WHERE shop_id = $1 AND kind IN ('question', 'variant')
"""


def whitening_matrix(groups: Sequence[NDArray[np.float32]],
                     shrinkage: float = SHRINKAGE,
                     min_phrasings: int = MIN_PHRASINGS) -> NDArray[np.float32] | None:
    """The symmetric matrix that divides out the within-group covariance of `groups` (each the
    vectors of one entry's questions), or None when there is too little to measure it."""
    deviations = [g - g.mean(axis=0) for g in groups if len(g) >= 2]
    count = sum(len(d) for d in deviations)
    if count < min_phrasings:
        return None
    d = np.concatenate(deviations).astype(np.float64)
    scatter = d.T @ d / count
    ridge = shrinkage * float(np.trace(scatter)) / scatter.shape[0]
    if ridge <= 0.0:
        return None  # every phrasing identical: nothing to divide out
    values, vectors = np.linalg.eigh(scatter + ridge * np.eye(scatter.shape[0]))
    matrix: NDArray[np.float32] = ((vectors * values ** -0.5) @ vectors.T).astype(np.float32)
    return matrix


def discriminative_similarities(matrix: NDArray[np.float32], question: Vector,
                                profiles: NDArray[np.float32]) -> NDArray[np.float32]:
    """Cosine similarity of the question to each profile (an entry's mean question vector),
    both whitened by `matrix`."""
    q = matrix @ question
    p = profiles @ matrix  # the matrix is symmetric
    q_norm = float(np.linalg.norm(q))
    p_norm = np.linalg.norm(p, axis=1)
    if q_norm == 0.0:
        return np.zeros(len(profiles), dtype=np.float32)
    return ((p @ q) / (q_norm * np.where(p_norm > 0, p_norm, 1.0))).astype(np.float32)


async def compute(conn: Queryable, shop_id: int) -> NDArray[np.float32] | None:
    # Each entry has two phrasings or more, so no more entries than phrasings are needed.
    entries = [r["entry_id"] for r in await conn.fetch(SPREAD_ENTRIES, shop_id, MAX_PHRASINGS)]
    by_entry: dict[object, list[Vector]] = {e: [] for e in entries}
    for row in await conn.fetch(SPREAD_VECTORS, shop_id, entries):
        by_entry[row["entry_id"]].append(row["embedding"])
    kept, read = {}, 0
    for entry, vectors in by_entry.items():   # the most recent entries first
        if read >= MAX_PHRASINGS:
            break
        kept[entry] = vectors[:MAX_PHRASINGS - read]
        read += len(kept[entry])
    by_entry = kept
    groups = [np.stack(vs) for vs in by_entry.values() if len(vs) >= 2]
    # The eigen-decomposition takes tens of milliseconds: off the event loop.
    return await asyncio.to_thread(whitening_matrix, groups)


@dataclass(slots=True)
class _Cached:
    matrix: NDArray[np.float32] | None
    stamp: tuple[int, int]
    checked: float


class WhiteningCache:
    """Each shop's matrix, computed in the background on first use and again when the shop's
    questions change, so answering never waits for one: until a shop's first matrix is ready
    it is ranked without (as a shop whose spread cannot be measured is)."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = TTL_SECONDS,
                 shops: int = CACHED_SHOPS) -> None:
        self.pool = pool
        self.ttl = ttl
        self.shops = shops
        self._cached: OrderedDict[int, _Cached] = OrderedDict()
        self._refreshing: dict[int, asyncio.Task[None]] = {}
        # Bumped by `stale`: a recomputation that began before a change must not count as
        # having seen it.
        self._generation: dict[int, int] = {}

    def matrix(self, shop_id: int) -> NDArray[np.float32] | None:
        now = time.monotonic()
        hit = self._cached.get(shop_id)
        if hit is not None:
            self._cached.move_to_end(shop_id)
            if now - hit.checked <= self.ttl:
                return hit.matrix
            hit.checked = now
        if shop_id not in self._refreshing:
            task = asyncio.create_task(
                self._refresh(shop_id, hit.stamp if hit else None,
                              self._generation.get(shop_id, 0)))
            self._refreshing[shop_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(shop_id, None))
        return hit.matrix if hit else None

    async def ready(self, shop_id: int) -> NDArray[np.float32] | None:
        """The shop's matrix once any recomputation under way has finished."""
        task = self._refreshing.get(shop_id)
        if task is not None:
            await asyncio.shield(task)
        hit = self._cached.get(shop_id)
        return hit.matrix if hit else None

    async def _stamp(self, conn: Queryable, shop_id: int) -> tuple[int, int]:
        row = await conn.fetchrow(QUESTIONS_STAMP, shop_id)
        assert row is not None
        return int(row["n"]), int(row["newest"])

    async def _refresh(self, shop_id: int, known: tuple[int, int] | None,
                       generation: int) -> None:
        try:
            async with self.pool.acquire() as conn:
                stamp = await self._stamp(conn, shop_id)
                if stamp == known:
                    return
                matrix = await compute(conn, shop_id)
            changed_meanwhile = self._generation.get(shop_id, 0) != generation
            self._store(shop_id, _Cached(
                matrix, stamp, float("-inf") if changed_meanwhile else time.monotonic()))
        except Exception:  # a failed refresh keeps the old matrix; the next check tries again
            log.exception("recomputing the whitening of shop %s failed", shop_id)

    def _store(self, shop_id: int, value: _Cached) -> None:
        self._cached[shop_id] = value
        self._cached.move_to_end(shop_id)
        while len(self._cached) > self.shops:
            self._cached.popitem(last=False)

    def stale(self, shop_id: int | None = None) -> None:
        """The shop's knowledge changed here: check it on next use (the old matrix serves until
        the new one is ready)."""
        for key, value in self._cached.items():
            if shop_id is None or key == shop_id:
                value.checked = float("-inf")
        for key in list(self._refreshing) if shop_id is None else [shop_id]:
            self._generation[key] = self._generation.get(key, 0) + 1

    async def aclose(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)
