"""Hybrid retrieval: exact-or-HNSW vector search within a shop plus full-text search, fused."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from uuid import UUID

import asyncpg
import numpy as np
from numpy.typing import NDArray

from knowledge.answering.whitening import WhiteningCache, discriminative_similarities
from knowledge.runtime import Runtime
from knowledge.store.db import Queryable, Vector
from knowledge.store.entries import COLUMN_NAMES, Entry, entry_from_row

# Cosine similarity below FLOOR is no evidence at all; at FULL the match is certain.
SIMILARITY_FLOOR = 0.30
SIMILARITY_FULL = 0.80
# The share of an entry's similarity that comes from all its questions together (the rest is
# its single nearest question); chosen on banking77's train split, not its test set.
PROFILE_WEIGHT = 0.5
# How entries are ordered when the shop's within-entry spread is known (whitening.py):
# best question, mean of questions, and mean of questions where entries differ. Only the order
# changes: confidence stays on the plain similarities, whose scale the tiers were set on. Chosen
# on banking77's train split (0.835 -> 0.843 hit@1 there), not its test set.
RANK_WEIGHTS = (0.4, 0.2, 0.4)
# What a full match of the question's rare words is worth on its own, and what matching every
# identifier in it (a product code, a model number) is worth.
LEXICAL_WEIGHT = 0.6
IDENTIFIER_WEIGHT = 0.8
_IDENTIFIER_FACTOR = 3.0


def _is_identifier(lexeme: str) -> bool:
    return any(ch.isdigit() for ch in lexeme)


def _weight(lexeme: str) -> float:
    return _IDENTIFIER_FACTOR if _is_identifier(lexeme) else 1.0

# Vectors fetched before grouping by entry: several variants of one entry may all be near.
_VECTORS_PER_CANDIDATE = 3

# The exact path: OFFSET 0 fences the subquery so the planner cannot order by the HNSW index and
# filter by shop afterwards (which returns too few rows for a small shop). For a shop below
# `exact_search_max_vectors` this scans the shop's rows through idx_kv_shop and sorts them.
_EXACT_NEAREST = """
nearest AS (
    SELECT entry_id, distance FROM (
        SELECT entry_id, embedding <=> $2 AS distance
        FROM knowledge_vectors WHERE shop_id = $1
        OFFSET 0
    ) AS shop_vectors
    ORDER BY distance LIMIT {limit}
)"""

# The index path for large shops: HNSW with iterative scans (set on every pooled connection)
# keeps walking the graph until enough of this shop's rows have been found.
_HNSW_NEAREST = """
nearest AS (
    SELECT entry_id, embedding <=> $2 AS distance
    FROM knowledge_vectors WHERE shop_id = $1
    ORDER BY embedding <=> $2 LIMIT {limit}
)"""

# Lexemes that most entries contain (PostgreSQL's own tsvector statistics) are left out of the
# full-text query, so "how do I order" does not OR-match half the shop; rare words such as
# product codes are what full-text search is here for.
# The same OR-query as q.query, written as one expression of the parameters, so the planner
# folds it into a constant (custom plans see the parameters) and estimates its rows from the
# lexeme statistics. Matched against q.query, which it cannot see into, the planner guessed many
# rows and intersected the text index with the shop's whole key: 12 ms of a 13 ms search for a
# shop of 300,000 entries whose rare words the text index alone finds in a handful of rows
# (benchmarks/million.py). Lexemes hold no spaces, so "' '" only ever separates two of them.
_FOLDED_QUERY = ("nullif(replace(strip(ts_delete(to_tsvector('english', $3), $4::text[]))::text,"
                 " ''' ''', ''' | '''), '')::tsquery")

_HYBRID_TEMPLATE = """
WITH q AS (
    SELECT array_agg(lexeme) AS lexemes,
           string_agg(quote_literal(lexeme), ' | ')::tsquery AS query
    FROM unnest(to_tsvector('english', $3)) AS t(lexeme, positions, weights)
    WHERE NOT (lexeme = ANY($4::text[]))
),
{nearest},
vec AS (
    SELECT entry_id, min(distance) AS distance, count(*) AS hits
    FROM nearest GROUP BY entry_id ORDER BY min(distance) LIMIT $6
),
fts AS (
    SELECT kb.entry_id, ts_rank(kb.search_tsv, q.query) AS score
    FROM knowledge_base_rag AS kb, q
    WHERE kb.shop_id = $1 AND kb.valid_to IS NULL AND kb.search_tsv @@ {folded_query}
    ORDER BY score DESC LIMIT $6
),
candidates AS (
    SELECT coalesce(vec.entry_id, fts.entry_id) AS entry_id,
           vec.distance, vec.hits, fts.score
    FROM vec FULL JOIN fts ON vec.entry_id = fts.entry_id
)
SELECT c.distance, c.hits, c.score AS lexical_score, profile.similarity AS profile_similarity,
       profile.profile,
       CASE WHEN c.score IS NULL THEN '{{}}'::text[] ELSE ARRAY(
           SELECT l FROM unnest(tsvector_to_array(kb.search_tsv)) AS l
           WHERE l = ANY(q.lexemes)) END AS lexemes_matched,
       coalesce(q.lexemes, '{{}}'::text[]) AS lexemes_asked,
       {entry_columns}
