"""`learnkb eval duplicates`: the queue's same-question decision on labelled question pairs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from evaluation.client import Api, ShopKeys, create_shop, each
from evaluation.common import add_common_options, instance_and_api
from evaluation.datasets import Example, Pair, read_examples, read_pairs
from evaluation.metrics import grid, sweep
from evaluation.report import figure, save, table, write_json

COMPARE_BATCH = 256  # the service's limit per request
ENTRY_BATCH = 100


def add_parser(sub: Any) -> None:
    p = sub.add_parser("duplicates", help="precision, recall and F1 of deduplication on "
                       "question pairs, across similarity thresholds")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--pairs", type=Path, help="CSV text_a,text_b,duplicate (1 or 0)")
    given.add_argument("--queries", type=Path, help="CSV text,label: each question is paired "
                       "with its nearest others; the same label makes a duplicate")
    p.add_argument("--neighbours", type=int, default=5,
                   help="with --queries: nearest other questions each is paired with")
    add_common_options(p)


async def nearest_pairs(api: Api, shop: ShopKeys, queries: list[Example], neighbours: int,
                        concurrency: int) -> list[Pair]:
    """Pairs of each question with the questions the service finds nearest to it: the
    candidates deduplication weighs, where its mistakes would be (random pairs are easy)."""
    texts = list(dict.fromkeys(q.text for q in queries))
    label = {q.text: q.label for q in queries}
    for start in range(0, len(texts), ENTRY_BATCH):
        # Each question an entry of its own; its answer repeats it, so no label leaks in.
        await api.call("POST", "/v1/knowledge", shop.owner, json=[
            {"question": t, "answer": t} for t in texts[start:start + ENTRY_BATCH]])

    async def near(text: str) -> list[str]:
        found = await api.call("GET", "/v1/search", shop.bot,
                               params={"q": text, "limit": neighbours + 1})
        return [r["question"] for r in found["results"] if r["question"] != text][:neighbours]

    seen: set[tuple[str, str]] = set()
    pairs = []
    for text, others in zip(texts, await each(texts, near, concurrency, "neighbours"),
                            strict=True):
        for other in others:
            key = (min(text, other), max(text, other))
            if other in label and key not in seen:
                seen.add(key)
                pairs.append(Pair(text, other, label[text] == label[other]))
    return pairs


async def judge(api: Api, shop: ShopKeys, pairs: list[Pair],
                concurrency: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The service's decision and evidence for every pair, and the thresholds it used."""
    batches = [pairs[i:i + COMPARE_BATCH] for i in range(0, len(pairs), COMPARE_BATCH)]

    async def one(batch: list[Pair]) -> dict[str, Any]:
        result: dict[str, Any] = await api.call(
            "POST", "/v1/queue/compare", shop.owner,
            json={"pairs": [{"a": p.a, "b": p.b} for p in batch]})
        return result

    answers = await each(batches, one, max(1, concurrency // 4), "pairs")
    settings = {"question_similarity": answers[0]["question_similarity"],
                "text_ratio": answers[0]["text_ratio"]}
    return settings, [r for a in answers for r in a["results"]]


def figures(pairs: list[Pair], results: list[dict[str, Any]], default: float
            ) -> dict[str, Any]:
    truth = [p.duplicate for p in pairs]
    up_to = [r["duplicate_up_to"] for r in results]

    def duplicate(i: int, threshold: float) -> bool:
        return up_to[i] is not None and up_to[i] >= threshold

    curve = [{**d.as_dict(), "default": abs(d.threshold - default) < 1e-9}
             for d in sweep(truth, duplicate, grid(0.5, 1.0, 0.02, default))]
    at_default = next(c for c in curve if c["default"])
    said = [r["duplicate"] for r in results]
    return {"pairs": len(pairs), "duplicates": sum(truth),
            "default_threshold": default, "at_default": at_default,
            # The sweep re-derives the decision from the evidence: it must agree with the
            # service's own decision at the service's threshold.
            "service_agrees_at_default": sum(
                duplicate(i, default) == s for i, s in enumerate(said)) == len(said),
            "best_f1": max(curve, key=lambda c: c["f1"]), "curve": curve}


def plot(report: dict[str, Any], out: Path) -> Path:
    fig, axes = figure(1, 1, (7.0, 4.5))
    ax = axes[0][0]
    curve = report["curve"]
    xs = [c["threshold"] for c in curve]
    for name in ("precision", "recall", "f1"):
        ax.plot(xs, [c[name] for c in curve], label=name)
    ax.axvline(report["default_threshold"], color="grey", linestyle="--",
               label="shop default")
    ax.set_xlabel("question similarity threshold")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"deduplication on {report['pairs']} pairs ({report['duplicates']} duplicates)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out, "duplicates.png")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.neighbours < 1:
        raise ValueError("--neighbours is at least 1")
    pairs = read_pairs(args.pairs) if args.pairs else None
    queries = read_examples(args.queries) if args.queries else None
    started = time.monotonic()
    async with instance_and_api(args) as (instance, api):
        shop = await create_shop(api, instance.admin_key, "eval-duplicates")
        if pairs is None:
            assert queries is not None
            pairs = await nearest_pairs(api, shop, queries, args.neighbours, args.concurrency)
        if not pairs:
            raise ValueError("no question pairs to judge")
        settings, results = await judge(api, shop, pairs, args.concurrency)
    report: dict[str, Any] = {
        "command": "learnkb eval duplicates",
        "source": str(args.pairs or args.queries),
        "pairs_from": "file" if args.pairs else f"{args.neighbours} nearest per question",
        "text_ratio": settings["text_ratio"],
        **figures(pairs, results, settings["question_similarity"]),
        "seconds": round(time.monotonic() - started, 1)}
    write_json(args.out, "duplicates.json", report)
    plot(report, args.out)
    print(summary(report))
    return report


def summary(report: dict[str, Any]) -> str:
    rows = [{**c, "": "<- default" if c["default"] else ""} for c in report["curve"]]
    return table(rows, ["threshold", "precision", "recall", "f1", "tp", "fp", "fn", ""],
                 f"deduplication: {report['pairs']} pairs, {report['duplicates']} duplicates "
                 f"(same label)")
