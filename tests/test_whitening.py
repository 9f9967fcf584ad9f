"""A shop's whitened view of its questions: the matrix itself, and retrieval using it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from knowledge.answering import whitening
from knowledge.answering.retrieval import Candidate, cache_of, ordered
from knowledge.answering.whitening import (
    MIN_PHRASINGS,
    SHRINKAGE,
    discriminative_similarities,
    whitening_matrix,
)
from knowledge.runtime import Runtime
from knowledge.store.entries import Entry
from tests.conftest import ShopKeys, make_shop

DIM = 8


def _unit(*pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


def _groups_varying_along(axis: int, entries: int = 10, per_entry: int = 5) -> list[np.ndarray]:
    """Entries whose phrasings differ from each other only along one axis."""
    rng = np.random.default_rng(7)
    groups = []
    for e in range(entries):
        centre = np.zeros(DIM, dtype=np.float32)
        centre[2 + e % (DIM - 2)] = 1.0
        spread = rng.normal(0.0, 0.3, per_entry).astype(np.float32)
        g = np.repeat(centre[None, :], per_entry, axis=0)
        g[:, axis] += spread
        groups.append(g)
    return groups


def test_the_matrix_divides_out_the_spread_of_an_entrys_phrasings() -> None:
    groups = _groups_varying_along(0)
    matrix = whitening_matrix(groups, min_phrasings=10)
    assert matrix is not None
    assert np.allclose(matrix, matrix.T, atol=1e-6)
    # Whitening: W (S + ridge I) W = I for the within-entry scatter S.
    d = np.concatenate([g - g.mean(axis=0) for g in groups]).astype(np.float64)
    scatter = d.T @ d / len(d)
    ridge = SHRINKAGE * np.trace(scatter) / DIM
    assert np.allclose(matrix @ (scatter + ridge * np.eye(DIM)) @ matrix, np.eye(DIM), atol=1e-4)

    # Two entries equally near the question by plain cosine: one differs from it along the axis
    # in which phrasings of one entry vary (noise), the other along an axis entries differ in.
    question = _unit((2, 1.0))
    along_noise = _unit((2, 1.0), (0, 0.6))
    along_meaning = _unit((2, 1.0), (1, 0.6))
    assert np.isclose(question @ along_noise, question @ along_meaning)
    noise, meaning = discriminative_similarities(
        matrix, question, np.stack([along_noise, along_meaning]))
    # The noise axis is all but ignored; the axis entries differ in counts as before.
    assert noise > 0.99
    assert np.isclose(meaning, question @ along_meaning, atol=1e-4)


def test_no_matrix_without_enough_phrasings_that_have_siblings() -> None:
    few = _groups_varying_along(0, entries=2, per_entry=3)
    assert whitening_matrix(few, min_phrasings=10) is None
    singletons = [np.ones((1, DIM), dtype=np.float32)] * 50
    assert whitening_matrix(singletons, min_phrasings=10) is None
    identical = [np.ones((5, DIM), dtype=np.float32)] * 10
    assert whitening_matrix(identical, min_phrasings=10) is None


TOPICS = {
    "Your parcel arrives in 2 to 4 working days.": [
        "How long does delivery take?", "When will my parcel arrive?",
        "How many days until my order gets here?", "What is the delivery time?",
        "How fast do you ship?"],
    "You can return any item within 30 days, for free.": [
        "Can I return an item?", "How do I send something back?",
        "What is your return policy?", "Can I get a refund for a product I don't want?",
        "Is it possible to return my order?"],
    "We accept Visa, Mastercard and PayPal.": [
        "Which payment methods do you accept?", "Can I pay with PayPal?",
        "Do you take credit cards?", "How can I pay for my order?",
        "Is Mastercard accepted?"],
    "Our shop is open from 9 to 18, Monday to Saturday.": [
        "What are your opening hours?", "When are you open?", "Are you open on Saturday?",
        "What time do you close?", "When does the shop open in the morning?"],
    "Every grinder has a two-year warranty.": [
        "Is there a warranty on grinders?", "How long is the guarantee?",
        "What if my grinder breaks after a year?", "Do your machines come with a warranty?",
        "Is the warranty two years?"],
    "Delivery is free for orders over 50 euros.": [
        "Is shipping free?", "How much does delivery cost?", "Do I pay for shipping?",
        "When is delivery free?", "What are the shipping costs?"],
    "You can change your order within an hour of placing it.": [
        "Can I change my order?", "How do I edit an order I placed?",
        "Can I add an item to my order?", "Is it too late to modify my order?",
        "I want to change the address on my order"],
    "Gift cards are valid for two years.": [
        "How long is a gift card valid?", "Do gift cards expire?",
        "Can I still use an old gift card?", "What is the validity of a voucher?",
        "When does my gift card run out?"],
    "We ship to every country in the European Union.": [
        "Do you ship abroad?", "Can you deliver to Germany?",
        "Which countries do you ship to?", "Do you deliver outside the Netherlands?",
        "Is international shipping available?"],
}


async def _search(client: httpx.AsyncClient, shop: ShopKeys, q: str) -> list[dict[str, object]]:
    r = await client.get("/v1/search", headers=shop.bot, params={"q": q})
    assert r.status_code == 200, r.text
    sources: list[dict[str, object]] = r.json()["results"]
    return sources


async def test_retrieval_uses_the_shops_own_spread_once_it_is_measured(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    shop = await make_shop(runtime, "whitened")
    entries = [{"question": qs[0], "variants": qs[1:], "answer": answer}
               for answer, qs in TOPICS.items()]
    assert sum(len(qs) for qs in TOPICS.values()) >= MIN_PHRASINGS
    r = await client.post("/v1/knowledge", headers=shop.owner, json=entries)
    assert r.status_code == 201, r.text
    asked = "my package still hasn't come, how long does it take?"
    # The first search is answered at once, without the matrix, and starts computing it.
    first = await _search(client, shop, asked)
    assert all(s["discriminative_similarity"] is None for s in first)
    assert await cache_of(runtime).whitening.ready(shop.shop_id) is not None
    sources = await _search(client, shop, asked)
    assert sources[0]["answer"] == "Your parcel arrives in 2 to 4 working days."
    assert all(isinstance(s["discriminative_similarity"], float) for s in sources)

    # One question per entry says nothing about how phrasings of an entry vary.
    plain = await make_shop(runtime, "unwhitened")
    r = await client.post("/v1/knowledge", headers=plain.owner,
                          json=[{"question": qs[0], "answer": a} for a, qs in TOPICS.items()])
    assert r.status_code == 201, r.text
    sources = await _search(client, plain, "How long does delivery take?")
    assert sources and all(s["discriminative_similarity"] is None for s in sources)
    assert all(isinstance(s["profile_similarity"], float) for s in sources)


async def test_a_knowledge_change_refreshes_the_matrix_in_the_background(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    shop = await make_shop(runtime, "refreshed")
    items = list(TOPICS.items())
    first = [{"question": qs[0], "variants": qs[1:], "answer": a} for a, qs in items[:-1]]
    r = await client.post("/v1/knowledge", headers=shop.owner, json=first)
    assert r.status_code == 201, r.text
    await _search(client, shop, "When will my parcel arrive?")
    whitening = cache_of(runtime).whitening
    before = await whitening.ready(shop.shop_id)
    assert before is not None

    answer, qs = items[-1]
    r = await client.post("/v1/knowledge", headers=shop.owner,
                          json=[{"question": qs[0], "variants": qs[1:], "answer": answer}])
    assert r.status_code == 201, r.text
    # The next search is served at once (with the old matrix) and starts the recomputation.
    assert whitening.matrix(shop.shop_id) is before
    await _search(client, shop, "When will my parcel arrive?")
    after = await whitening.ready(shop.shop_id)
    assert after is not None and not np.allclose(after, before)


def _candidate(name: str, best: float, profile: float | None,
               whitened: float | None) -> Candidate:
    now = datetime.now(UTC)
    entry = Entry(id=uuid.uuid4(), entry_id=uuid.uuid4(), version=1, shop_id=1, category=None,
                  question=name, variants=[], answer=name, source="manual", document_id=None,
                  chunk_index=None, metadata={}, created_by=None, change_reason=None,
                  created_at=now, valid_from=now, valid_to=None, supersedes=None,
                  superseded_by=None)
    return Candidate(entry=entry, similarity=best, profile_similarity=profile,
                     discriminative_similarity=whitened, vector_rank=1, vector_hits=1,
                     lexical_score=None, lexical_rank=None, lexemes_matched=(),
                     lexemes_asked=(), score=0.0)


def test_the_whitened_view_reorders_entries_but_not_against_those_without_it() -> None:
    # Plainly A leads B; where the shop's entries differ, B is much nearer: B comes first.
    a = _candidate("a", best=0.70, profile=0.62, whitened=0.40)
    b = _candidate("b", best=0.66, profile=0.60, whitened=0.60)
    assert [c.entry.question for c in ordered([a, b])] == ["b", "a"]
    assert a.fit > b.fit
    # A chunk (no questions, so no whitened view) between them by plain similarity keeps its
    # place against the leader by plain fit: the blend is not lowered as a group.
    chunk = _candidate("chunk", best=0.655, profile=None, whitened=None)
    assert [c.entry.question for c in ordered([a, chunk, b])] == ["b", "a", "chunk"]
    # Without whitened similarities the plain order stands.
    plain = [_candidate("a", 0.70, 0.62, None), _candidate("b", 0.66, 0.60, None)]
    assert [c.entry.question for c in ordered(plain)] == ["a", "b"]


async def test_the_spread_is_read_from_the_newest_entries_with_siblings_only(
        client: httpx.AsyncClient, runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries with one phrasing are left out, and a shop past MAX_PHRASINGS gives its most
    recent entries' phrasings up to that many."""
    shop = await make_shop(runtime, "spread-read")
    for entry in ({"question": "Oldest A?", "variants": ["Oldest A again?", "Oldest A once more?"],
                   "answer": "a"},
                  {"question": "Lonely B?", "answer": "b"},
                  {"question": "Newest C?", "variants": ["Newest C again?"], "answer": "c"}):
        r = await client.post("/v1/knowledge", headers=shop.owner, json=[entry])
        assert r.status_code == 201, r.text
    seen: list[list[np.ndarray]] = []

    def capture(groups: list[np.ndarray]) -> None:
        seen.append(groups)

    monkeypatch.setattr(whitening, "whitening_matrix", capture)
    monkeypatch.setattr(whitening, "MAX_PHRASINGS", 4)
    async with runtime.pool.acquire() as conn:
        await whitening.compute(conn, shop.shop_id)
    texts = ["Newest C?", "Newest C again?"]
    vectors = dict(zip(texts, await runtime.embedder.embed_many(texts), strict=True))
    (groups,) = seen
    assert [len(g) for g in groups] == [2, 2]   # C whole, then two of A's three; not B
    newest = {tuple(np.round(v, 5)) for v in groups[0]}
    assert newest == {tuple(np.round(vectors[q], 5)) for q in ("Newest C?", "Newest C again?")}
