"""Benchmark of the review pages: the time of every /admin page with 10,000 queue items and
10,000 knowledge entries in the shop (target: each page's p95 <= 100 ms).

Loads one shop with --entries knowledge entries (a few with variants, one with a history of
three versions) beside a small shop, --turns answered turns (a few hundred asked in this process
through the bot's own path, which also opens gaps, then copied over the last 90 days with their
analytics, ~8% with feedback), --items learning-queue items (a few hundred submitted through the
queue's own deduplication, the rest written in bulk: mostly pending, answers, gaps and answers
to improve from feedback, corrections, transcripts with excerpts, suggestions, gaps and
handovers, most beside their real nearest entry) and --audit audit records; refreshes the
metrics views, then serves learnkb in its own process (`--no-jobs`), signs in with an owner key
as a browser does and times each page one request at a time over loopback (p50 / p95 / max of
the wall time, an upper bound on the server's time), with the server's and PostgreSQL's CPU
per request beside it.

    .venv/bin/python -m benchmarks.pages [--entries 10000] [--items 10000] [--requests 30]
    .venv/bin/python -m benchmarks.pages --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import numpy as np

from benchmarks.common import (
    PRODUCTS,
    TOPICS,
    benchmark_parser,
    data_dir,
    machine,
    percentile,
    publish,
    questions,
    served,
)
from benchmarks.intake_throughput import cpu_since, snapshot
from evaluation.instance import free_port
from knowledge.access import CLI_ADMIN, Principal, Role
from knowledge.answering.answer import Question, answer_question
from knowledge.answering.turn_log import turn_log_of
from knowledge.errors import NotFound
from knowledge.learning.metrics import refresh_views
from knowledge.learning.queue import PRIORITY_CONFIDENCE, ItemDraft, submit
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops
from knowledge.store.db import ArrayItem
from knowledge.store.entries import EntryDraft, add_entries, supersede_entry

SHOP, SMALL_SHOP = "pages-bench", "pages-bench-small"
TARGET_MS = 100.0
WARM_UP = 3
BATCH = 1_000
# Turns asked through the bot's own path (the rest are copies of them) and queue items
# submitted through the queue's deduplication (the rest are written in bulk).
ASKED_TURNS = 300
SUBMITTED_ITEMS = 300
CSRF_INPUT = re.compile(r'name="_csrf" value="([^"]+)"')
ITEM_LINK = re.compile(r'href="/admin/queue/([0-9a-f-]{36})"')

CATEGORIES = ["shipping", "returns", "warranty", "product care", "payment", "orders", None]
ANSWER_SENTENCES = [
    "The {p} {n} comes with a {w}-year warranty that covers manufacturing faults.",
    "Delivery of the {p} {n} takes {d} working days within the EU; express delivery is "
    "offered at checkout.",
    "You can return the {p} within 30 days if it is unused and in its original packaging.",
    "For {t}, the manual that ships with the {p} has the details, and a PDF copy is on the "
    "product page.",
    "Spare parts for the {p} {n} are listed under Service on our website.",
    "The {p} {n} is available in black, white and brushed steel.",
    "Shipping the {p} costs {s} EUR and is free on orders above 50 EUR.",
    "Write to support with your order number if anything about {t} is unclear.",
    "Regarding {t}: the {p} {n} was updated in {y}, so older manuals may differ.",
]
ADDED_SENTENCES = ["Orders placed before noon ship the same day.",
                   "This changed in March: ask support for the old terms.",
                   "Customers in Switzerland pay customs on delivery.",
                   "The offer ends at the end of the month."]
OFF_TOPIC = ["gift cards", "student discounts", "loyalty points", "store pickup",
             "corporate invoices", "engraving", "trade-in", "price matching", "rental",
             "installation at home", "same-day delivery", "a newsletter discount"]
OFF_TOPIC_FORMS = ["Do you offer {x}?", "Can I get {x} with my order?",
                   "Is {x} possible for the {p}?", "how does {x} work at your shop",
                   "I'd like to ask about {x} for a {p}"]
REPHRASINGS = ["{q}", "hi, {l}", "{q} Thanks!", "quick question - {l}",
               "{q} I couldn't find it on your site.", "hello! {l}", "{q} asking for a friend"]
REJECT_REASONS = ["wrong: we don't sell that model", "duplicate of an existing entry",
                  "not something the bot should answer", "outdated price",
                  "customer was joking"]
# Kind -> (source, weight) and status weights of the bulk-written items: mostly pending.
Weights = list[tuple[str, float]]
SOURCES_OF: dict[str, Weights] = {
    "answer": [("correction", 4), ("transcript", 4), ("manual", 2)],
    "gap": [("gap", 6), ("transcript", 1.5), ("feedback", 1.5), ("handover", 1)],
    "improve": [("feedback", 1)]}
KIND_WEIGHTS: Weights = [("answer", 55), ("gap", 35), ("improve", 10)]
STATUS_WEIGHTS: Weights = [("pending", 72), ("approved", 4), ("rejected", 8), ("applied", 11),
                           ("merged", 5)]
AUDIT_ACTIONS: Weights = [
    ("queue.new", 30), ("queue.merged", 22), ("queue.auto_approve", 6), ("queue.approve", 8),
    ("queue.edit_approve", 3), ("queue.reject", 6), ("queue.apply", 8),
    ("knowledge.create_from_learning", 8), ("knowledge.supersede", 2), ("queue.dropped", 3),
    ("transcript.ingest", 3), ("queue.out_of_scope", 1)]


def pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def knowledge_pairs(count: int, seed: int) -> list[tuple[str, str, str | None]]:
    """(question, answer of 2-4 sentences, category) for a shop's entries."""
    rng = random.Random(seed + 1000)
    out = []
    for q in questions(count, seed):
        values = {"p": rng.choice(PRODUCTS), "t": rng.choice(TOPICS),
                  "n": rng.randint(100, 99_999), "w": rng.randint(1, 5),
                  "d": rng.randint(1, 9), "s": rng.choice(["4.90", "6.50", "9.90"]),
                  "y": rng.randint(2018, 2025)}
        answer = " ".join(s.format(**values)
                          for s in rng.sample(ANSWER_SENTENCES, rng.randint(2, 4)))
        out.append((q, answer, rng.choice(CATEGORIES)))
    return out