FROM candidates AS c
JOIN knowledge_base_rag AS kb
  ON kb.shop_id = $1 AND kb.entry_id = c.entry_id AND kb.valid_to IS NULL
CROSS JOIN q
LEFT JOIN LATERAL (
    SELECT 1 - (avg(kv.embedding) <=> $2) AS similarity, avg(kv.embedding) AS profile
    FROM knowledge_vectors AS kv
    WHERE kv.shop_id = $1 AND kv.knowledge_id = kb.id AND kv.kind IN ('question', 'variant')
) AS profile ON true
"""

_KB_COLUMNS = ", ".join(f"kb.{name}" for name in COLUMN_NAMES)
HYBRID_EXACT = _HYBRID_TEMPLATE.format(nearest=_EXACT_NEAREST.format(limit="$5"),
                                       entry_columns=_KB_COLUMNS, folded_query=_FOLDED_QUERY)
HYBRID_HNSW = _HYBRID_TEMPLATE.format(nearest=_HNSW_NEAREST.format(limit="$5"),
                                      entry_columns=_KB_COLUMNS, folded_query=_FOLDED_QUERY)

# The few live entries nearest a vector, by their best question vector, with the texts
# deduplication compares (one round trip).
_NEAREST_ENTRIES = """
WITH {nearest},
best AS (
    SELECT entry_id, min(distance) AS distance FROM nearest
    GROUP BY entry_id ORDER BY 2 LIMIT $4
)
SELECT best.entry_id, best.distance, kb.question, kb.variants, kb.answer
FROM best
JOIN knowledge_base_rag AS kb
  ON kb.shop_id = $1 AND kb.entry_id = best.entry_id AND kb.valid_to IS NULL
ORDER BY best.distance
"""
NEAREST_ENTRIES_EXACT = _NEAREST_ENTRIES.format(nearest=_EXACT_NEAREST.format(limit="$3"))
NEAREST_ENTRIES_HNSW = _NEAREST_ENTRIES.format(nearest=_HNSW_NEAREST.format(limit="$3"))

# For this transaction only: the pool's connections keep the usual breadth.
WIDER_SEARCH = "SELECT set_config('hnsw.ef_search', $1, true)"
# Every vector of a shop, for checking retrieval against brute force.
EXACT_VECTORS_OF_SHOP = "SELECT entry_id, embedding FROM knowledge_vectors WHERE shop_id = $1"
COUNT_SHOP_VECTORS = """
SELECT count(*) AS shop,
       greatest((SELECT reltuples FROM pg_class WHERE oid = 'knowledge_vectors'::regclass),
                count(*))::bigint AS total
FROM knowledge_vectors WHERE shop_id = $1
"""
COMMON_LEXEMES = """
SELECT coalesce(array_agg(e.lexeme), '{}'::text[])
FROM pg_stats AS s,
     unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, freq)
WHERE s.schemaname = current_schema() AND s.tablename = 'knowledge_base_rag'
  AND s.attname = 'search_tsv' AND e.lexeme IS NOT NULL AND e.freq > $1
