"""Load generator: an open-loop mix of answers, signals, bulk logging and review actions at
stepped rates, the rate held with p99 answer time under 200 ms and no errors, and what
learnkb does at 3x that rate (sheds with 429/503 and Retry-After, or queues without bound).

Loads one shop with N entries (and a small second shop), serves learnkb in its own process
and offers requests at fixed rates with Poisson arrivals (open loop: a slow server does not
slow the arrivals down; every latency is counted from the request's scheduled time). The mix:
~70% POST /v1/answer (distinct questions), ~15% signals (feedback on answered turns,
corrections, suggestions), ~10% POST /v1/conversations/bulk (20 turns), ~5% review (GET
/v1/queue, approve or reject pending items); answers and bulk logging through 4 bot keys,
the rest through the owner's key. Then 3x capacity, 0.5x capacity to see it recover, and one
shop held to 5 requests/s beside the others.

    .venv/bin/python -m benchmarks.load [--entries 2000] [--step-seconds 15]
    .venv/bin/python -m benchmarks.load --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.answer_latency import load_shop
from benchmarks.common import (
    benchmark_parser,
    data_dir,
    percentile,
    publish,
    questions,
    served,
)
from benchmarks.intake_throughput import make_turns as chat_turns
from benchmarks.intake_throughput import snapshot
from benchmarks.learning_throughput import learning_pool, make_turns
from evaluation.instance import free_port
from knowledge.access import CLI_ADMIN, Role
from knowledge.errors import NotFound
from knowledge.learning.queue import ItemDraft, submit
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops

SHOP, LIMITED = "load-bench", "load-limited"
BOT_KEYS = 4
BULK_TURNS = 20
ANSWER_P99_MS = 200.0
# A shed response is "quick" within this; accepted requests at 3x are "bounded" within this.
SHED_P99_MS = 100.0
ACCEPTED_P99_BOUND_MS = 1_000.0
TIMEOUT_S = 10.0
RATES = [10, 20, 40, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500, 600]
QUICK_RATES = [20, 40, 80, 160]
LIMITED_RATE, LIMITED_OFFERED = 5.0, 20.0


@dataclass(slots=True)
class Outcome:
    kind: str
    key: str
    status: int          # 0: transport error or timeout
    ms: float            # from the scheduled time to the whole response read
    at: float            # scheduled time, seconds since the phase started
    result: str          # ok | shed | error
    retry_after: str | None = None
    late_ms: float = 0.0  # how late the client started it (a busy client shows here)
    server_ms: float | None = None  # an answer's own latency_ms (the handler's time)


class Questions:
    """Distinct questions, made a thousand at a time."""

    def __init__(self, seed: int) -> None:
        self.seed, self.chunk = seed, 0
        self.left: Iterator[str] = iter([])

    def __next__(self) -> str:
        try:
            return next(self.left)
        except StopIteration:
            self.chunk += 1
            self.left = iter(questions(1000, self.seed * 1_000 + self.chunk))
            return next(self.left)


class Load:
    """The client: one aiohttp session, the shop's keys and what the mix needs."""

    def __init__(self, base: str, session: aiohttp.ClientSession, owner: str, bots: list[str],
                 turns: list[str], pending: list[tuple[str, bool]], seed: int) -> None:
        self.base, self.session, self.owner, self.bots = base, session, owner, bots
        self.turns, self.pending = turns, pending
        self.used: set[str] = {i for i, _ in pending}
        self.rng = random.Random(seed)
        self.questions = Questions(seed)
        self.learning = learning_pool(500, seed=seed)
        self.run = uuid.uuid4().hex[:8]
        self.batches = 0
        self.in_flight = self.max_in_flight = 0
        self.samples: list[dict[str, Any]] = []
        self.sampled: Counter[tuple[str, int]] = Counter()

    def bot(self) -> str:
        return self.rng.choice(self.bots)

    async def call(self, kind: str, method: str, path: str, key: str, body: Any,
                   scheduled: float, origin: float, label: str = "") -> Outcome:
        """One request; classified as accepted (2xx), shed (429/503 with Retry-After) or an
        error (anything else, a transport error or a timeout)."""
        late = (time.perf_counter() - scheduled) * 1000
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        status, raw, retry_after, failure = 0, b"", None, ""
        try:
            async with self.session.request(
                    method, self.base + path, json=body,
                    headers={"Authorization": f"Bearer {key}"}) as r:
                raw = await r.read()
                status, retry_after = r.status, r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.in_flight -= 1
        ms = (time.perf_counter() - scheduled) * 1000
        if 200 <= status < 300:
            result = "ok"
        elif status in (429, 503) and retry_after:
            result = "shed"
        else:
            result = "error"
            self.sample(method, path, body, status, retry_after, raw, failure, ms)
        server_ms = None
        if result == "ok" and kind == "queue_list":
            self.refill(raw)
        elif result == "ok" and kind == "answer":
            server_ms = json.loads(raw).get("latency_ms")
        return Outcome(kind, label or kind, status, ms, scheduled - origin, result,
                       retry_after, late, server_ms)

    def sample(self, method: str, path: str, body: Any, status: int, retry_after: str | None,
               raw: bytes, failure: str, ms: float) -> None:
        where = path.split("?")[0].rsplit("/", 2)
        slot = ("/".join(where[-2:]) if "queue" in path else path.split("?")[0], status)
        self.sampled[slot] += 1
        if self.sampled[slot] > 3 or len(self.samples) >= 20:
            return
        self.samples.append({
            "request": f"{method} {path}", "body": json.dumps(body)[:300] if body else None,
            "status": status or failure, "retry_after": retry_after, "ms": round(ms, 1),
            "response": raw.decode(errors="replace")[:500]})

    def refill(self, raw: bytes) -> None:
        """Pending items a queue listing showed that nothing has acted on yet."""
        try:
            items = json.loads(raw)["items"]
        except (ValueError, KeyError, TypeError):
            return
        for item in items:
            if item["status"] == "pending" and item["id"] not in self.used:
                self.used.add(item["id"])
                self.pending.append((item["id"], bool(item.get("proposed_content"))))

    async def mixed(self, scheduled: float, origin: float) -> Outcome:
        """One request of the mix."""
        roll, rng = self.rng.random(), self.rng
        if roll < 0.70:
            return await self.call("answer", "POST", "/v1/answer", self.bot(),
                                   {"question": next(self.questions)}, scheduled, origin)
        if roll < 0.85:
            signal = rng.random()
            if signal < 0.5:
                body: dict[str, Any] = {"turn_id": rng.choice(self.turns),
                                        "type": rng.choice(["thumbs_up", "thumbs_down"])}
                return await self.call("feedback", "POST", "/v1/feedback", self.bot(), body,
                                       scheduled, origin)
            q, a = rng.choice(self.learning)
            if signal < 0.75:
                return await self.call("correction", "POST", "/v1/corrections", self.owner, {
                    "question": q, "corrected_answer": a,
                    "priority": rng.choice(["low", "normal", "high"])}, scheduled, origin)
            return await self.call("suggestion", "POST", "/v1/knowledge/suggestions",
                                   self.owner, {"question": q, "answer": a,
                                                "confidence": rng.randint(40, 80)},
                                   scheduled, origin)
        if roll < 0.95:
            self.batches += 1
            turns = chat_turns(BULK_TURNS, f"load-{self.run}-{self.batches}", self.batches)
            return await self.call("bulk", "POST", "/v1/conversations/bulk", self.bot(),
                                   {"turns": turns}, scheduled, origin)
        if rng.random() < 0.5 and self.pending:
            item, has_answer = self.pending.pop(rng.randrange(len(self.pending)))
            if rng.random() < 0.6:
                body = {"note": "load test"} if has_answer else {
                    "answer": "Yes, ask at checkout.", "note": "load test"}
                return await self.call("approve", "POST", f"/v1/queue/{item}/approve",
                                       self.owner, body, scheduled, origin)
            return await self.call("reject", "POST", f"/v1/queue/{item}/reject", self.owner,
                                   {"reason": "load test: not wanted"}, scheduled, origin)
        return await self.call("queue_list", "GET",
                               f"/v1/queue?status=pending&limit=20&offset={rng.randint(0, 40)}",
                               self.owner, None, scheduled, origin)


