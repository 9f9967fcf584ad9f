"""`learnkb eval retrieval`: one entry per label, every query asked, ranking and fallback."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

from evaluation.client import Api, ShopKeys, create_shop, each
from evaluation.common import Answers, add_common_options, instance_and_api, source_label
from evaluation.datasets import Example, first_per_label, read_examples
from evaluation.metrics import grid, hit_at, mrr, rank_of, sweep
from evaluation.report import figure, save, table, write_json
from knowledge.settings import Settings

RANKED = 10
ENTRY_BATCH = 50


def add_parser(sub: Any) -> None:
    p = sub.add_parser("retrieval", help="hit@1, hit@5, MRR and fallback decisions of the "
                       "answer path, one knowledge entry per label")
    p.add_argument("--kb", type=Path, required=True, help="CSV text,label: questions the "
                   "knowledge entries are built from")
    p.add_argument("--queries", type=Path, required=True, help="CSV text,label: questions asked")
    p.add_argument("--per-label", type=int, default=10,
                   help="known questions per entry: the first K of each label in --kb")
    add_common_options(p)


async def seed_knowledge(api: Api, shop: ShopKeys, texts: dict[str, list[str]],
                         answers: Answers) -> int:
    """One entry per label: its answer, its first question and the rest as variants."""
    bodies = [{"question": qs[0], "variants": qs[1:], "answer": answers.of_label[label],
               "category": label[:100]} for label, qs in texts.items() if qs]
    for start in range(0, len(bodies), ENTRY_BATCH):
        await api.call("POST", "/v1/knowledge", shop.owner,
                       json=bodies[start:start + ENTRY_BATCH])
    return len(bodies)


async def ask(api: Api, shop: ShopKeys, queries: list[Example], answers: Answers,
              concurrency: int, description: str, search: bool = True) -> list[dict[str, Any]]:
    """Every query through /v1/answer (what the bot does) and /v1/search (the ranking). They
    are asked as test traffic: a fallback opens no knowledge gap, nothing is learnt."""
    async def one(example: Example) -> dict[str, Any]:
        said = await api.call("POST", "/v1/answer", shop.bot,
                              json={"question": example.text, "learn": False})
        row: dict[str, Any] = {
            "label": example.label, "tier": said["tier"], "confidence": said["confidence"],
            "fallback": said["fallback"], "answer_label": source_label(said, answers)}
        if search:
            found = await api.call("GET", "/v1/search", shop.bot,
                                   params={"q": example.text, "limit": RANKED})
            results = found["results"]
            row["ranked"] = [answers.label_of(r["answer"]) for r in results]
            row["top_similarity"] = results[0]["similarity"] if results else None
            row["top_lexical"] = bool(results) and results[0]["lexical_rank"] is not None
        return row

    return await each(queries, one, concurrency, description)


def ranking_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ranks = [rank_of(r["ranked"], r["label"]) for r in rows]
    tiers = Counter(r["tier"] for r in rows)
    answered = [r for r in rows if r["tier"] == "answer"]
    return {
        "queries": len(rows),
        "hit_at_1": round(hit_at(ranks, 1), 4), "hit_at_5": round(hit_at(ranks, 5), 4),
        "mrr": round(mrr(ranks), 4),
        "hit_at_k": [round(hit_at(ranks, k), 4) for k in range(1, RANKED + 1)],
        "answer_path_hit_at_1": round(
            sum(r["answer_label"] == r["label"] for r in rows) / len(rows), 4) if rows else 0.0,
        "tiers": dict(tiers),
        "answered_right": sum(r["answer_label"] == r["label"] for r in answered),
        "answered_wrong": sum(r["answer_label"] != r["label"] for r in answered),
    }


def fallback_figures(inscope: list[dict[str, Any]], oos: list[dict[str, Any]],
                     default: float) -> dict[str, Any]:
    """The fallback decision (positive: "fall back") against the truth (out of scope), at the
    service's rule, nothing near enough and no rare word in common, across similarity floors."""
    rows = oos + inscope
    truth = [True] * len(oos) + [False] * len(inscope)

    def falls_back(i: int, floor: float) -> bool:
        r = rows[i]
        near = r["top_similarity"] is not None and r["top_similarity"] >= floor
        return not near and not r["top_lexical"]

    decisions = sweep(truth, falls_back, grid(0.1, 0.8, 0.05, default))
    curve = []
    for d in decisions:
        entry = d.as_dict()
        entry["inscope_answered"] = round(d.true_negative / len(inscope), 4) if inscope else 0.0
        entry["default"] = abs(d.threshold - default) < 1e-9
        curve.append(entry)
    served = sum(r["fallback"] for r in oos)
    return {"out_of_scope_queries": len(oos), "default_floor": default,
            "served_out_of_scope_fallbacks": served,
            "served_inscope_fallbacks": sum(r["fallback"] for r in inscope),
            "curve": curve}