"""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An entry found for a question, with the evidence for it."""

    entry: Entry
    similarity: float | None      # best cosine similarity of any of its vectors
    # Cosine similarity to the mean of its question vectors: how well the question fits the
    # entry as a whole, not one lucky phrasing of it.
    profile_similarity: float | None
    # The same, in the shop's whitened space: None while the shop's within-entry spread is
    # unknown (too few entries with several questions).
    discriminative_similarity: float | None
    vector_rank: int | None       # 1-based rank among vector candidates
    vector_hits: int              # how many of its vectors were among the nearest
    lexical_score: float | None
    lexical_rank: int | None
    lexemes_matched: tuple[str, ...]
    lexemes_asked: tuple[str, ...]
    score: float                  # the fused (reciprocal rank) score
    # Puts the whitened blend on the plain scale for this question (see `ordered`).
    rank_offset: float = 0.0

    @property
    def lexical_coverage(self) -> float:
        """How much of the question's rare-word content this entry contains, in [0, 1].

        Identifiers (product codes, model numbers) name the thing asked about, so they weigh
        more than words, and matching all of them is strong evidence on its own.
        """
        if not self.lexemes_asked or self.lexical_score is None:
            return 0.0
        matched = set(self.lexemes_matched)
        asked = sum(_weight(x) for x in self.lexemes_asked)
        found = sum(_weight(x) for x in self.lexemes_asked if x in matched)
        coverage = LEXICAL_WEIGHT * found / asked
        identifiers = [x for x in self.lexemes_asked if _is_identifier(x)]
        if identifiers and all(x in matched for x in identifiers):
            coverage = max(coverage, IDENTIFIER_WEIGHT)
        return coverage

    @property
    def fit(self) -> float:
        """The similarity an entry is ranked by: its best question and its questions taken
        together count equally, so every known phrasing of an entry is evidence for it and one
        stray phrasing of another entry does not outrank them."""
        if self.similarity is None or self.profile_similarity is None:
            # Found by its words alone, or an entry without question vectors (a chunk).
            return self.similarity or self.profile_similarity or 0.0
        return PROFILE_WEIGHT * self.profile_similarity + (1 - PROFILE_WEIGHT) * self.similarity

    @property
    def blend(self) -> float | None:
        """Best question, mean of questions and whitened mean (RANK_WEIGHTS), when all three
        are known."""
        if (self.discriminative_similarity is None or self.similarity is None
                or self.profile_similarity is None):
            return None
        best, profile, discriminative = RANK_WEIGHTS
        return (best * self.similarity + profile * self.profile_similarity
                + discriminative * self.discriminative_similarity)

    @property
    def rank_fit(self) -> float:
        """What entries are ordered by: fit, with the shop's whitened view of its questions
        taking part when it is known."""
        blend = self.blend
        return self.fit if blend is None else blend + self.rank_offset

    @property
    def semantic(self) -> float:
        """Fit rescaled so SIMILARITY_FLOOR is no evidence and SIMILARITY_FULL is full."""
        return _rescaled(self.fit)

    @property
    def evidence(self) -> float:
        """Meaning and rare words as independent evidence that this entry is the one, in [0, 1]."""
        return _combined(self.semantic, self.lexical_coverage)

    @property
    def rank_evidence(self) -> float:
        """Evidence as the order of entries sees it (rank_fit in place of fit)."""
        return _combined(_rescaled(self.rank_fit), self.lexical_coverage)


def _rescaled(similarity: float) -> float:
    return min(1.0, max(0.0, (similarity - SIMILARITY_FLOOR)
                        / (SIMILARITY_FULL - SIMILARITY_FLOOR)))


def _combined(semantic: float, lexical: float) -> float:
    return 1.0 - (1.0 - semantic) * (1.0 - lexical)


@dataclass(frozen=True, slots=True)
class SearchResult:
    candidates: list[Candidate]
    path: str                     # "exact" or "hnsw"
    sql_ms: float