def rephrase(rng: random.Random, question: str) -> str:
    return rng.choice(REPHRASINGS).format(q=question, l=question[0].lower() + question[1:])


def off_topic(rng: random.Random) -> str:
    return rng.choice(OFF_TOPIC_FORMS).format(x=rng.choice(OFF_TOPIC), p=rng.choice(PRODUCTS))


async def load_knowledge(rt: Runtime, slug: str, count: int, seed: int) -> int:
    """A shop's entries through add_entries (as answer_latency.load_shop, with answers of
    realistic length, categories, and a variant on one entry in ten)."""
    shop = await shops.create_shop(rt.pool, slug, slug)
    pairs = knowledge_pairs(count, seed)
    rng = random.Random(seed)
    for start in range(0, count, BATCH):
        await add_entries(rt, shop.id, [
            EntryDraft(answer=a, question=q, category=c,
                       variants=[rephrase(rng, q)] if rng.random() < 0.1 else [])
            for q, a, c in pairs[start:start + BATCH]], CLI_ADMIN)
    return shop.id


async def give_history(rt: Runtime, shop_id: int) -> uuid.UUID:
    """One entry edited twice: the entry page then shows three versions."""
    row = await rt.pool.fetchrow(
        "SELECT entry_id, answer FROM knowledge_base_rag WHERE shop_id = $1 "
        "AND valid_to IS NULL ORDER BY created_at, id OFFSET 42 LIMIT 1", shop_id)
    assert row is not None
    answer = row["answer"]
    for step, extra in enumerate(("Orders placed before noon ship the same day.",
                                  "Gift wrapping is available for 3 EUR.")):
        answer = f"{answer} {extra}"
        await supersede_entry(rt, shop_id, row["entry_id"], CLI_ADMIN, answer=answer,
                              reason=f"benchmark edit {step + 1}")
    return uuid.UUID(str(row["entry_id"]))


# Copies of the turns asked in this process, spread over the last 90 days, with their analytics
# rows, as turn_log.LOG_TURNS writes them.
COPY_TURNS = """
WITH source AS (
    SELECT m.id AS source_id, m.conversation_id, m.user_id, m.channel, m.question, m.answer,
           m.tier, m.confidence, m.sources, m.embedding, m.metadata, a.response_time_ms,
           a.ab_test_variant, a.metrics
    FROM conversation_memory AS m JOIN response_analytics AS a ON a.conversation_id = m.id
    WHERE m.shop_id = $1 AND m.created_at > now() - interval '1 day'
),
copies AS MATERIALIZED (
    SELECT gen_random_uuid() AS id, s.*, g,
           now() - random() * interval '90 days' AS at,
           greatest(1, (s.response_time_ms * (0.6 + random())))::integer AS ms
    FROM source AS s CROSS JOIN generate_series(1, $2) AS g
    LIMIT $3
),
turn AS (
    INSERT INTO conversation_memory (id, shop_id, conversation_id, user_id, channel, question,
                                     answer, tier, confidence, sources, embedding, metadata,
                                     created_at)
    SELECT id, $1, conversation_id || '-c' || g, user_id, channel, question, answer, tier,
           confidence, sources, embedding, metadata, at
    FROM copies
    RETURNING id
)
INSERT INTO response_analytics (shop_id, conversation_id, response_text, response_type,
                                response_time_ms, ab_test_variant, metrics, created_at)
SELECT $1, c.id, c.answer, c.tier, c.ms, c.ab_test_variant, c.metrics, c.at
FROM copies AS c JOIN turn USING (id)
"""
# Feedback on ~8% of the turns: thumbs, now and then a star rating.
ADD_FEEDBACK = """
INSERT INTO conversation_feedback (shop_id, conversation_id, feedback_type, rating, reason,
                                   metadata, created_at)
SELECT shop_id, id,
       CASE WHEN r < 0.85 THEN 'thumbs_up' ELSE 'star_rating' END,
       CASE WHEN r >= 0.85 THEN 1 + (r * 1000)::integer % 5 END,
       CASE WHEN r < 0.2 THEN 'the answer did not help' END,
       jsonb_build_object('sentiment', CASE WHEN r < 0.3 THEN 'negative' ELSE 'positive' END),
       created_at + interval '1 minute'
FROM (SELECT id, shop_id, created_at, random() AS r FROM conversation_memory
      WHERE shop_id = $1 AND random() < 0.08) AS t
"""


