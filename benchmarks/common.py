"""Shared helpers for the benchmarks: a database, synthetic shop knowledge, a served instance."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from evaluation.instance import served as serve_process

PRODUCTS = ["grinder", "kettle", "espresso machine", "milk frother", "scale", "tamper",
            "dripper", "coffee beans", "filter papers", "thermometer", "mug", "carafe",
            "moka pot", "cold brew jar", "knock box", "cleaning tablets", "descaler",
            "portafilter", "burr set", "water filter"]
TOPICS = ["warranty", "delivery time", "return policy", "price", "cleaning", "spare parts",
          "colour options", "power usage", "noise level", "size", "discount", "availability",
          "instructions", "compatibility", "gift wrapping", "reviews", "voltage", "materials",
          "dishwasher safety", "capacity", "setup", "repairs", "stock", "shipping cost"]
FORMS = ["What is the {t} of the {p} {n}?", "Tell me about {t} for model {n} {p}",
         "{p} {n}: how does {t} work?", "Question on {t} regarding the {p} series {n}",
         "Can you explain the {t} of your {p} {n}?", "I need details on {t}, {p} {n}",
         "How is {t} handled for the {p} {n}?", "Where do I find {t} info for {p} {n}?"]


def questions(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(FORMS).format(t=rng.choice(TOPICS), p=rng.choice(PRODUCTS),
                                     n=rng.randint(100, 99_999)) for _ in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "n": len(values)}


def benchmark_parser(doc: str, entries: int = 10_000) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--entries", type=int, default=entries)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url")
    parser.add_argument("--data-dir", help="reused when it already holds the loaded shops")
    parser.add_argument("--out", default="benchmarks/out")
    return parser


def write_report(out_dir: str, name: str, report: dict[str, Any]) -> None:
    """Print the figures and keep them as JSON under out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def publish(out_dir: str, name: str, report: dict[str, Any], summary: str) -> None:
    """The figures as JSON (printed and kept), then their summary (printed and kept beside)."""
    write_report(out_dir, f"{name}.json", report)
    print(summary)
    Path(out_dir, f"{name}.txt").write_text(summary + "\n")


def data_dir(given: str | None) -> Path:
    return Path(given) if given else Path(tempfile.mkdtemp(prefix="learnkb-bench-"))


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_snapshot(server_pid: int) -> tuple[float, float, float]:
    """CPU seconds used so far by this client, the server process and PostgreSQL."""
    postgres = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
    return time.process_time(), cpu_seconds([server_pid]), cpu_seconds(postgres)


def cpu_per_request(before: tuple[float, float, float], server_pid: int,
                    requests: int) -> dict[str, float]:
    """Where the CPU went since `before`, in milliseconds per request."""
    after = cpu_snapshot(server_pid)
    return {name: round((b - a) / requests * 1000, 2) for name, a, b in
            zip(("client_cpu_ms", "server_cpu_ms", "postgres_cpu_ms"), before, after,
                strict=True)}


@contextmanager
def served(database_url: str, data: Path, port: int) -> Iterator[tuple[str, int]]:
    """`learnkb serve` in its own process, as users run it."""
    env = dict(os.environ)  # LEARNKB_* settings given to the benchmark apply to the server
    env.update(LEARNKB_DATABASE_URL=database_url, LEARNKB_DATA_DIR=str(data),
               LEARNKB_LOG_LEVEL="warning")
    with serve_process(env, port) as (base, pid):
        yield base, pid


def machine(load_before: tuple[float, float, float], **more: Any) -> dict[str, Any]:
    """What a report says of the machine it ran on, with the load around the measurement
    (anything else running on the machine inflates the figures)."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), **more,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}