class RetrievalCache:
    """Per-process facts that change slowly: shop sizes, the common-lexeme list and each
    shop's whitening."""

    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float = 30.0) -> None:
        self.ttl = ttl_seconds
        self.whitening = WhiteningCache(pool)
        self._sizes: dict[tuple[object, ...], tuple[tuple[int, int], float]] = {}
        self._common: tuple[list[str], float] | None = None

    async def shop_vectors(self, conn: Queryable, shop_id: int) -> tuple[int, int]:
        """(vectors of this shop, vectors of all shops), the latter estimated."""
        return await self.counted(conn, ("vectors", shop_id), COUNT_SHOP_VECTORS, shop_id)

    async def counted(self, conn: Queryable, key: tuple[object, ...], sql: str,
                      *args: object) -> tuple[int, int]:
        """(rows of a shop, rows of all shops) from `sql`, which returns `shop` and `total`;
        cached for the TTL under `key`, whose second element is the shop."""
        now = time.monotonic()
        hit = self._sizes.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        row = await conn.fetchrow(sql, *args)
        assert row is not None
        sizes = (int(row["shop"]), int(row["total"]))
        self._sizes[key] = (sizes, now + self.ttl)
        return sizes

    def grew(self, key: tuple[object, ...], by: int = 1) -> None:
        """This process added rows under `key`: counted at once, not after the TTL. A count
        that lags a fast-growing queue keeps choosing the exact scan meant for a small one."""
        hit = self._sizes.get(key)
        if hit is not None:
            (shop, total), expires = hit
            self._sizes[key] = ((shop + by, total + by), expires)

    async def common_lexemes(self, conn: Queryable,
                             frequency: float) -> list[str]:
        now = time.monotonic()
        if self._common is not None and self._common[1] > now:
            return self._common[0]
        lexemes = list(await conn.fetchval(COMMON_LEXEMES, frequency))
        self._common = (lexemes, now + self.ttl * 10)
        return lexemes

    def forget(self, shop_id: int | None = None) -> None:
        self.whitening.stale(shop_id)
        if shop_id is None:
            self._sizes.clear()
            self._common = None
        else:
            for key in [k for k in self._sizes if k[1] == shop_id]:
                del self._sizes[key]

    async def aclose(self) -> None:
        await self.whitening.aclose()


def cache_of(rt: Runtime) -> RetrievalCache:
    return rt.helper("retrieval_cache", RetrievalCache, lambda: RetrievalCache(rt.pool))


def fuse(rows: list[asyncpg.Record], rrf_k: int,
         discriminative: dict[UUID, float] | None = None) -> list[Candidate]:
    """Fuse the vector and full-text rankings, best first.

    Reciprocal rank fusion scores every candidate from both lists. The final order is by
    evidence, then similarity, with the fused score breaking ties: rank fusion alone puts an
    entry that shares one ordinary word with the question ("arrive") and is ranked second by
    meaning above the entry that is clearly first by meaning, because it appears in both lists.
    """
    by_vector = sorted((r for r in rows if r["distance"] is not None),
                       key=lambda r: r["distance"])
    by_text = sorted((r for r in rows if r["lexical_score"] is not None),
                     key=lambda r: -r["lexical_score"])
    vector_rank = {r["entry_id"]: i + 1 for i, r in enumerate(by_vector)}
    text_rank = {r["entry_id"]: i + 1 for i, r in enumerate(by_text)}
    discriminative = discriminative or {}
    out = []
    for row in rows:
        entry_id: UUID = row["entry_id"]
        vr, tr = vector_rank.get(entry_id), text_rank.get(entry_id)
        score = (1 / (rrf_k + vr) if vr else 0.0) + (1 / (rrf_k + tr) if tr else 0.0)
        distance = row["distance"]
        out.append(Candidate(
            entry=entry_from_row(row), similarity=None if distance is None else 1.0 - distance,
            profile_similarity=row["profile_similarity"],
            discriminative_similarity=discriminative.get(entry_id),
            vector_rank=vr, vector_hits=int(row["hits"] or 0),
            lexical_score=row["lexical_score"], lexical_rank=tr,
            lexemes_matched=tuple(row["lexemes_matched"]),
            lexemes_asked=tuple(row["lexemes_asked"]),
            score=score))
    return ordered(out)