async def open_loop(rate: float, seconds: float,
                    one: Callable[[float, float], Coroutine[Any, Any, Outcome]], seed: int
                    ) -> tuple[list[Outcome], float]:
    """Poisson arrivals at `rate` for `seconds`, each sent when due whatever the earlier ones
    are doing; every outcome once all are done (each within the client's timeout), and the
    p99 of how late the client sent them (a busy client shows here)."""
    rng = random.Random(seed)
    origin = time.perf_counter()
    due = origin + rng.expovariate(rate)
    tasks: list[asyncio.Task[Outcome]] = []
    late: list[float] = []
    while due < origin + seconds:
        now = time.perf_counter()
        while due <= now and due < origin + seconds:
            late.append((now - due) * 1000)
            tasks.append(asyncio.create_task(one(due, origin)))
            due += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, min(due, origin + seconds) - time.perf_counter()))
    outcomes = list(await asyncio.gather(*tasks))
    return outcomes, percentile(late, 99) if late else 0.0


def pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "p99": round(percentile(values, 99), 1)}


def figures(outcomes: list[Outcome], rate: float, seconds: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.result == "ok"]
    shed = [o for o in outcomes if o.result == "shed"]
    errors = [o for o in outcomes if o.result == "error"]
    answers = [o.ms for o in ok if o.kind == "answer"]
    return {
        "offered_per_s": rate, "seconds": seconds, "sent": len(outcomes),
        "completed_per_s": round(len(ok) / seconds, 1),
        "answer_ms": pcts(answers), "answers": len(answers),
        # The same answers as the handler timed them: the rest is waiting before the handler
        # (connection, event loop, request parsing, the key check) and the response's way back.
        "answer_handler_ms": pcts([o.server_ms for o in ok if o.server_ms is not None]),
        "accepted_ms": pcts([o.ms for o in ok]), "accepted": len(ok),
        "errors": len(errors), "shed": len(shed),
        "shed_share": round(len(shed) / len(outcomes), 3) if outcomes else 0.0,
        "client_start_late_ms": pcts([o.late_ms for o in outcomes]),
        "statuses": dict(sorted(Counter(str(o.status) for o in outcomes).items())),
        "by_kind": dict(sorted(Counter(o.kind for o in outcomes).items())),
    }


