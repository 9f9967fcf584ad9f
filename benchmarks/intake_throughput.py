"""Benchmark of intake: bulk conversation logging and transcript ingestion over HTTP, and the
batch jobs that follow them at that size (refresh-metrics, embed-turns).

Serves learnkb in its own process (`--no-jobs`: the benchmark runs the jobs itself, as the
`learnkb jobs run` CLI against the same database) and prints: turns/s accepted by
POST /v1/conversations/bulk (1,000 turns a request), p50/p95 per batch and CPU per 1,000 turns,
whether a resent batch is stored again, the time of `learnkb jobs run refresh-metrics` and of
`learnkb jobs run embed-turns`, then transcripts/s accepted by POST /v1/transcripts.

    .venv/bin/python -m benchmarks.intake_throughput [--turns 100000] [--transcripts 1000]
    .venv/bin/python -m benchmarks.intake_throughput --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psutil

from benchmarks.answer_latency import load_shop
from benchmarks.common import (
    PRODUCTS,
    TOPICS,
    benchmark_parser,
    cpu_seconds,
    cpu_snapshot,
    data_dir,
    publish,
    questions,
    served,
    summary,
)
from evaluation.instance import free_port, learnkb_command
from jobs import embed_turns
from knowledge.access import Role
from knowledge.errors import NotFound
from knowledge.learning.metrics import refresh_views
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import keys, shops

BATCH = 1_000
SHOP = "intake-bench"
TARGETS = {"turns_per_second": 2_000, "refresh_metrics_seconds": 5.0,
           "transcripts_per_second": 20}

# What customers write to a shop's chat, beyond the product questions of benchmarks.common.
CHAT_FORMS = [
    "Where is my order #{o}?", "My order {o} hasn't arrived yet, can you check?",
    "Do you ship the {p} to {c}?", "How long does delivery to {c} take?",
    "Is the {p} {n} in stock?", "Can I return the {p} I bought last week?",
    "hi, what's the {t} on the {p}?", "The {p} I got is broken, what now?",
    "Can I change the delivery address for order {o}?", "do you have a discount code",
    "How much is shipping for the {p}?", "I want to cancel order {o}",
    "Is there a warranty on the {p} {n}?", "Which {p} do you recommend for a small office?",
    "my email is {e}, please send the invoice for {o}", "call me back on {ph} about the {p}",
    "Does the {p} {n} work with 110V?", "Can I pay for the {p} in instalments?",
    "What colours does the {p} come in?", "When will the {p} {n} be back in stock?",
]
COUNTRIES = ["Germany", "Austria", "France", "Norway", "Spain", "Italy", "the Netherlands",
             "Poland", "Sweden", "Ireland", "Portugal", "Denmark", "Belgium", "Switzerland"]
ANSWER_FORMS = [
    "The {p} ships within {d} working days; you can follow it with the tracking link.",
    "Yes, the {p} has a {w}-year warranty covering manufacturing faults.",
    "You can return the {p} within 30 days; start the return from your account page.",
    "Shipping the {p} costs {s} EUR, free above 50 EUR.",
    "The {p} is available in black, white and steel.",
    "I'm not sure about that one, let me connect you with a colleague.",
    "Order {o} left our warehouse yesterday and should arrive in {d} days.",
    "Here is what I found about {t}: see the {p} product page for details.",
]


def _fill(rng: random.Random, form: str) -> str:
    n = rng.randint(100, 99_999)
    return form.format(
        t=rng.choice(TOPICS), p=rng.choice(PRODUCTS), n=n, c=rng.choice(COUNTRIES),
        o=f"{rng.randint(10_000, 999_999)}", d=rng.randint(1, 9), w=rng.randint(1, 5),
        s=rng.choice(["4.90", "6.50", "9.90"]), e=f"customer{n}@example.com",
        ph=f"+49 151 {rng.randint(1000_0000, 9999_9999)}")


def make_turns(count: int, run: str, seed: int) -> list[dict[str, Any]]:
    """`count` logged turns in conversations of 1-8 turns over the last 30 days: ~10% with
    confidence under 0.4 and ~2% handed over (both become gaps in embed-turns), A/B split."""
    rng = random.Random(seed)
    product_questions = iter(questions(count, seed))
    now = datetime.now(UTC)
    turns: list[dict[str, Any]] = []
    conversation = 0
    while len(turns) < count:
        conversation += 1
        cid, user = f"{run}-c{conversation}", f"user-{rng.randint(1, count // 3 + 1)}"
        variant = rng.choice("AB")
        at = now - timedelta(days=30 * rng.random())
        for _ in range(min(rng.randint(1, 8), count - len(turns))):
            message = (next(product_questions) if rng.random() < 0.5
                       else _fill(rng, rng.choice(CHAT_FORMS)))
            roll = rng.random()
            confidence = (rng.uniform(0.05, 0.399) if roll < 0.10
                          else rng.uniform(0.4, 0.7) if roll < 0.30 else rng.uniform(0.7, 0.99))
            answered = at + timedelta(milliseconds=rng.randint(150, 4_000))
            turns.append({
                "turn_id": f"{run}-t{len(turns)}", "conversation_id": cid,
                "message": message, "answer": _fill(rng, rng.choice(ANSWER_FORMS)),
                "confidence": round(confidence, 4), "user_id": user, "channel": "chat",
                "handed_over": rng.random() < 0.02, "ab_variant": variant,
                "asked_at": at.isoformat(), "answered_at": answered.isoformat()})
            at = answered + timedelta(seconds=rng.randint(5, 120))
    return turns


CALL_OPENINGS = ["Thanks for calling, this is {a}, how can I help you today?",
                 "Good morning, you're through to customer service, {a} speaking.",
                 "Hello, {a} here from the shop. What can I do for you?"]
COMPLAINTS = ["I've been waiting two weeks for order {o} and nobody answers my emails, this is "
              "ridiculous.",
              "The {p} arrived broken and the box was damaged, I'm really unhappy.",
              "This is the third time I call, I was overcharged for the {p} and it's still "
              "not fixed."]
CUSTOMER_OPENINGS = ["Hi, I'm calling about an order I placed last week.",
                     "Hello, I have a couple of questions about your products.",
                     "Hi there. I bought a {p} from you and need some help.",
                     "Yes hello, my name is {nm}, I'm a customer of yours."]
CALL_QUESTIONS = [
    ("Do you ship the {p} to {c}?",
     "Yes, we ship the {p} to {c}, it usually takes {d} working days."),
    ("How long is the warranty on the {p}?",
     "The {p} comes with a {w}-year warranty covering manufacturing faults."),
    ("Can I return the {p} if I don't like it?",
     "Yes, you have 30 days to return the {p} unused, the return label is free."),
    ("What does shipping cost for the {p}?",
     "Shipping the {p} is {s} euros, and free on orders above fifty euros."),
    ("Is the {p} model {n} dishwasher safe?",
     "The {p} model {n} is dishwasher safe except for the lid, which you wash by hand."),
    ("When will order {o} arrive?",
     "Order {o} was dispatched yesterday, so it should arrive within {d} days."),
    ("Where can I find spare parts for the {p}?",
     "Spare parts for the {p} are on our website under service, or we can post them."),
    ("Does the {p} work on 110 volts?",
     "No, the {p} is built for 230 volts, you would need a transformer."),
    ("Can I pay for the {p} in instalments?",
     "Yes, at checkout you can split the price of the {p} into three payments."),
    ("How do I descale the {p}?",
     "Run the descaler through the {p} once a month, the manual has the exact steps."),
]
SMALL_TALK = [("Agent", "Can I have your order number, please?"),
              ("Customer", "Yes, it's {o}."),
              ("Agent", "Thank you, I have your account open now."),
              ("Customer", "Great, thanks."),
              ("Agent", "And could you confirm your postcode?"),
              ("Customer", "It's {pc}.")]


def make_transcripts(count: int, seed: int) -> list[str]:
    """Calls of 6-14 turns in which the customer asks 1-3 questions the agent answers."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        values = {"a": rng.choice(["Anna", "Ben", "Chloe", "David", "Emma"]),
                  "nm": rng.choice(["Maria Lopez", "Tom Becker", "Sara Jensen", "Ali Khan"]),
                  "p": rng.choice(PRODUCTS), "c": rng.choice(COUNTRIES),
                  "n": rng.randint(100, 9_999), "o": rng.randint(10_000, 999_999),
                  "d": rng.randint(1, 9), "w": rng.randint(1, 5), "pc": rng.randint(1000, 99999),
                  "s": rng.choice(["4.90", "6.50", "9.90"])}
        size = rng.randint(6, 14)
        asked = max(1, min(rng.randint(1, 3), (size - 4) // 2))
        spare = size - 4 - 2 * asked  # lines beyond greeting, questions+answers and goodbye
        small_talk = min(spare // 2, 3) * 2
        spare -= small_talk
        opening = rng.choice(COMPLAINTS if rng.random() < 0.15 else CUSTOMER_OPENINGS)
        lines = [("Agent", rng.choice(CALL_OPENINGS)), ("Customer", opening),
                 *SMALL_TALK[:small_talk]]
        for question, answer in rng.sample(CALL_QUESTIONS, asked):
            lines.append(("Customer", question))
            if spare and rng.random() < 0.5:
                lines.append(("Agent", rng.choice(["One moment, let me check that.",
                                                   "Let me see. Good question."])))
                spare -= 1
            lines.append(("Agent", answer))
            if spare and rng.random() < 0.5:
                lines.append(("Customer", rng.choice(["Okay, thanks.", "That's great to hear.",
                                                      "Right, I see."])))
                spare -= 1
        lines.append(("Agent", "Is there anything else I can help with?"))
        lines.append(("Customer", "No, that's all, thank you very much."))
        for extra in ("You're welcome, have a nice day.", "Bye now.", "Bye."):
            if spare:
                lines.append(("Agent" if extra.startswith("You") else "Customer", extra))
                spare -= 1
        names = {"Agent": rng.choice(["Agent", "Support", "Rep"]),
                 "Customer": rng.choice(["Customer", "Caller"])}
        out.append("\n".join(f"{names[who]}: {text.format(**values)}" for who, text in lines))
    return out


def postgres_pids(settings: Settings) -> list[int] | None:
    """The embedded server's processes (its postmaster and backends), not those of other
    PostgreSQL servers on the machine; None when the database is not ours to look at."""
    pid_file = settings.pgdata_dir / "postmaster.pid"
    try:
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [postmaster.pid, *(p.pid for p in postmaster.children(recursive=True))]
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def snapshot(settings: Settings, server_pid: int) -> tuple[float, float, float]:
    """CPU seconds so far of this client, the server and PostgreSQL (with the backends that
    ended, which the postmaster has reaped)."""
    pids = postgres_pids(settings)
    if pids is None:
        return cpu_snapshot(server_pid)
    reaped = psutil.Process(pids[0]).cpu_times()
    return (time.process_time(), cpu_seconds([server_pid]),
            cpu_seconds(pids) + reaped.children_user + reaped.children_system)


def cpu_since(before: tuple[float, float, float], settings: Settings, server_pid: int,
              per: float) -> dict[str, float]:
    """Milliseconds of CPU since `before`, per `per` units of work."""
    after = snapshot(settings, server_pid)
    return {name: round((b - a) / per * 1000, 2) for name, a, b in
            zip(("client_cpu_ms", "server_cpu_ms", "postgres_cpu_ms"), before, after,
                strict=True)}


async def drive(base: str, key: str, path: str, bodies: list[bytes], concurrency: int,
                check: Callable[[str, int, bytes], None]
                ) -> tuple[float, list[float], list[dict[str, Any]]]:
    """POST every body once over `concurrency` keep-alive connections; each response goes to
    `check`. The wall time, latencies (ms) and the responses."""
    queue = list(enumerate(bodies))
    queue.reverse()
    latencies: list[float] = []
    answers: list[dict[str, Any]] = [{} for _ in bodies]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            index, body = queue.pop()
            started = time.perf_counter()
            async with session.post(f"{base}{path}", data=body) as r:
                raw = await r.read()
            latencies.append((time.perf_counter() - started) * 1000)
            check(path, r.status, raw)
            answers[index] = json.loads(raw)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers=headers, connector=connector,
                                     timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, answers


def expect(status: int) -> Callable[[str, int, bytes], None]:
    def check(path: str, got: int, raw: bytes) -> None:
        if got != status:
            raise SystemExit(f"POST {path} -> {got}: {raw.decode(errors='replace')[:2000]}")
    return check


def ms(values: list[float]) -> dict[str, float]:
    return {k: round(v, 1) if k != "n" else v for k, v in summary(values).items()}


async def logging_phase(base: str, key: str, args: argparse.Namespace, run: str,
                        settings: Settings, pid: int) -> dict[str, Any]:
    turns = make_turns(args.turns, run, seed=11)
    bodies = [json.dumps({"turns": turns[i:i + BATCH]}).encode()
              for i in range(0, len(turns), BATCH)]
    low = sum(t["confidence"] < 0.4 for t in turns)
    handed = sum(t["handed_over"] for t in turns)
    before = snapshot(settings, pid)
    elapsed, latencies, answers = await drive(base, key, "/v1/conversations/bulk", bodies,
                                              args.concurrency, expect(200))
    cpu = cpu_since(before, settings, pid, len(turns) / 1000)
    stored = sum(a["stored"] for a in answers)
    already = sum(a["already_stored"] for a in answers)
    # Idempotency: the first batch again, as a client retrying after a lost response would.
    _, _, again = await drive(base, key, "/v1/conversations/bulk", bodies[:1], 1, expect(200))
    first = answers[0]
    return {
        "turns_sent": len(turns), "batches": len(bodies), "batch_size": BATCH,
        "clients": args.concurrency, "low_confidence_turns": low, "handed_over_turns": handed,
        "stored": stored, "already_stored": already, "seconds": round(elapsed, 2),
        "turns_per_second": round(len(turns) / elapsed, 1),
        "batch_latency_ms": ms(latencies), "request_body_kb": round(
            sum(map(len, bodies)) / len(bodies) / 1024, 1),
        "cpu_per_1000_turns": cpu,
        "resent_batch": {"turns": again[0]["stored"] + again[0]["already_stored"],
                         "stored": again[0]["stored"],
                         "already_stored": again[0]["already_stored"],
                         "same_turn_ids": again[0]["turn_ids"] == first["turn_ids"]},
    }


def run_job(env: dict[str, str], job: str) -> tuple[float, str]:
    """`learnkb jobs run <job>` in its own process: its wall time and its output."""
    started = time.perf_counter()
    # The command is this environment's own learnkb script, never caller input.
    done = subprocess.run([learnkb_command(), "jobs", "run", job], env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return seconds, f"FAILED (exit {done.returncode}): {done.stderr.strip()[-1500:]}"
    return seconds, done.stdout.strip()


async def jobs_phase(rt: Runtime, env: dict[str, str], shop_id: int,
                     pid: int) -> dict[str, Any]:
    logged = await rt.pool.fetchval(
        "SELECT count(*) FROM conversation_memory WHERE shop_id = $1 AND logged", shop_id)
    unembedded = await rt.pool.fetchval(
        "SELECT count(*) FROM conversation_memory WHERE logged AND embedding IS NULL")
    before = snapshot(rt.settings, pid)
    refresh_s, refresh_out = await asyncio.to_thread(run_job, env, "refresh-metrics")
    refresh_cpu = cpu_since(before, rt.settings, pid, 1)
    # The same refresh without the CLI's start-up (interpreter, imports, pool, migrations check).
    started = time.perf_counter()
    await refresh_views(rt.pool)
    refresh_only_s = time.perf_counter() - started
    items_before = await rt.pool.fetchval(
        "SELECT count(*) FROM learning_queue WHERE shop_id = $1", shop_id)
    before = snapshot(rt.settings, pid)
    embed_s, embed_out = await asyncio.to_thread(run_job, env, "embed-turns")
    embed_cpu = cpu_since(before, rt.settings, pid, 1)
    how, cli_error = "cli", embed_out
    if embed_out.startswith("FAILED"):
        # The CLI could not run it: the same job in this process, so the figure still exists.
        how = "in-process fallback (the CLI failed, see cli_error)"
        if not rt.embedder.ready:
            await asyncio.to_thread(rt.embedder.load)
        before = snapshot(rt.settings, pid)
        started = time.perf_counter()
        embed_out = await embed_turns.run(rt)
        embed_s = time.perf_counter() - started
        embed_cpu = cpu_since(before, rt.settings, pid, 1)
    found = re.search(r"embedded (\d+) logged turns; (\d+) knowledge gaps", embed_out)
    embedded, gaps = (int(found[1]), int(found[2])) if found else (0, 0)
    items_after = await rt.pool.fetchval(
        "SELECT count(*) FROM learning_queue WHERE shop_id = $1", shop_id)
    return {
        "logged_turns_in_shop": int(logged), "unembedded_turns_before": int(unembedded),
        "refresh_metrics": {"cli_seconds": round(refresh_s, 2),
                            "job_only_seconds": round(refresh_only_s, 2),
                            "postgres_cpu_seconds": round(refresh_cpu["postgres_cpu_ms"] / 1000,
                                                          2),
                            "output": refresh_out},
        "embed_turns": {"run": how, "seconds": round(embed_s, 1), "embedded": embedded,
                        "gaps_submitted": gaps,
                        "turns_per_second": round(embedded / embed_s, 1) if embedded else None,
                        "queue_items_added": int(items_after - items_before),
                        "postgres_cpu_seconds": round(embed_cpu["postgres_cpu_ms"] / 1000, 1),
                        "embedding_process_cpu_seconds": round(
                            embed_cpu["client_cpu_ms"] / 1000, 1) if how != "cli" else None,
                        "output": embed_out,
                        **({"cli_error": cli_error} if how != "cli" else {})},
    }


async def transcript_phase(base: str, key: str, args: argparse.Namespace,
                           settings: Settings, pid: int) -> dict[str, Any]:
    texts = make_transcripts(args.transcripts, seed=int(time.time()))
    bodies = [json.dumps({"transcript": t, "format": "text"}).encode() for t in texts]
    before = snapshot(settings, pid)
    elapsed, latencies, answers = await drive(base, key, "/v1/transcripts", bodies,
                                              args.concurrency, expect(201))
    cpu = cpu_since(before, settings, pid, len(texts))
    outcomes: Counter[str] = Counter()
    for a in answers:
        for q in a["queued"]:
            outcomes[str(q.get("outcome", q.get("status", "?")))] += 1
    turns = [t.count("\n") + 1 for t in texts]
    return {
        "transcripts": len(texts), "clients": args.concurrency,
        "turns_per_call": {"min": min(turns), "max": max(turns),
                           "mean": round(sum(turns) / len(turns), 1)},
        "seconds": round(elapsed, 2), "transcripts_per_second": round(len(texts) / elapsed, 1),
        "latency_ms": ms(latencies), "cpu_per_transcript": cpu,
        "pairs_extracted": sum(len(a["pairs"]) for a in answers),
        "unanswered": sum(len(a["unanswered"]) for a in answers),
        "queue_outcomes": dict(outcomes),
        "sentiments": dict(Counter(a["sentiment"] for a in answers)),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    # The model is only needed here to load the shop's knowledge.
    rt = await open_runtime(settings, load_model=args.entries > 0)
    run = uuid.uuid4().hex[:8]  # turn ids of this run: a reused data dir never collides
    try:
        started = time.perf_counter()
        try:
            shop_id = (await shops.get_shop(rt.pool, SHOP)).id
        except NotFound:
            shop_id = (await load_shop(rt, SHOP, args.entries, seed=1) if args.entries
                       else (await shops.create_shop(rt.pool, SHOP, SHOP)).id)
            await rt.pool.execute("ANALYZE")
        setup_s = time.perf_counter() - started
        bot = (await keys.create_key(rt.pool, Role.BOT, shop_id, "bench")).secret
        env = dict(os.environ)
        env.update(LEARNKB_DATABASE_URL=rt.database_url, LEARNKB_DATA_DIR=str(data),
                   LEARNKB_LOG_LEVEL="warning")
        report: dict[str, Any] = {
            "data_dir": str(data), "knowledge_entries": args.entries,
            "setup_seconds": round(setup_s, 1),
            "server": "learnkb serve --no-jobs (jobs run by this benchmark via the CLI)",
            "cpus": os.cpu_count(), "targets": TARGETS}
        with served(rt.database_url, data, free_port()) as (base, pid):
            report["bulk_logging"] = await logging_phase(base, bot, args, run, settings, pid)
            report["jobs"] = await jobs_phase(rt, env, shop_id, pid)
            report["transcript_intake"] = await transcript_phase(base, bot, args, settings,
                                                                 pid)
    finally:
        await rt.close()
    return report


def human(report: dict[str, Any]) -> str:
    b, j, t = report["bulk_logging"], report["jobs"], report["transcript_intake"]
    r, e = j["refresh_metrics"], j["embed_turns"]

    def mark(ok: bool) -> str:
        return "OK  " if ok else "MISS"

    resent = b["resent_batch"]
    refreshed = (r["cli_seconds"] <= TARGETS["refresh_metrics_seconds"]
                 and not r["output"].startswith("FAILED"))
    lines = [
        "",
        f"intake throughput ({report['cpus']} CPUs, {report['server']})",
        f"  {mark(b['turns_per_second'] >= TARGETS['turns_per_second'])} bulk logging: "
        f"{b['turns_per_second']:,.0f} turns/s (target >= 2,000) - {b['turns_sent']:,} turns "
        f"in {b['seconds']} s, {b['clients']} clients, batch p50 "
        f"{b['batch_latency_ms']['p50']} ms / p95 {b['batch_latency_ms']['p95']} ms",
        f"       CPU per 1,000 turns: server {b['cpu_per_1000_turns']['server_cpu_ms']} ms, "
        f"postgres {b['cpu_per_1000_turns']['postgres_cpu_ms']} ms, client "
        f"{b['cpu_per_1000_turns']['client_cpu_ms']} ms",
        f"  {mark(resent['stored'] == 0 and resent['same_turn_ids'])} resent batch: stored "
        f"{resent['stored']} of {resent['turns']} again, same turn ids: "
        f"{resent['same_turn_ids']}",
        f"  {mark(refreshed)} learnkb jobs run "
        f"refresh-metrics: {r['cli_seconds']} s (target <= 5; the refresh alone "
        f"{r['job_only_seconds']} s) over {j['logged_turns_in_shop']:,} logged turns",
        f"       embed-turns ({e['run']}): {e['seconds']} s, {e['embedded']:,} turns "
        f"embedded ({e['turns_per_second']} turns/s, no target), {e['gaps_submitted']:,} "
        f"gaps submitted -> {e['queue_items_added']:,} new queue items",
        f"  {mark(t['transcripts_per_second'] >= TARGETS['transcripts_per_second'])} "
        f"transcripts: {t['transcripts_per_second']} /s (target >= 20) - {t['transcripts']:,} "
        f"calls in {t['seconds']} s, p50 {t['latency_ms']['p50']} ms / p95 "
        f"{t['latency_ms']['p95']} ms, {t['pairs_extracted']:,} pairs",
        f"       CPU per transcript: server {t['cpu_per_transcript']['server_cpu_ms']} ms, "
        f"postgres {t['cpu_per_transcript']['postgres_cpu_ms']} ms",
    ]
    for name, failed in (("refresh-metrics", r["output"]), ("embed-turns", e.get("cli_error"))):
        if failed and failed.startswith("FAILED"):
            lines.append(f"  ERROR learnkb jobs run {name}: {failed}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = benchmark_parser(__doc__, entries=1_000)
    parser.set_defaults(concurrency=4)
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--transcripts", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 10,000 turns, 100 transcripts, 200 entries")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.turns, arguments.transcripts = 10_000, 100
        arguments.entries = min(arguments.entries, 200)
    result = asyncio.run(main(arguments))
    publish(arguments.out, "intake_throughput", result, human(result))