def ordered(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates best first.

    Whitened similarities run lower than plain ones, so the blend is moved, for this question,
    onto the plain scale: the candidate with the highest plain fit among those that have a
    blend keeps its plain fit, and the others keep their distance to it. The whitened view
    thus reorders those candidates among themselves without lifting or sinking them as a group
    against candidates that have no blend (a document chunk, an entry found by its words).
    """
    blended = [c for c in candidates if c.blend is not None]
    if blended:
        anchor = max(blended, key=lambda c: c.fit)
        offset = anchor.fit - (anchor.blend or 0.0)
        candidates = [replace(c, rank_offset=offset) if c.blend is not None else c
                      for c in candidates]
    # Evidence saturates at a similarity of SIMILARITY_FULL; among entries past it, the nearer
    # one is still the likelier.
    return sorted(candidates, key=lambda c: (-round(c.rank_evidence, 6), -c.rank_fit, -c.score))


def whitened(matrix: NDArray[np.float32] | None, vector: Vector,
             rows: list[asyncpg.Record]) -> dict[UUID, float]:
    """Each candidate's similarity to the question in the shop's whitened space."""
    profiled = [r for r in rows if r["profile"] is not None]
    if matrix is None or not profiled:
        return {}
    similarities = discriminative_similarities(
        matrix, vector, np.stack([r["profile"] for r in profiled]))
    return {r["entry_id"]: float(x) for r, x in zip(profiled, similarities, strict=True)}


def choose_path(shop_vectors: int, all_vectors: int, exact_max: int,
                min_fraction: float) -> str:
    """Exact search for a small shop; the HNSW index for a large shop that is a large part of
    the table. An iterative scan visits about (candidates / shop fraction) index tuples, so
    for a shop that is a sliver of the table the graph walk would stop before it found enough
    of the shop's rows: such a shop is searched exactly too."""
    if shop_vectors <= exact_max:
        return "exact"
    if all_vectors and shop_vectors / all_vectors < min_fraction:
        return "exact"
    return "hnsw"


@dataclass(frozen=True, slots=True)
class NearEntry:
    entry_id: UUID
    similarity: float             # of its nearest question vector
    question: str | None
    variants: list[str]
    answer: str


async def nearest_entries(rt: Runtime, conn: Queryable, shop_id: int, vector: Vector,
                          k: int) -> list[NearEntry]:
    """The k nearest live entries with their texts, nearest first, searched as answering
    searches: exactly for small shops, through HNSW for large ones."""
    s = rt.settings
    size, total = await cache_of(rt).shop_vectors(conn, shop_id)
    path = choose_path(size, total, s.exact_search_max_vectors, s.hnsw_min_shop_fraction)
    sql = NEAREST_ENTRIES_EXACT if path == "exact" else NEAREST_ENTRIES_HNSW
    rows = await conn.fetch(sql, shop_id, vector, k * _VECTORS_PER_CANDIDATE, k)
    return [NearEntry(r["entry_id"], 1.0 - float(r["distance"]), r["question"],
                      list(r["variants"] or []), r["answer"]) for r in rows]


async def search(rt: Runtime, shop_id: int, question: str, vector: Vector,
                 limit: int = 10) -> SearchResult:
    """The shop's best entries for a question, best first."""
    s = rt.settings
    cache = cache_of(rt)
    candidates = max(s.search_candidates, limit)
    async with rt.pool.acquire() as conn:
        size, total = await cache.shop_vectors(conn, shop_id)
        common = await cache.common_lexemes(conn, s.fts_common_lexeme_frequency)
        path = choose_path(size, total, s.exact_search_max_vectors, s.hnsw_min_shop_fraction)
        sql = HYBRID_EXACT if path == "exact" else HYBRID_HNSW
        args = (shop_id, vector, question, common, candidates * _VECTORS_PER_CANDIDATE,
                candidates)
        started = time.perf_counter()
        if path == "hnsw" and total > s.hnsw_large_table_vectors:
            async with conn.transaction():
                await conn.execute(WIDER_SEARCH, str(s.hnsw_ef_search_large))
                rows = await conn.fetch(sql, *args)
        else:
            rows = await conn.fetch(sql, *args)
        sql_ms = (time.perf_counter() - started) * 1000
    matrix = cache.whitening.matrix(shop_id)
    return SearchResult(fuse(rows, s.rrf_k, whitened(matrix, vector, rows))[:limit], path,
                        sql_ms)