async def phase(load: Load, rate: float, seconds: float, seed: int, settings: Settings,
                pid: int) -> tuple[dict[str, Any], list[Outcome]]:
    load.max_in_flight = load.in_flight
    before, started = snapshot(settings, pid), time.perf_counter()
    outcomes, late = await open_loop(rate, seconds, load.mixed, seed)
    wall = time.perf_counter() - started
    after = snapshot(settings, pid)
    out = figures(outcomes, rate, seconds)
    out["client_late_p99_ms"] = round(late, 1)
    out["max_in_flight"] = load.max_in_flight
    # CPU cores busy over the phase (the machine has os.cpu_count()).
    out["cores_busy"] = {name: round((b - a) / wall, 2) for name, a, b in
                         zip(("client", "server", "postgres"), before, after, strict=True)}
    return out, outcomes


def passed(step: dict[str, Any]) -> bool:
    p99 = step["answer_ms"]["p99"]
    return p99 is not None and p99 < ANSWER_P99_MS and not step["errors"] and not step["shed"]


async def setup(rt: Runtime, args: argparse.Namespace) -> dict[str, Any]:
    """The shops (reused from an earlier run in the same data directory), keys, answered
    turns for feedback and pending queue items for review."""
    started = time.perf_counter()
    try:
        shop = await shops.get_shop(rt.pool, SHOP)
        limited = await shops.get_shop(rt.pool, LIMITED)
    except NotFound:
        shop = await shops.get_shop(rt.pool, await load_shop(rt, SHOP, args.entries, seed=1))
        limited = await shops.get_shop(rt.pool, await load_shop(rt, LIMITED, 50, seed=3))
        await rt.pool.execute("ANALYZE")
    turns = await make_turns(rt, shop, args.turns)
    texts = [f"Can I get {topic} on order {i} of run {uuid.uuid4().hex[:6]}?"
             for i, (topic, _) in enumerate(learning_pool(args.pending, seed=17))]
    vectors = await rt.embedder.embed_many(texts)
    gate = asyncio.Semaphore(4)
    pending: list[tuple[str, bool]] = []

    async def one(i: int) -> None:
        async with gate:
            done = await submit(rt, shop, ItemDraft(
                kind="answer", source_type="manual", question=texts[i],
                answer="Yes, ask at checkout.", confidence=50), CLI_ADMIN, vector=vectors[i])
            if done.item is not None and done.item.status == "pending":
                pending.append((str(done.item.id), True))

    await asyncio.gather(*(one(i) for i in range(len(texts))))
    new = [(await keys.create_key(rt.pool, role, shop_id, "load")).secret for role, shop_id in
           [(Role.OWNER, shop.id), *[(Role.BOT, shop.id)] * BOT_KEYS, (Role.BOT, limited.id),
            (Role.ADMIN, None)]]
    return {"shop": shop, "turns": turns, "pending": pending, "owner": new[0],
            "bots": new[1:1 + BOT_KEYS], "limited_bot": new[-2], "admin": new[-1],
            "seconds": round(time.perf_counter() - started, 1)}