def plot(report: dict[str, Any], out: Path) -> Path:
    has_oos = "fallback" in report
    fig, axes = figure(1, 2 if has_oos else 1, (11.0 if has_oos else 6.5, 4.5))
    ax = axes[0][0]
    ks = list(range(1, RANKED + 1))
    ax.plot(ks, report["ranking"]["hit_at_k"], marker="o")
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k")
    ax.set_ylim(0, 1)
    ax.set_title(f"hit@k, {report['entries']} entries, K={report['per_label']} questions each")
    ax.grid(alpha=0.3)
    if has_oos:
        curve = report["fallback"]["curve"]
        ax = axes[0][1]
        xs = [c["threshold"] for c in curve]
        ax.plot(xs, [c["precision"] for c in curve], label="fallback precision")
        ax.plot(xs, [c["recall"] for c in curve], label="fallback recall (out of scope)")
        ax.plot(xs, [c["inscope_answered"] for c in curve], label="in scope not fallen back")
        ax.axvline(report["fallback"]["default_floor"], color="grey", linestyle="--",
                   label="service default")
        ax.set_xlabel("similarity floor")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save(fig, out, "retrieval.png")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kb = read_examples(args.kb)
    queries = read_examples(args.queries)
    if args.per_label < 1:
        raise ValueError("--per-label is at least 1")
    labels = sorted({e.label for e in kb if e.label != args.oos_label})
    answers = Answers.for_labels(labels, args.answers)
    texts = first_per_label([e for e in kb if e.label != args.oos_label], args.per_label)
    started = time.monotonic()
    async with instance_and_api(args) as (instance, api):
        shop = await create_shop(api, instance.admin_key, "eval-retrieval")
        entries = await seed_knowledge(api, shop, texts, answers)
        rows = await ask(api, shop, queries, answers, args.concurrency, "queries")
    inscope = [r for r in rows if r["label"] != args.oos_label]
    oos = [r for r in rows if r["label"] == args.oos_label]
    report: dict[str, Any] = {
        "command": "learnkb eval retrieval", "kb": str(args.kb), "queries": str(args.queries),
        "per_label": args.per_label, "entries": entries,
        "ranking": ranking_figures(inscope),
        "seconds": round(time.monotonic() - started, 1),
    }
    if oos:
        default = Settings.from_env().fallback_min_similarity
        report["fallback"] = fallback_figures(inscope, oos, default)
    write_json(args.out, "retrieval.json", report)
    plot(report, args.out)
    print(summary(report))
    return report


def summary(report: dict[str, Any]) -> str:
    r = report["ranking"]
    lines = [table([{"queries": r["queries"], "entries": report["entries"],
                     "K": report["per_label"], "hit@1": r["hit_at_1"], "hit@5": r["hit_at_5"],
                     "MRR": r["mrr"], "bot hit@1": r["answer_path_hit_at_1"]}],
                   ["queries", "entries", "K", "hit@1", "hit@5", "MRR", "bot hit@1"],
                   "retrieval (in-scope queries)")]
    tiers = r["tiers"]
    lines.append("tiers: " + ", ".join(f"{k} {v}" for k, v in sorted(tiers.items())))
    if "fallback" in report:
        curve = report["fallback"]["curve"]
        lines.append(table([{**c, "": "<- default" if c["default"] else ""} for c in curve],
                           ["threshold", "precision", "recall", "f1", "inscope_answered", ""],
                           "fallback decision (positive = out of scope)"))
    return "\n\n".join(lines)
