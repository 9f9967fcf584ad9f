"""Benchmark of the review listing: `GET /v1/queue` and `/admin/queue` with 100,000 queue items
in one shop (target: each listing's p95 <= 50 ms).

Loads one shop as benchmarks/pages.py does (its functions: --entries knowledge entries beside
a small shop, --turns answered turns, --items learning-queue items, mostly pending, every kind,
source, priority and status, 1 to 400 observations, most beside their real nearest entry), then
serves learnkb in its own process (`--no-jobs`) and times, one request at a time over loopback,
the API's listing with an owner key (the default, each filter, each sort, a far page) and the
review page signed in as a browser is (the default, a filtered one, a far page): p50 / p95 /
max of the wall time (an upper bound on the server's time), with the server's and PostgreSQL's
CPU per request beside it. The API has no text search of the queue, so none is timed.

    .venv/bin/python -m benchmarks.review_listing [--items 100000] [--requests 30] [--data-dir D]
    .venv/bin/python -m benchmarks.review_listing --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp

from benchmarks.common import benchmark_parser, data_dir, machine, publish, served
from benchmarks.pages import (
    WARM_UP,
    PageCase,
    setup,
    sign_in,
    sizes,
    time_page,
    timing_table,
)
from evaluation.instance import free_port
from knowledge.runtime import open_runtime
from knowledge.settings import Settings

SHOP, SMALL_SHOP = "listing-bench", "listing-bench-small"
TARGET_MS = 50.0


def api_cases(items: int) -> list[PageCase]:
    """The API's listing: the default (any status, by priority), each filter, each sort of the
    pending items (as a reviewer works through them), a far page."""
    week_ago = (datetime.now(UTC) - timedelta(days=7)).isoformat(timespec="seconds")
    far = min(50_000, items // 2)

    def case(label: str, **query: Any) -> PageCase:
        return PageCase(label, "GET", "/v1/queue" + (f"?{urlencode(query)}" if query else ""))

    return [
        case("default: any status, by priority"),
        case("status: pending", status="pending"),
        case("status: approved", status="approved"),
        case("status: rejected", status="rejected"),
        case("kind: gap", kind="gap"),
        case("source: transcript", source="transcript"),
        case("priority: urgent", priority="urgent"),
        case("conflicts", conflict="true"),
        case("created in the last 7 days", since=week_ago),
        case("pending high-priority handovers", status="pending", kind="gap",
             source="handover", priority="high"),
        *[case(f"pending, sort: {sort}", status="pending", sort=sort)
          for sort in ("priority", "observations", "age", "newest", "confidence",
                       "similarity")],
        case("pending, 100 a page", status="pending", limit=100),
        case(f"far page: any status, offset {far:,}", offset=far),
        case(f"far page: pending, newest, offset {far:,}", status="pending", sort="newest",
             offset=far),
    ]


def page_cases(items: int) -> list[PageCase]:
    far = min(50_000, items // 2)
    return [PageCase("page: pending, by priority", "GET", "/admin/queue"),
            PageCase("page: pending gaps, by observations", "GET",
                     "/admin/queue?kind=gap&sort=observations"),
            PageCase(f"page: far page, offset {far:,}", "GET", f"/admin/queue?offset={far}")]


async def measure(base: str, key: str, items: int, requests: int, settings: Settings,
                  pid: int) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=120)
    timed = []
    async with aiohttp.ClientSession(
            timeout=timeout, headers={"Authorization": f"Bearer {key}"}) as api:
        for case in api_cases(items):
            timed.append(await time_page(api, base, case, "", [], requests, settings, pid,
                                         target_ms=TARGET_MS))
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, as a browser keeps them
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as browser:
        csrf = await sign_in(browser, base, key)
        for case in page_cases(items):
            timed.append(await time_page(browser, base, case, csrf, [], requests, settings,
                                         pid, target_ms=TARGET_MS))
    return timed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir(args.data_dir)
    settings = Settings.from_env(data_dir=data, database_url=args.database_url, run_jobs=False)
    rt = await open_runtime(settings)
    try:
        args.audit = 0  # the audit trail is not listed here
        prepared = await setup(rt, args, (SHOP, SMALL_SHOP))
        counted = await sizes(rt, prepared["shop_id"])
        load_before = os.getloadavg()
        with served(rt.database_url, data, free_port()) as (base, pid):
            listings = await measure(base, prepared["owner_secret"], args.items,
                                     args.requests, settings, pid)
        report: dict[str, Any] = {
            "target": f"every listing p95 <= {TARGET_MS:.0f} ms (loopback wall time of one "
                      "request at a time: an upper bound on server time)",
            "machine": machine(load_before),
            "data_dir": str(data), "server": "learnkb serve --no-jobs",
            "requests_per_listing": args.requests, "warm_up_per_listing": WARM_UP,
            "setup": prepared["timings"], "sizes": counted, "listings": listings,
            "misses": [p["path"] for p in listings if not p["ok"]],
        }
    finally:
        await rt.close()
    return report


def human(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["sizes"]["big_shop"]
    lines = [
        "",
        f"review listing ({m['cpus']} CPUs, {m['platform']}; {report['server']}; "
        f"{report['requests_per_listing']} requests each after "
        f"{report['warm_up_per_listing']} warm-up, one at a time; load average "
        f"{m['load_average_before'][0]} before, {m['load_average_after'][0]} after)",
        f"  shop: {s['learning_queue']:,} queue items "
        f"({s['learning_queue_by_status'].get('pending', 0):,} pending), "
        f"{s['knowledge_entries_live']:,} entries; setup {report['setup']['total_seconds']} s",
    ]
    lines += timing_table(report["listings"], report["misses"], "listing", TARGET_MS,
                          lambda p: f"{p['label']}: {p['path']}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = benchmark_parser(__doc__)
    parser.set_defaults(concurrency=1)  # not used: listings are timed one request at a time
    parser.add_argument("--items", type=int, default=100_000, help="learning-queue items")
    parser.add_argument("--turns", type=int, default=2_000,
                        help="answered turns of the shop (the signals' turns)")
    parser.add_argument("--requests", type=int, default=30, help="timed requests a listing")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 500 entries, 2,000 items, 500 turns, 5 requests "
                             "a listing")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.entries = min(arguments.entries, 500)
        arguments.items = min(arguments.items, 2_000)
        arguments.turns = min(arguments.turns, 500)
        arguments.requests = min(arguments.requests, 5)
    result = asyncio.run(main(arguments))
    publish(arguments.out, "review_listing", result, human(result))