async def patch_rate(session: aiohttp.ClientSession, base: str, admin: str,
                     rate: float | None) -> int:
    async with session.patch(f"{base}/v1/shops/{LIMITED}", json={"rate_limit_per_second": rate},
                             headers={"Authorization": f"Bearer {admin}"}) as r:
        body = await r.read()
        if r.status != 200:
            raise SystemExit(f"PATCH /v1/shops/{LIMITED} -> {r.status}: {body[:500]!r}")
        return r.status


async def rate_limit_phase(load: Load, base: str, ready: dict[str, Any], rate: float,
                           seconds: float) -> dict[str, Any]:
    """LIMITED held to 5 requests/s while its key offers 20 answers/s, beside the mix of the
    other shop at `rate`."""
    await patch_rate(load.session, base, ready["admin"], LIMITED_RATE)
    await asyncio.sleep(6)  # the shop cache of the serving process re-reads within 5 s

    async def limited(scheduled: float, origin: float) -> Outcome:
        return await load.call("answer", "POST", "/v1/answer", ready["limited_bot"],
                               {"question": next(load.questions)}, scheduled, origin,
                               label="limited")

    (others, _), (held, _) = await asyncio.gather(
        open_loop(rate, seconds, load.mixed, seed=71),
        open_loop(LIMITED_OFFERED, seconds, limited, seed=72))
    await patch_rate(load.session, base, ready["admin"], None)
    too_many = [o for o in held if o.status == 429]
    return {
        "limited_shop": {
            "rate_limit_per_second": LIMITED_RATE, "offered_per_s": LIMITED_OFFERED,
            "seconds": seconds, "sent": len(held),
            "accepted": sum(o.result == "ok" for o in held),
            "accepted_per_s": round(sum(o.result == "ok" for o in held) / seconds, 1),
            "status_429": len(too_many),
            "status_429_with_retry_after": sum(bool(o.retry_after) for o in too_many),
            "retry_after_values": dict(Counter(str(o.retry_after) for o in too_many)),
            "status_429_ms": pcts([o.ms for o in too_many]),
            "errors": sum(o.result == "error" for o in held),
            "statuses": dict(Counter(str(o.status) for o in held))},
        "other_shop": figures(others, rate, seconds) | {
            "status_429": sum(o.status == 429 for o in others)},
    }


