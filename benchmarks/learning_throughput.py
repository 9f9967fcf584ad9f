"""Benchmark of the learning loop: signals accepted per second over HTTP, how many queue items
they become (the merge ratio), and the apply job's time to make 10,000 approved items
answerable.

    .venv/bin/python -m benchmarks.learning_throughput --entries 10000 --signals 10000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter
from typing import Any

import aiohttp

from benchmarks.answer_latency import load_shop
from benchmarks.common import (
    benchmark_parser,
    cpu_per_request,
    cpu_snapshot,
    data_dir,
    questions,
    served,
    write_report,
)
from evaluation.instance import free_port
from knowledge.access import CLI_ADMIN, Role
from knowledge.answering.answer import Question, answer_question
from knowledge.answering.retrieval import search
from knowledge.answering.turn_log import turn_log_of
from knowledge.learning.apply import apply_approved
from knowledge.learning.queue import ItemDraft, count_items, submit
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops

TOPICS = ["gift wrapping", "student discounts", "loyalty points", "store pickup",
          "corporate orders", "engraving", "repair service", "trade-in", "price matching",
          "click and collect", "subscriptions", "spare keys"]


def learning_pool(count: int, seed: int) -> list[tuple[str, str]]:
    """Distinct questions the knowledge base does not answer yet, with their right answers."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        topic = rng.choice(TOPICS)
        out.append((f"Do you offer {topic} for order type {i}?",
                    f"Yes: {topic} is available for order type {i}, ask at checkout."))
    return out


async def make_turns(rt: Runtime, shop: shops.Shop, count: int) -> list[str]:
    turns = []
    for text in questions(count, seed=31):
        answer = await answer_question(rt, shop, Question(text=text))
        turns.append(str(answer.turn_id))
    # The served process reads these turns back: they must be written first.
    await turn_log_of(rt).flush()
    return turns


# Other wordings of a learned question: a near-duplicate says the same thing differently.
REWORDINGS = ["Is {topic} available for order type {n}?", "Can I get {topic} on order type {n}?",
              "order type {n} - do you do {topic}?", "Do you have {topic} for order type {n}"]


def reworded(question: str, rng: random.Random) -> str:
    """The same question in other words (deduplication must see it as the same)."""
    topic = next(t for t in TOPICS if t in question)
    n = question.rsplit(" ", 1)[-1].rstrip("?")
    return rng.choice(REWORDINGS).format(topic=topic, n=n)


def signal_mix(total: int, turns: list[str],
               near_duplicates: float) -> list[tuple[str, dict[str, Any]]]:
    """35% feedback on answered turns, 35% owner corrections, 30% suggestions; of the
    corrections and suggestions, `near_duplicates` reword a question sent earlier and the rest
    ask something new."""
    rng = random.Random(5)
    fresh = iter(learning_pool(total, seed=6))
    sent: list[tuple[str, str]] = []
    mix: list[tuple[str, dict[str, Any]]] = []
    for i in range(total):
        kind = i % 20
        if kind < 7:
            feedback: dict[str, Any] = {"turn_id": rng.choice(turns)}
            roll = rng.random()
            if roll < 0.5:
                feedback["type"] = "thumbs_down"
            elif roll < 0.8:
                feedback["type"] = "thumbs_up"
            else:
                feedback.update(type="star_rating", rating=rng.randint(1, 5))
            mix.append(("/v1/feedback", feedback))
            continue
        if sent and rng.random() < near_duplicates:
            q, a = rng.choice(sent)
            q = reworded(q, rng)
        else:
            q, a = next(fresh)
            sent.append((q, a))
        if kind < 14:
            mix.append(("/v1/corrections", {
                "question": q, "corrected_answer": a,
                "priority": rng.choice(["low", "normal", "normal", "high", "urgent"])}))
        else:
            mix.append(("/v1/knowledge/suggestions", {"question": q, "answer": a,
                                                      "confidence": rng.randint(40, 99)}))
    return mix[::-1]   # sent from the end: first things first


async def send(base: str, owner: str, bot: str, mix: list[tuple[str, dict[str, Any]]],
               concurrency: int, server_pid: int
               ) -> tuple[float, Counter[str], list[float], dict[str, float]]:
    queue = list(mix)
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            path, body = queue.pop()
            key = bot if path == "/v1/feedback" else owner
            started = time.perf_counter()
            async with session.post(f"{base}{path}", json=body,
                                    headers={"Authorization": f"Bearer {key}"}) as r:
                data = await r.json()
                if r.status != 201:
                    raise SystemExit(f"{path} -> {r.status}: {data}")
            latencies.append((time.perf_counter() - started) * 1000)
            queued = data.get("queued", data) if path != "/v1/knowledge/suggestions" else data
            outcomes[queued["outcome"] if queued else "no item"] += 1

    before = cpu_snapshot(server_pid)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, outcomes, latencies, cpu_per_request(before, server_pid, len(mix))


