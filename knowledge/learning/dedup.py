"""When two learning items say the same thing: same question (meaning, wording and the
identifiers they name), same answer; and the queue's compare endpoint built on it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz

from knowledge.errors import Invalid
from knowledge.model.embedding import normalize_text
from knowledge.runtime import Runtime
from knowledge.store.shops import Shop

# Below this cosine similarity two questions are never the same, whatever their wording.
FUZZY_FLOOR = 0.75


_IDENTIFIER = re.compile(r"[a-z0-9]+(?:[-./][a-z0-9]+)*")


# Deduplication asks this of the same few texts again and again (a draft against each of its
# neighbours, question and answer): a pure function of the text, so the last few are remembered
# (an answer may be 20,000 characters, so not many).
_IDENTIFIERS_REMEMBERED = 256


def identifiers(text: str | None) -> frozenset[str]:
    """Tokens with a digit in them: product codes, model and order numbers, prices."""
    return _identifiers(text) if text else frozenset()


@lru_cache(maxsize=_IDENTIFIERS_REMEMBERED)
def _identifiers(text: str) -> frozenset[str]:
    return frozenset(t for t in _IDENTIFIER.findall(text.lower())
                     if any(c.isdigit() for c in t))


def same_answer(a: str | None, b: str | None, ratio: int) -> bool:
    """Two answers say the same: word order and small typos aside, all of the same words.
    Not token-set: that scores a short answer contained in a longer one as equal, and two
    answers that share a long opening ("Here is what you need to know about ...") as near."""
    if not a or not b or identifiers(a) != identifiers(b):
        return False
    return fuzz.token_sort_ratio(normalize_text(a), normalize_text(b)) >= ratio


def same_text(a: str | None, b: str | None, ratio: int) -> bool:
    """rapidfuzz on normalized text: word order and small typos do not make two texts differ,
    another product code or price does."""
    if not a or not b or identifiers(a) != identifiers(b):
        return False
    return fuzz.token_set_ratio(normalize_text(a), normalize_text(b)) >= ratio


def same_question(similarity: float, a: str | None, b: str | None, shop: Shop) -> bool:
    """The same question: close in meaning (or in meaning and wording), about the same things:
    "does A11 fit G1?" and "does A22 fit G2?" are two questions however alike they read."""
    if identifiers(a) != identifiers(b):
        return False
    if similarity >= shop.dedup_question_similarity:
        return True
    return similarity >= FUZZY_FLOOR and same_text(a, b, shop.dedup_answer_ratio)


MAX_COMPARED_PAIRS = 256


@dataclass(frozen=True, slots=True)
class Comparison:
    """Why two questions are (or are not) one question to the queue's deduplication."""

    similarity: float             # cosine similarity of their embeddings
    text_ratio: float             # rapidfuzz token-set ratio of the normalized texts, 0-100
    same_identifiers: bool        # they name the same product codes, numbers, prices
    duplicate: bool               # merged under the shop's thresholds
    # The largest question-similarity threshold under which they would still merge (None:
    # under none, their identifiers differ): what a threshold sweep needs.
    duplicate_up_to: float | None


def compare(shop: Shop, a: str, b: str, similarity: float) -> Comparison:
    same_ids = identifiers(a) == identifiers(b)
    ratio = float(fuzz.token_set_ratio(normalize_text(a), normalize_text(b)))
    if not same_ids:
        up_to = None
    elif similarity >= FUZZY_FLOOR and ratio >= shop.dedup_answer_ratio:
        up_to = 1.0  # the same words: merged whatever the similarity threshold
    else:
        up_to = similarity
    # Not rounded: a sweep at the shop's own threshold must reproduce the decision exactly.
    return Comparison(similarity, ratio, same_ids, same_question(similarity, a, b, shop), up_to)


async def compare_questions(rt: Runtime, shop: Shop,
                            pairs: list[tuple[str, str]]) -> list[Comparison]:
    """The queue's same-question decision for each pair, with the evidence behind it."""
    if len(pairs) > MAX_COMPARED_PAIRS:
        raise Invalid(f"at most {MAX_COMPARED_PAIRS} pairs at a time", field="pairs",
                      limit=MAX_COMPARED_PAIRS)
    limit = rt.settings.max_question_chars
    for a, b in pairs:
        if not a.strip() or not b.strip():
            raise Invalid("every pair holds two non-empty questions", field="pairs")
        if max(len(a), len(b)) > limit:
            raise Invalid(f"a question is longer than {limit} characters", field="pairs",
                          limit=limit)
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    vectors = dict(zip(texts, await rt.embedder.embed_many(texts), strict=True))
    return [compare(shop, a, b, float(vectors[a] @ vectors[b])) for a, b in pairs]