async def probe(load: Load, seconds: float) -> dict[str, Any]:
    """Every half second during a phase: GET /health (no key, no database: its time is the
    server's event loop and accept backlog) and the pool's connections in use from /metrics."""
    health: list[float] = []
    in_use: list[float] = []
    counts: list[tuple[float, dict[str, float]]] = []  # (when, embedding counters)
    failed = 0
    begun = time.perf_counter()
    end = begun + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        try:
            async with load.session.get(f"{load.base}/health") as r:
                await r.read()
            health.append((time.perf_counter() - started) * 1000)
            async with load.session.get(f"{load.base}/metrics") as r:
                text = (await r.read()).decode()
            values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                      for line in text.splitlines() if line.startswith("learnkb_")}
            in_use.append(values.get('learnkb_pool_connections{state="in_use"}', 0.0))
            counts.append((time.perf_counter(), {name: values.get(metric, 0.0) for name, metric in (
                ("model", 'learnkb_embedding_requests{served="model"}'),
                ("shed", 'learnkb_embedding_requests{served="shed"}'),
                ("batches", "learnkb_embedding_batch_size_count"),
                ("texts", "learnkb_embedding_batch_size_sum"))}))
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
        await asyncio.sleep(max(0.0, 0.5 - (time.perf_counter() - started)))
    model: dict[str, float | None] = {"embedded_per_s": None, "mean_batch": None}
    if len(counts) > 1:
        (t0, first), (t1, last) = counts[0], counts[-1]
        batches = last["batches"] - first["batches"]
        model = {"embedded_per_s": round((last["model"] - first["model"]) / (t1 - t0), 1),
                 "mean_batch": round((last["texts"] - first["texts"]) / batches, 1)
                 if batches else None,
                 "shed_by_embedder": last["shed"] - first["shed"]}
    return {"health_ms": pcts(health) | {"max": round(max(health), 1) if health else None},
            "model": model,
            "pool_in_use_max": max(in_use, default=None),
            "pool_in_use_median": sorted(in_use)[len(in_use) // 2] if in_use else None,
            "probes_failed": failed}


def overload_figures(step: dict[str, Any], outcomes: list[Outcome],
                     seconds: float) -> dict[str, Any]:
    shed = [o for o in outcomes if o.result == "shed"]
    windows = []
    for start in range(0, max(1, round(seconds)), 5):
        part = [o for o in outcomes if start <= o.at < start + 5]
        ok = [o.ms for o in part if o.result == "ok"]
        windows.append({"from_s": start, "accepted_p99_ms": pcts(ok)["p99"],
                        "answer_p99_ms": pcts([o.ms for o in part if o.result == "ok"
                                               and o.kind == "answer"])["p99"],
                        "shed_share": round(sum(o.result == "shed" for o in part)
                                            / max(1, len(part)), 3)})
    return step | {
        "shed_ms": pcts([o.ms for o in shed]),
        "shed_by_status": dict(Counter(str(o.status) for o in shed)),
        "retry_after_values": dict(Counter(str(o.retry_after) for o in shed)),
        "shed_by_kind": dict(Counter(o.kind for o in shed)),
        "five_second_windows": windows,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rt = await open_runtime(settings)
    try:
        return await measure(rt, args, data, settings, load_before)
    finally:
        await rt.close()


async def measure(rt: Runtime, args: argparse.Namespace, data: Path, settings: Settings,
                  load_before: list[float]) -> dict[str, Any]:
    ready = await setup(rt, args)
    url = rt.database_url
    report: dict[str, Any] = {
        "entries": args.entries, "data_dir": str(data), "cpus": os.cpu_count(),
        "server": "learnkb serve --no-jobs, one process", "setup_seconds": ready["seconds"],
        "bot_keys": BOT_KEYS, "answered_turns_for_feedback": len(ready["turns"]),
        "pending_items_at_start": len(ready["pending"]),
        "rate_limit_per_second_default": settings.rate_limit_per_second,
        "embed_queue_max": settings.embed_queue_max,
        "targets": {"answer_p99_ms": ANSWER_P99_MS, "shed_p99_ms": SHED_P99_MS,
                    "accepted_p99_ms_at_3x": ACCEPTED_P99_BOUND_MS},
        "load_average_before": load_before}
    # Idle connections are dropped after 4 s, before the server's own 5 s (uvicorn's
    # keep-alive): a connection the server is closing is never reused.
    connector = aiohttp.TCPConnector(limit=1_000, keepalive_timeout=4)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    with served(url, data, free_port()) as (base, pid):
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            load = Load(base, session, ready["owner"], ready["bots"], ready["turns"],
                        ready["pending"], seed=int(time.time()) % 10_000)
            await open_loop(10, args.warmup_seconds, load.mixed, seed=1)  # warm-up
            steps, capacity = [], 0.0
            for i, rate in enumerate(args.rates):
                await asyncio.sleep(2)
                step, _ = await phase(load, rate, args.step_seconds, 100 + i, settings, pid)
                step["ok"] = passed(step)
                step["load_average_1m"] = round(os.getloadavg()[0], 2)
                steps.append(step)
                print(f"  step {rate:>4} req/s: answers p99 {step['answer_ms']['p99']} ms, "
                      f"errors {step['errors']}, shed {step['shed']}", flush=True)
                if not step["ok"]:
                    break
                capacity = rate
            report["steps"] = steps
            report["capacity_per_s"] = capacity
            base_rate = capacity or args.rates[0]
            await asyncio.sleep(3)
            over_rate = 3 * base_rate
            (step, outcomes), probed = await asyncio.gather(
                phase(load, over_rate, args.overload_seconds, 200, settings, pid),
                probe(load, args.overload_seconds))
            report["overload"] = overload_figures(step, outcomes, args.overload_seconds)
            report["overload"]["server_probes"] = probed
            await asyncio.sleep(3)
            step, _ = await phase(load, max(5.0, base_rate / 2), args.recovery_seconds, 300,
                                  settings, pid)
            step["recovered"] = (step["answer_ms"]["p99"] is not None
                                 and step["answer_ms"]["p99"] < ANSWER_P99_MS
                                 and not step["errors"])
            report["recovery"] = step
            report["rate_limit"] = await rate_limit_phase(
                load, base, ready, max(5.0, base_rate / 2), args.limit_seconds)
            report["errors_seen"] = load.samples
            report["pending_items_left"] = len(load.pending)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


def human(report: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "OK  " if ok else "MISS"

    def ms(f: dict[str, Any]) -> str:
        return "/".join("-" if f[k] is None else f"{f[k]:g}" for k in ("p50", "p95", "p99"))

    lines = ["", f"load ({report['cpus']} CPUs, {report['server']}, {report['entries']:,} "
                 f"entries; load average before {report['load_average_before']}, after "
                 f"{report['load_average_after']})",
             "       offered  sent  done/s  answers p50/p95/p99 ms   accepted p50/p95/p99 ms"
             "  errors  shed  late99  cores srv/pg/cli"]
    for s in report["steps"]:
        c = s["cores_busy"]
        lines.append(
            f"  {mark(s['ok'])} {s['offered_per_s']:>6g} {s['sent']:>5} {s['completed_per_s']:>7}"
            f"  {ms(s['answer_ms']):>22}   {ms(s['accepted_ms']):>22}  {s['errors']:>6}"
            f"  {s['shed']:>4}  {s['client_late_p99_ms']:>6}  {c['server']}/{c['postgres']}/"
            f"{c['client']}")
    cap = report["capacity_per_s"]
    lines.append(f"  capacity: {cap:g} req/s (highest step with answer p99 < 200 ms, no error, "
                 "nothing shed)" if cap else "  capacity: none of the steps held")
    o = report["overload"]
    lines += [
        f"  overload at {o['offered_per_s']:g} req/s for {o['seconds']:g} s: {o['sent']} sent, "
        f"{o['completed_per_s']} accepted/s, {o['shed_share']:.1%} shed {o['shed_by_status']}, "
        f"Retry-After {o['retry_after_values']}",
        f"  {mark(o['errors'] == 0)} errors: {o['errors']} {o['statuses']}",
        f"  {mark(not o['shed'] or (o['shed_ms']['p99'] or 0) <= SHED_P99_MS)} shed responses "
        f"back in p50/p95/p99 {ms(o['shed_ms'])} ms (target p99 <= {SHED_P99_MS:g})",
        f"  {mark((o['accepted_ms']['p99'] or 0) <= ACCEPTED_P99_BOUND_MS)} accepted p50/p95/p99 "
        f"{ms(o['accepted_ms'])} ms, answers {ms(o['answer_ms'])} ms (bound "
        f"{ACCEPTED_P99_BOUND_MS:g}); by 5 s: " + ", ".join(
            f"{w['accepted_p99_ms']}" for w in o["five_second_windows"]),
    ]
    sp = o["server_probes"]
    lines.append(f"       answers as the handler timed them {ms(o['answer_handler_ms'])} ms; GET "
                 f"/health meanwhile {ms(sp['health_ms'])} ms; pool connections in use: median "
                 f"{sp['pool_in_use_median']}, max {sp['pool_in_use_max']}; in flight at most "
                 f"{o['max_in_flight']}; model {sp['model']['embedded_per_s']} questions/s in "
                 f"batches of {sp['model']['mean_batch']}; client late p99 "
                 f"{o['client_late_p99_ms']} ms")
    r = report["recovery"]
    lines.append(f"  {mark(r['recovered'])} recovery at {r['offered_per_s']:g} req/s: answers "
                 f"{ms(r['answer_ms'])} ms, errors {r['errors']}, shed {r['shed']}")
    lim, other = report["rate_limit"]["limited_shop"], report["rate_limit"]["other_shop"]
    held = (lim["status_429"] > 0 and lim["status_429_with_retry_after"] == lim["status_429"]
            and (lim["status_429_ms"]["p99"] or 0) <= SHED_P99_MS and not lim["errors"])
    lines += [
        f"  {mark(held)} shop at {lim['rate_limit_per_second']:g}/s offered "
        f"{lim['offered_per_s']:g}/s: {lim['accepted_per_s']}/s accepted, {lim['status_429']} "
        f"x 429 ({lim['status_429_with_retry_after']} with Retry-After "
        f"{lim['retry_after_values']}) in {ms(lim['status_429_ms'])} ms, errors {lim['errors']}",
        f"  {mark(other['status_429'] == 0 and not other['errors'])} other shop at "
        f"{other['offered_per_s']:g} req/s meanwhile: {other['status_429']} x 429, errors "
        f"{other['errors']}, answers {ms(other['answer_ms'])} ms",
    ]
    for e in report["errors_seen"]:
        lines.append(f"  ERROR {e['request']} -> {e['status']} (Retry-After {e['retry_after']}, "
                     f"{e['ms']} ms): {e['response'][:200]}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = benchmark_parser(__doc__, entries=2_000)
    parser.add_argument("--step-seconds", type=float, default=15)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=RATES, help="offered rates in req/s, comma-separated")
    parser.add_argument("--overload-seconds", type=float, default=20)
    parser.add_argument("--recovery-seconds", type=float, default=10)
    parser.add_argument("--limit-seconds", type=float, default=10)
    parser.add_argument("--warmup-seconds", type=float, default=5)
    parser.add_argument("--turns", type=int, default=200, help="answered turns for feedback")
    parser.add_argument("--pending", type=int, default=600, help="pending items for review")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of about a minute: 300 entries, 4 s steps")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.entries = min(arguments.entries, 300)
        arguments.rates, arguments.step_seconds = QUICK_RATES, 4
        arguments.overload_seconds, arguments.recovery_seconds = 8, 4
        arguments.limit_seconds, arguments.warmup_seconds = 5, 2
        arguments.turns, arguments.pending = 50, 100
    result = asyncio.run(main(arguments))
    publish(arguments.out, "load", result, human(result))