async def approve_many(rt: Runtime, shop: shops.Shop, count: int) -> list[str]:
    pool = learning_pool(count, seed=99)
    texts = [q.replace("Do you offer", "Can I get") for q, _ in pool]
    vectors = await rt.embedder.embed_many(texts)
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        async with gate:
            await submit(rt, shop, ItemDraft(kind="answer", source_type="manual",
                                             question=texts[i], answer=pool[i][1],
                                             confidence=99), CLI_ADMIN, vector=vectors[i])

    await asyncio.gather(*(one(i) for i in range(count)))
    return texts


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    rt = await open_runtime(settings)
    try:
        started = time.perf_counter()
        shop_id = await load_shop(rt, "learn-bench", args.entries, seed=1)
        await rt.pool.execute("ANALYZE")
        shop = await shops.get_shop(rt.pool, shop_id)
        turns = await make_turns(rt, shop, args.turns)
        setup_s = time.perf_counter() - started
        owner = (await keys.create_key(rt.pool, Role.OWNER, shop_id, "bench")).secret
        bot = (await keys.create_key(rt.pool, Role.BOT, shop_id, "bench")).secret
        mix = signal_mix(args.signals, turns, args.near_duplicates)
        with served(rt.database_url, data, free_port()) as (base, pid):
            elapsed, outcomes, latencies, cpu = await send(base, owner, bot, mix,
                                                          args.concurrency, pid)
        items = await count_items(rt.pool, shop_id)
        report: dict[str, Any] = {
            "entries": args.entries, "setup_seconds": round(setup_s, 1),
            "signals": len(mix), "concurrency": args.concurrency,
            "near_duplicates": args.near_duplicates,
            "signals_per_second": round(len(mix) / elapsed, 1),
            "signal_latency_ms": {"p50": round(statistics.median(latencies), 2),
                                  "p95": round(sorted(latencies)[int(len(latencies) * .95)], 2)},
            "cpu_per_signal": cpu,
            "outcomes": dict(outcomes), "queue_items_created": int(items),
            "merge_ratio": round(1 - items / len(mix), 3),
        }
        if args.apply_items:
            report.update(await apply_phase(rt, shop_id, args.apply_items,
                                            args.apply_workers))
    finally:
        await rt.close()
    return report


async def apply_phase(rt: Runtime, shop_id: int, count: int,
                      workers: list[int]) -> dict[str, Any]:
    """Everything approved by the signals is applied first, then `count` approved items of
    another shop for each number of apply workers, timed."""
    await apply_approved(rt, shop_id=shop_id)
    first, *others = workers
    rt.settings = rt.settings.with_overrides(apply_workers=first)
    report = {"apply_workers": first, **await apply_one_shop(rt, f"apply-{first}", count)}
    for n in others:
        rt.settings = rt.settings.with_overrides(apply_workers=n)
        report[f"with_{n}_workers"] = await apply_one_shop(rt, f"apply-{n}", count)
    return report


async def apply_one_shop(rt: Runtime, slug: str, count: int) -> dict[str, Any]:
    other = await shops.create_shop(rt.pool, slug, slug)
    queued_at = time.perf_counter()
    texts = await approve_many(rt, other, count)
    queue_s = time.perf_counter() - queued_at
    approved = await count_items(rt.pool, other.id, "approved")
    started = time.perf_counter()
    result = await apply_approved(rt, shop_id=other.id)
    apply_s = time.perf_counter() - started
    probes = random.Random(1).sample(texts, min(50, len(texts)))
    found = 0
    for text in probes:
        vector = await rt.embedder.embed(text)
        top = (await search(rt, other.id, text, vector, limit=1)).candidates
        found += bool(top) and top[0].entry.question == text
    return {"approved_items_to_apply": int(approved), "queueing_seconds": round(queue_s, 1),
            "apply_seconds": round(apply_s, 2), "applied": result.applied,
            "answerable_after_apply": f"{found}/{len(probes)}"}


if __name__ == "__main__":
    parser = benchmark_parser(__doc__)
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=1_000)
    parser.add_argument("--near-duplicates", type=float, default=0.2,
                        help="share of corrections and suggestions that reword an earlier one")
    parser.add_argument("--apply-items", type=int, default=10_000,
                        help="approved items the apply job is timed on (0: skip that phase)")
    parser.add_argument("--apply-workers", type=int, nargs="+", default=[2, 1],
                        help="apply the items with each of these numbers of workers in turn "
                             "(each on a shop of its own)")
    arguments = parser.parse_args()
    write_report(arguments.out, "learning_throughput.json", asyncio.run(main(arguments)))