async def make_turns(rt: Runtime, shop: shops.Shop, count: int, known: list[str]) -> int:
    """Turns asked through the bot's path (a quarter off topic: the fallbacks open gaps), then
    copied to `count`."""
    have = await rt.pool.fetchval(
        "SELECT count(*) FROM conversation_memory WHERE shop_id = $1", shop.id)
    if have >= count:
        return 0
    rng = random.Random(21)
    asked = min(ASKED_TURNS, count) if have == 0 else 0
    conversation = ""
    for i in range(asked):
        if i == 0 or rng.random() < 0.4:
            conversation = f"bench-{uuid.uuid4().hex[:12]}"
        text = off_topic(rng) if rng.random() < 0.25 else rephrase(rng, rng.choice(known))
        await answer_question(rt, shop, Question(
            text=text, conversation_id=conversation, user_id=f"user-{rng.randint(1, 400)}",
            ab_variant=rng.choice("AB")))
    await turn_log_of(rt).flush()
    sources = await rt.pool.fetchval(
        "SELECT count(*) FROM conversation_memory WHERE shop_id = $1 "
        "AND created_at > now() - interval '1 day'", shop.id)
    need = count - have - asked
    if need > 0 and sources:
        await rt.pool.execute(COPY_TURNS, shop.id, -(-need // sources), need)
    await rt.pool.execute(ADD_FEEDBACK, shop.id)
    return asked


async def submit_some(rt: Runtime, shop: shops.Shop, count: int,
                      known: list[tuple[str, str, str | None]]) -> None:
    """Corrections, transcript pairs (with their excerpts) and suggestions through the queue's
    own deduplication and comparison with live knowledge."""
    rng = random.Random(22)
    drafts = []
    for _ in range(count):
        q, a, _ = rng.choice(known)
        roll = rng.random()
        if roll < 0.4:
            priority = rng.choice(["low", "normal", "normal", "high", "urgent"])
            drafts.append(ItemDraft(
                kind="answer", source_type="correction", question=rephrase(rng, q),
                answer=a.replace("working days", "business days") + " Call us for details.",
                confidence=PRIORITY_CONFIDENCE[priority], priority=priority,
                metadata={"context": None, "original_response": a}))
        elif roll < 0.8:
            question = rephrase(rng, q)
            answer = f"Let me check. {a.split('. ')[0]}."
            drafts.append(ItemDraft(
                kind="answer", source_type="transcript", question=question, answer=answer,
                source_id=uuid.uuid4(), confidence=75,
                metadata={"transcript_id": str(uuid.uuid4()), "start": 12.0, "end": 31.5,
                          "excerpt": f"Customer: {question}\nAgent: One moment.\n"
                                     f"Agent: {answer}", "call_sentiment": "neutral"}))
        else:
            drafts.append(ItemDraft(kind="answer", source_type="manual", question=off_topic(rng),
                                    answer="Yes, ask for it at checkout.",
                                    confidence=rng.randint(40, 99)))
    vectors = await rt.embedder.embed_many([d.question for d in drafts])
    for draft, vector in zip(drafts, vectors, strict=True):
        await submit(rt, shop, draft, CLI_ADMIN, vector=vector)


INSERT_ITEMS = """
INSERT INTO learning_queue (id, shop_id, status, kind, source_type, source_id, question,
    proposed_content, category, embedding, confidence_score, priority, observations,
    conflict_entry_id, nearest_entry_id, nearest_similarity, merged_into, target_entry_id,
    applied_knowledge_id, review_note, signals, metadata, created_at, reviewed_at, applied_at,
    updated_at)
SELECT t.id, $1, t.status, t.kind, t.source_type, t.source_id, t.question, t.proposed,
       t.category, t.embedding, t.confidence, t.priority, t.observations, t.conflict, t.nearest,
       t.similarity, t.merged_into, t.target, t.applied, t.note, t.signals::jsonb,
       t.metadata::jsonb, t.created_at, t.reviewed_at, t.applied_at,
       greatest(t.created_at, t.reviewed_at, t.applied_at)
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::text[],
            $9::text[], $10::vector[], $11::integer[], $12::text[], $13::integer[], $14::uuid[],
            $15::uuid[], $16::real[], $17::uuid[], $18::uuid[], $19::uuid[], $20::text[],
            $21::text[], $22::text[], $23::timestamptz[], $24::timestamptz[],
            $25::timestamptz[])
     AS t(id, status, kind, source_type, source_id, question, proposed, category, embedding,
          confidence, priority, observations, conflict, nearest, similarity, merged_into,
          target, applied, note, signals, metadata, created_at, reviewed_at, applied_at)
"""
ITEM_FIELDS = ("id", "status", "kind", "source_type", "source_id", "question", "proposed",
               "category", "embedding", "confidence", "priority", "observations", "conflict",
               "nearest", "similarity", "merged_into", "target", "applied", "note", "signals",
               "metadata", "created_at", "reviewed_at", "applied_at")


@dataclass(frozen=True, slots=True)
class Live:
    """The shop's live entries: version ids, entry ids, texts and (unit) question vectors."""

    ids: list[uuid.UUID]
    entry_ids: list[uuid.UUID]
    questions: list[str]
    answers: list[str]
    vectors: np.ndarray


async def live_entries(rt: Runtime, shop_id: int) -> Live:
    rows = await rt.pool.fetch(
        "SELECT k.id, k.entry_id, k.question, k.answer, v.embedding "
        "FROM knowledge_base_rag AS k JOIN knowledge_vectors AS v ON v.knowledge_id = k.id "
        "AND v.kind = 'question' WHERE k.shop_id = $1 AND k.valid_to IS NULL "
        "ORDER BY k.created_at, k.id", shop_id)
    return Live([r["id"] for r in rows], [r["entry_id"] for r in rows],
                [r["question"] for r in rows], [r["answer"] for r in rows],
                np.stack([np.asarray(r["embedding"], dtype=np.float32) for r in rows]))


def edited(rng: random.Random, answer: str) -> str:
    """An answer as a correction changes it: a figure, a sentence more or less."""
    roll = rng.random()
    if roll < 0.4:
        return re.sub(r"\d+", lambda m: str(int(m[0]) + rng.randint(1, 3)), answer, count=1)
    if roll < 0.7:
        return f"{answer} {rng.choice(ADDED_SENTENCES)}"
    sentences = answer.split(". ")
    return ". ".join(sentences[:-1]) + "." if len(sentences) > 1 else answer + " Updated."


def excerpt(rng: random.Random, question: str, answer: str | None) -> str:
    lines = [f"Customer: {question}"]
    if rng.random() < 0.5:
        lines.append("Agent: Let me see, one moment.")
    lines.append(f"Agent: {answer}" if answer else "Agent: I'm not sure, I'll have to check "
                 "with a colleague and call you back.")
    return "\n".join(lines)


def make_items(count: int, live: Live, turn_ids: list[uuid.UUID],
               seed: int) -> list[dict[str, Any]]:
    """Queue items as the loop leaves them after a few months, beside their real nearest
    entry: mostly pending, every kind, source, priority and status."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    origin = np_rng.integers(0, len(live.ids), count)
    # A question near its origin entry (cosine 0.5-0.98), or one a quarter of gaps: on a
    # topic of its own.
    wanted = np_rng.uniform(0.5, 0.98, count)
    noise = np_rng.standard_normal((count, live.vectors.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    scale = np.sqrt(1 / wanted ** 2 - 1)[:, None].astype(np.float32)
    vectors = live.vectors[origin] + scale * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    nearest = np.empty(count, dtype=np.int64)
    similarity = np.empty(count, dtype=np.float32)
    for start in range(0, count, BATCH):  # the real nearest entry, exactly
        sims = vectors[start:start + BATCH] @ live.vectors.T
        nearest[start:start + BATCH] = sims.argmax(axis=1)
        similarity[start:start + BATCH] = sims.max(axis=1)
    pending_by_kind: dict[str, list[uuid.UUID]] = {k: [] for k, _ in KIND_WEIGHTS}
    for i in range(count):
        status = pick(rng, STATUS_WEIGHTS)
        kind = "answer" if status in {"approved", "applied"} else pick(rng, KIND_WEIGHTS)
        source = pick(rng, SOURCES_OF[kind] if kind != "answer" or status == "pending"
                      or rng.random() < 0.8 else SOURCES_OF["gap"])
        near = int(nearest[i])
        base_q = live.questions[int(origin[i])]
        question = off_topic(rng) if kind == "gap" and rng.random() < 0.25 else \
            rephrase(rng, base_q)
        proposed = None
        if kind == "answer":
            proposed = edited(rng, live.answers[near]) if rng.random() < 0.6 else \
                " ".join(s.format(p=rng.choice(PRODUCTS), t=rng.choice(TOPICS),
                                  n=rng.randint(100, 99_999), w=rng.randint(1, 5),
                                  d=rng.randint(1, 9), s="6.50", y=2025)
                         for s in rng.sample(ANSWER_SENTENCES, rng.randint(1, 3)))
        priority = "normal"
        if source == "correction":
            priority = rng.choice(["low", "normal", "normal", "high", "high", "urgent"])
        elif source == "handover" or (source == "transcript" and rng.random() < 0.15):
            priority = "high"
        confidence = {"correction": PRIORITY_CONFIDENCE[priority], "transcript": 75,
                      "manual": rng.randint(40, 99)}.get(source, 50)
        roll = rng.random()
        observations = (1 if roll < 0.6 else rng.randint(2, 5) if roll < 0.9
                        else rng.randint(6, 30) if roll < 0.98 else rng.randint(31, 400))
        signals = []
        for _ in range(min(observations, 100)):
            signal: dict[str, Any] = {"source_type": source,
                                      "source_id": str(uuid.uuid4()),
                                      "confidence": confidence, "answer": proposed}
            if source in {"feedback", "gap", "handover"} and turn_ids:
                signal["turn_id"] = str(rng.choice(turn_ids))
            if source == "transcript":
                said = round(rng.uniform(5, 400), 1)
                signal.update(excerpt=excerpt(rng, question, proposed), start=said,
                              end=round(said + rng.uniform(4, 40), 1))
            signals.append(signal)
        metadata: dict[str, Any] = {}
        if source in {"gap", "handover"}:
            metadata = {"conversation_id": f"bench-{rng.randint(1, 99_999)}",
                        "repeats": rng.choice([0, 0, 0, 1, 2]),
                        "turn_id": signals[0].get("turn_id"), "logged": rng.random() < 0.5}
        elif source == "transcript":
            metadata = {"transcript_id": str(uuid.uuid4()), "start": signals[0]["start"],
                        "end": signals[0]["end"], "excerpt": signals[0]["excerpt"],
                        "call_sentiment": rng.choice(["neutral", "positive", "negative"])}
        elif source == "feedback":
            metadata = {"turn_id": signals[0].get("turn_id"),
                        "answer_given": live.answers[near],
                        "reason": rng.choice([None, None, "wrong price", "not helpful"])}
        elif source == "correction":
            metadata = {"context": None, "original_response": live.answers[near]}
        has_nearest = rng.random() < 0.92
        conflict = (live.entry_ids[near] if kind == "answer" and status == "pending"
                    and has_nearest and rng.random() < 0.06 else None)
        created = now - timedelta(days=90 * rng.random() ** (2.0 if status == "pending"
                                                              else 1.0))
        reviewed = applied_at = None
        if status != "pending":
            reviewed = min(now, created + timedelta(hours=rng.uniform(0.1, 72)))
        if status == "applied":
            applied_at = min(now, (reviewed or created) + timedelta(minutes=rng.uniform(1, 30)))
        item_id = uuid.uuid4()
        merged_into = None
        if status == "merged":
            merged_into = rng.choice(pending_by_kind[kind]) if pending_by_kind[kind] else None
            if merged_into is None:
                status = "pending"
                reviewed = None
        elif status == "pending":
            pending_by_kind[kind].append(item_id)
        items.append({
            "id": item_id, "status": status, "kind": kind, "source_type": source,
            "source_id": uuid.uuid4(), "question": question, "proposed": proposed,
            "category": rng.choice(CATEGORIES), "embedding": ArrayItem(vectors[i]),
            "confidence": confidence, "priority": priority, "observations": observations,
            "conflict": conflict,
            "nearest": live.entry_ids[near] if has_nearest else None,
            "similarity": float(similarity[i]) if has_nearest else None,
            "merged_into": merged_into,
            "target": (live.entry_ids[near] if kind == "improve" or conflict else None),
            "applied": live.ids[near] if status == "applied" else None,
            "note": rng.choice(REJECT_REASONS) if status == "rejected" else None,
            "signals": json.dumps(signals), "metadata": json.dumps(metadata),
            "created_at": created, "reviewed_at": reviewed, "applied_at": applied_at})
    # Merged items point at items written before them.
    items.sort(key=lambda item: item["status"] == "merged")
    return items


async def bulk_items(rt: Runtime, shop_id: int, count: int, live: Live) -> None:
    turn_ids = [r["id"] for r in await rt.pool.fetch(
        "SELECT id FROM conversation_memory WHERE shop_id = $1 LIMIT 5000", shop_id)]
    items = make_items(count, live, turn_ids, seed=23)
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        await rt.pool.execute(INSERT_ITEMS, shop_id,
                              *[[item[f] for item in batch] for f in ITEM_FIELDS])


INSERT_AUDIT = """
INSERT INTO learning_audit_log (shop_id, actor, actor_key_id, action, subject_type, subject_id,
                                before, after, created_at)
SELECT $1, t.actor, t.key_id, t.action, t.subject_type, t.subject_id, t.before::jsonb,
       t.after::jsonb, t.at
FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::text[],
            $8::text[], $9::timestamptz[]) AS t(actor, key_id, action, subject_type,
                                                 subject_id, before, after, at)
"""


async def add_audit(rt: Runtime, shop_id: int, count: int, owner: Principal,
                    live: Live) -> None:
    """Audit records over the last 90 days, oldest first, as the loop writes them."""
    rows = await rt.pool.fetch(
        "SELECT id, status, kind, question, proposed_content, confidence_score, observations "
        "FROM learning_queue WHERE shop_id = $1", shop_id)
    if not rows:
        return
    rng = random.Random(24)
    now = datetime.now(UTC)
    records = []
    for _ in range(count):
        action = pick(rng, AUDIT_ACTIONS)
        item = rng.choice(rows)
        summary = {"status": item["status"], "kind": item["kind"], "question": item["question"],
                   "proposed_content": item["proposed_content"],
                   "confidence": item["confidence_score"], "observations": item["observations"]}
        by_system = action in {"queue.new", "queue.merged", "queue.auto_approve", "queue.apply",
                               "knowledge.create_from_learning", "queue.dropped"}
        actor = ("system", None) if by_system else (owner.actor, owner.key_id)
        subject_type, subject, before, after = "queue", item["id"], None, summary
        if action.startswith("knowledge."):
            index = rng.randrange(len(live.ids))
            subject_type, subject = "knowledge", live.entry_ids[index]
            after = {"question": live.questions[index], "answer": live.answers[index]}
            before = after if action == "knowledge.supersede" else None
        elif action in {"queue.approve", "queue.edit_approve", "queue.reject"}:
            before = {**summary, "status": "pending"}
            if action == "queue.reject":
                after = {**summary, "status": "rejected", "reason": rng.choice(REJECT_REASONS)}
        elif action == "transcript.ingest":
            subject_type, subject = "transcript", uuid.uuid4()
            after = {"format": "text", "sentiment": "neutral", "pairs": rng.randint(0, 3),
                     "unanswered": rng.randint(0, 1)}
        records.append((actor[0], actor[1], action, subject_type, subject,
                        json.dumps(before) if before else None, json.dumps(after),
                        now - timedelta(days=90 * rng.random())))
    records.sort(key=lambda r: r[-1])
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        await rt.pool.execute(INSERT_AUDIT, shop_id,
                              *[list(column) for column in zip(*batch, strict=True)])


async def scalar(rt: Runtime, sql: str, *args: Any) -> int:
    return int(await rt.pool.fetchval(sql, *args))


async def setup(rt: Runtime, args: argparse.Namespace,
                slugs: tuple[str, str] = (SHOP, SMALL_SHOP)) -> dict[str, Any]:
    """The shops (the big one and a small one beside it) and their history; what already
    exists (a reused --data-dir) is kept."""
    big, small = slugs
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pairs = knowledge_pairs(args.entries, seed=1)
    try:
        shop_id = (await shops.get_shop(rt.pool, big)).id
    except NotFound:
        shop_id = await load_knowledge(rt, big, args.entries, seed=1)
        await load_knowledge(rt, small, max(10, args.entries // 100), seed=2)
        await give_history(rt, shop_id)
        await rt.pool.execute("ANALYZE")
    timings["knowledge_seconds"] = time.perf_counter() - started
    shop = await shops.get_shop(rt.pool, shop_id)
    entry_id = await rt.pool.fetchval(
        "SELECT entry_id FROM knowledge_base_rag WHERE shop_id = $1 GROUP BY entry_id "
        "ORDER BY count(*) DESC, entry_id LIMIT 1", shop_id)

    mark = time.perf_counter()
    asked = await make_turns(rt, shop, args.turns, [q for q, _, _ in pairs])
    timings["turns_seconds"] = time.perf_counter() - mark

    mark = time.perf_counter()
    items_sql = "SELECT count(*) FROM learning_queue WHERE shop_id = $1"
    submitted = 0
    if await scalar(rt, items_sql, shop_id) < args.items:
        submitted = max(0, min(SUBMITTED_ITEMS, args.items // 20))
        await submit_some(rt, shop, submitted, pairs)
    missing = args.items - await scalar(rt, items_sql, shop_id)
    live = await live_entries(rt, shop_id)
    if missing > 0:
        await bulk_items(rt, shop_id, missing, live)
    timings["queue_seconds"] = time.perf_counter() - mark

    owner_key = await keys.create_key(rt.pool, Role.OWNER, shop_id, big)
    owner = Principal(key_id=owner_key.key.id, role=Role.OWNER, shop_id=shop_id, name="bench")
    mark = time.perf_counter()
    audit_sql = "SELECT count(*) FROM learning_audit_log WHERE shop_id = $1"
    missing = args.audit - await scalar(rt, audit_sql, shop_id)
    if missing > 0:
        await add_audit(rt, shop_id, missing, owner, live)
    timings["audit_seconds"] = time.perf_counter() - mark

    mark = time.perf_counter()
    # A settled database, as autovacuum leaves it: statistics and visibility maps up to date.
    for table in ("knowledge_base_rag", "knowledge_vectors", "learning_queue",
                  "learning_queue_listing", "learning_audit_log", "conversation_memory",
                  "response_analytics", "conversation_feedback"):
        await rt.pool.execute(f"VACUUM ANALYZE {table}")
    await refresh_views(rt.pool)
    # The load's dirty pages written now, not by a checkpoint while pages are timed (needs a
    # superuser or pg_checkpoint, which a --database-url may not give).
    with contextlib.suppress(asyncpg.PostgresError):
        await rt.pool.execute("CHECKPOINT")
    timings["vacuum_analyze_refresh_views_seconds"] = time.perf_counter() - mark
    timings["total_seconds"] = time.perf_counter() - started
    return {"shop_id": shop_id, "entry_id": entry_id, "asked_turns": asked,
            "owner_secret": owner_key.secret,
            "submitted_items": submitted, "questions": [q for q, _, _ in pairs],
            "timings": {k: round(v, 1) for k, v in timings.items()}}


SHOP_SIZES = """
SELECT (SELECT count(*) FROM knowledge_base_rag WHERE shop_id = $1 AND valid_to IS NULL)
           AS knowledge_entries_live,
       (SELECT count(*) FROM knowledge_base_rag WHERE shop_id = $1) AS knowledge_base_rag_rows,
       (SELECT count(*) FROM knowledge_vectors WHERE shop_id = $1) AS knowledge_vectors,
       (SELECT count(*) FROM learning_queue WHERE shop_id = $1) AS learning_queue,
       (SELECT count(*) FROM learning_queue WHERE shop_id = $1 AND nearest_entry_id IS NOT NULL)
           AS learning_queue_with_nearest_entry,
       (SELECT count(*) FROM learning_audit_log WHERE shop_id = $1) AS learning_audit_log,
       (SELECT count(*) FROM conversation_memory WHERE shop_id = $1) AS conversation_memory,
       (SELECT count(*) FROM response_analytics WHERE shop_id = $1) AS response_analytics,
       (SELECT count(*) FROM conversation_feedback WHERE shop_id = $1) AS conversation_feedback
"""
ALL_SIZES = """
SELECT (SELECT count(*) FROM shops) AS shops,
       (SELECT count(*) FROM knowledge_base_rag) AS knowledge_base_rag,
       (SELECT count(*) FROM knowledge_vectors) AS knowledge_vectors,
       (SELECT count(*) FROM learning_queue) AS learning_queue,
       (SELECT count(*) FROM learning_audit_log) AS learning_audit_log,
       (SELECT count(*) FROM conversation_memory) AS conversation_memory,
       (SELECT count(*) FROM response_analytics) AS response_analytics,
       (SELECT count(*) FROM conversation_feedback) AS conversation_feedback,
       round(pg_total_relation_size('learning_queue') / 1048576.0, 1)::float AS learning_queue_mb
"""
QUEUE_MIX = """
SELECT 'status' AS what, status AS value, count(*) AS n FROM learning_queue
WHERE shop_id = $1 GROUP BY status
UNION ALL
SELECT 'kind', kind, count(*) FROM learning_queue WHERE shop_id = $1 GROUP BY kind
UNION ALL
SELECT 'source', source_type, count(*) FROM learning_queue WHERE shop_id = $1
GROUP BY source_type
UNION ALL
SELECT 'priority', priority, count(*) FROM learning_queue WHERE shop_id = $1 GROUP BY priority
ORDER BY 1, 3 DESC
"""


async def sizes(rt: Runtime, shop_id: int) -> dict[str, Any]:
    """Rows per table, of the big shop and of every shop together."""
    shop = dict(await rt.pool.fetchrow(SHOP_SIZES, shop_id) or {})
    for row in await rt.pool.fetch(QUEUE_MIX, shop_id):
        shop.setdefault(f"learning_queue_by_{row['what']}", {})[row["value"]] = row["n"]
    return {"big_shop": shop, "all_shops": dict(await rt.pool.fetchrow(ALL_SIZES) or {})}


async def sign_in(session: aiohttp.ClientSession, base: str, key: str) -> str:
    """As a browser: the form's token and cookie, then the key; the session's CSRF token."""
    async with session.get(f"{base}/admin/sign-in") as r:
        body = await r.text()
        expect(r.status, 200, "GET /admin/sign-in", body)
    token = CSRF_INPUT.search(body)
    if token is None:
        raise SystemExit("GET /admin/sign-in: no _csrf input in the form")
    async with session.post(f"{base}/admin/sign-in", allow_redirects=False,
                            data={"_csrf": token[1], "key": key,
                                  "next": "/admin/queue"}) as r:
        expect(r.status, 303, "POST /admin/sign-in", await r.text())
    if not any(c.key == "learnkb_session" for c in session.cookie_jar):
        raise SystemExit("POST /admin/sign-in set no learnkb_session cookie")
    async with session.get(f"{base}/admin/queue", allow_redirects=False) as r:
        body = await r.text()
        expect(r.status, 200, "GET /admin/queue", body)
    found = CSRF_INPUT.search(body)
    if found is None:
        raise SystemExit("GET /admin/queue: no _csrf input on the page")
    return found[1]


def expect(got: int, want: int, what: str, body: str) -> None:
    if got != want:
        raise SystemExit(f"{what} -> {got} (expected {want}): {body[:1500]}")


@dataclass(frozen=True, slots=True)
class PageCase:
    label: str
    method: str
    path: str
    # Each request's question, when the page asks one (varies so nothing is cached).
    asks: bool = False


async def time_page(session: aiohttp.ClientSession, base: str, case: PageCase, csrf: str,
                    texts: list[str], requests: int, settings: Settings,
                    pid: int, target_ms: float = TARGET_MS) -> dict[str, Any]:
    """One page, WARM_UP times then `requests` times, one at a time; any response but 200
    ends the run with its body."""
    latencies: list[float] = []
    sizes_: list[int] = []

    async def once(i: int) -> None:
        path = case.path
        if case.asks and case.method == "GET":
            path = f"{path}{quote(texts[i % len(texts)])}"
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if case.method == "POST":
            kwargs["data"] = {"question": texts[i % len(texts)], "_csrf": csrf}
            kwargs["headers"] = {"HX-Request": "true", "X-CSRF-Token": csrf}
        started = time.perf_counter()
        async with session.request(case.method, f"{base}{path}", **kwargs) as r:
            raw = await r.read()
        elapsed = (time.perf_counter() - started) * 1000
        # An htmx request's error is a 200 retargeted to the page's alert region.
        if r.status != 200 or "HX-Retarget" in r.headers or "HX-Redirect" in r.headers:
            raise SystemExit(f"{case.method} {path} -> {r.status}: "
                             f"{raw.decode(errors='replace')[:1500]}")
        latencies.append(elapsed)
        sizes_.append(len(raw))

    for i in range(WARM_UP):
        await once(i)
    latencies.clear()
    before = snapshot(settings, pid)
    for i in range(requests):
        await once(WARM_UP + i)
    cpu = cpu_since(before, settings, pid, requests)
    p95 = percentile(latencies, 95)
    return {"label": case.label, "method": case.method, "path": case.path + (
        "<question>" if case.asks and case.method == "GET" else ""),
        "p50_ms": round(statistics.median(latencies), 1), "p95_ms": round(p95, 1),
        "max_ms": round(max(latencies), 1), "n": len(latencies),
        "server_cpu_ms": cpu["server_cpu_ms"], "postgres_cpu_ms": cpu["postgres_cpu_ms"],
        "kb": round(statistics.median(sizes_) / 1024, 1), "ok": p95 <= target_ms}


async def measure(base: str, key: str, offsets: tuple[int, int], entry_id: uuid.UUID,
                  texts: list[str], requests: int, settings: Settings,
                  pid: int) -> list[dict[str, Any]]:
    queue_offset, knowledge_offset = offsets
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, as a browser keeps them
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as session:
        csrf = await sign_in(session, base, key)
        async with session.get(f"{base}/admin/queue", allow_redirects=False) as r:
            found = ITEM_LINK.search(await r.text())
        if found is None:
            raise SystemExit("GET /admin/queue shows no item to open")
        item_id = found[1]  # the first item a reviewer opens
        cases = [
            PageCase("queue: pending, by priority", "GET", "/admin/queue"),
            PageCase("queue: any status, newest", "GET", "/admin/queue?status=&sort=newest"),
            PageCase("queue: by similarity", "GET", "/admin/queue?sort=similarity"),
            PageCase("queue: far page", "GET", f"/admin/queue?offset={queue_offset}"),
            PageCase("queue item", "GET", f"/admin/queue/{item_id}"),
            PageCase("knowledge", "GET", "/admin/knowledge"),
            PageCase("knowledge: far page", "GET", f"/admin/knowledge?offset={knowledge_offset}"),
            PageCase("knowledge: search", "GET", "/admin/knowledge?q=", asks=True),
            PageCase("entry with 3 versions", "GET", f"/admin/knowledge/{entry_id}"),
            PageCase("try the bot", "GET", "/admin/try"),
            PageCase("try the bot: ask (htmx)", "POST", "/admin/try", asks=True),
            PageCase("dashboard, 30 days", "GET", "/admin/dashboard"),
            PageCase("dashboard, 90 days", "GET", "/admin/dashboard?days=90"),
            PageCase("audit trail", "GET", "/admin/audit"),
            PageCase("audit trail: approvals", "GET", "/admin/audit?action=queue.approve"),
            PageCase("sign-in form", "GET", "/admin/sign-in"),
        ]
        return [await time_page(session, base, case, csrf, texts, requests, settings, pid)
                for case in cases]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    rt = await open_runtime(settings)
    try:
        prepared = await setup(rt, args)
        shop_id = prepared["shop_id"]
        counted = await sizes(rt, shop_id)
        texts = random.Random(5).sample(prepared["questions"],
                                        min(len(prepared["questions"]),
                                            args.requests + WARM_UP))
        offsets = (min(5_000, args.items // 2), min(9_000, args.entries * 9 // 10))
        load_before = os.getloadavg()
        with served(rt.database_url, data, free_port()) as (base, pid):
            pages = await measure(base, prepared["owner_secret"], offsets,
                                  prepared["entry_id"], texts, args.requests, settings, pid)
        report: dict[str, Any] = {
            "target": f"every page p95 <= {TARGET_MS:.0f} ms (loopback wall time of one "
                      "request at a time: an upper bound on server time)",
            "machine": machine(load_before, embedder_backend=rt.embedder.backend),
            "data_dir": str(data), "server": "learnkb serve --no-jobs",
            "requests_per_page": args.requests, "warm_up_per_page": WARM_UP,
            "setup": {**prepared["timings"], "turns_asked_in_process": prepared["asked_turns"],
                      "items_submitted_through_dedup": prepared["submitted_items"]},
            "sizes": counted, "pages": pages,
            "misses": [p["method"] + " " + p["path"] for p in pages if not p["ok"]],
        }
    finally:
        await rt.close()
    return report


def human(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["sizes"]["big_shop"]
    lines = [
        "",
        f"review pages ({m['cpus']} CPUs, {m['platform']}; {report['server']}; "
        f"{report['requests_per_page']} requests a page after {report['warm_up_per_page']} "
        f"warm-up, one at a time; load average {m['load_average_before'][0]} before, "
        f"{m['load_average_after'][0]} after)",
        f"  shop: {s['knowledge_entries_live']:,} entries, {s['learning_queue']:,} queue items "
        f"({s['learning_queue_by_status'].get('pending', 0):,} pending), "
        f"{s['learning_audit_log']:,} audit records, {s['conversation_memory']:,} turns; "
        f"setup {report['setup']['total_seconds']} s",
    ]
    lines += timing_table(report["pages"], report["misses"], "page", TARGET_MS,
                          lambda p: f"{p['method']} {p['path']}")
    return "\n".join(lines)


def timing_table(timed: list[dict[str, Any]], missed: list[str], what: str, target_ms: float,
                 label: Callable[[dict[str, Any]], str]) -> list[str]:
    """One line per timed request kind, marked against the p95 target, and the tally."""
    lines = [f"  {'':4}  {'p50':>6} {'p95':>6} {'max':>6}  {'srv cpu':>7} {'pg cpu':>7} "
             f"{'KB':>6}  {what} (ms; target p95 <= {target_ms:.0f})"]
    for p in timed:
        lines.append(
            f"  {'OK  ' if p['ok'] else 'MISS'}  {p['p50_ms']:6.1f} {p['p95_ms']:6.1f} "
            f"{p['max_ms']:6.1f}  {p['server_cpu_ms']:7.1f} {p['postgres_cpu_ms']:7.1f} "
            f"{p['kb']:6.1f}  {label(p)}")
    lines.append(f"  {len(timed) - len(missed)} of {len(timed)} {what}s within target"
                 + (f"; missed: {', '.join(missed)}" if missed else ""))
    return lines


if __name__ == "__main__":
    parser = benchmark_parser(__doc__)
    parser.set_defaults(concurrency=1)  # not used: pages are timed one request at a time
    parser.add_argument("--items", type=int, default=10_000, help="learning-queue items")
    parser.add_argument("--audit", type=int, default=20_000, help="audit records of the shop")
    parser.add_argument("--turns", type=int, default=20_000, help="answered turns of the shop")
    parser.add_argument("--requests", type=int, default=30, help="timed requests a page")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 500 entries, 500 items, 1,000 audit records and "
                             "turns, 5 requests a page")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.entries = min(arguments.entries, 500)
        arguments.items = min(arguments.items, 500)
        arguments.audit = min(arguments.audit, 1_000)
        arguments.turns = min(arguments.turns, 1_000)
        arguments.requests = min(arguments.requests, 5)
    result = asyncio.run(main(arguments))
    publish(arguments.out, "pages", result, human(result))
