"""`learnkb eval retrieval`: knowledge per label, every query asked, ranking and scope."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from evaluation.client import Api, ShopKeys, create_shop, each
from evaluation.common import (
    Answers,
    add_common_options,
    add_scope_options,
    calibrate,
    instance_and_api,
    source_label,
)
from evaluation.datasets import Example, first_per_label, read_examples, read_texts
from evaluation.metrics import hit_at, mrr, rank_of
from evaluation.report import figure, save, table, write_json, write_jsonl
from evaluation.scope import (
    OOS,
    TIERS,
    choose_held_out,
    nearest_neighbour,
    relabel,
    scope_figures,
    tier_counts,
)

RANKED = 10
ENTRY_BATCH = 50           # entries per request
QUESTIONS_PER_REQUEST = 1000
# POST /v1/knowledge takes a question and at most 50 variants per entry.
QUESTIONS_PER_ENTRY = 51


def add_parser(sub: Any) -> None:
    p = sub.add_parser("retrieval", help="hit@1, hit@5, MRR, and what the bot does with "
                       "in-scope and out-of-scope questions beside a tuned nearest neighbour")
    p.add_argument("--kb", type=Path, required=True, help="CSV text,label: questions the "
                   "knowledge entries are built from")
    p.add_argument("--queries", type=Path, required=True, help="CSV text,label: questions asked")
    p.add_argument("--per-label", type=int, default=10,
                   help="known questions per label: the first K of each label in --kb (an "
                   f"entry holds up to {QUESTIONS_PER_ENTRY}; more make more entries)")
    add_common_options(p)
    add_scope_options(p)


def entry_bodies(texts: dict[str, list[str]], answers: Answers) -> list[dict[str, Any]]:
    """The entries of each label: its questions, at most QUESTIONS_PER_ENTRY to an entry (the
    first its question, the rest its variants), every one with the label's answer."""
    return [{"question": chunk[0], "variants": chunk[1:], "answer": answers.of_label[label],
             "category": label[:100]}
            for label, qs in texts.items()
            for chunk in (qs[i:i + QUESTIONS_PER_ENTRY]
                          for i in range(0, len(qs), QUESTIONS_PER_ENTRY))]


async def seed_knowledge(api: Api, shop: ShopKeys, texts: dict[str, list[str]],
                         answers: Answers) -> int:
    """The known questions of each label as entries with its answer; how many entries."""
    bodies = entry_bodies(texts, answers)
    batch: list[dict[str, Any]] = []
    questions = 0
    for body in [*bodies, None]:
        size = 0 if body is None else 1 + len(body["variants"])
        if batch and (body is None or len(batch) == ENTRY_BATCH
                      or questions + size > QUESTIONS_PER_REQUEST):
            await api.call("POST", "/v1/knowledge", shop.owner, json=batch)
            batch, questions = [], 0
        if body is not None:
            batch.append(body)
            questions += size
    return len(bodies)


async def ask(api: Api, shop: ShopKeys, queries: list[Example], answers: Answers,
              concurrency: int, description: str, search: bool = True) -> list[dict[str, Any]]:
    """Every query through /v1/answer (what the bot does) and /v1/search (the ranking). They
    are asked as test traffic: a fallback opens no knowledge gap, nothing is learnt."""
    async def one(example: Example) -> dict[str, Any]:
        said = await api.call("POST", "/v1/answer", shop.bot,
                              json={"question": example.text, "learn": False})
        row: dict[str, Any] = {
            "text": example.text, "label": example.label, "tier": said["tier"],
            "confidence": said["confidence"], "fallback": said["fallback"],
            "answer_label": source_label(said, answers), "scope": said.get("scope")}
        if search:
            found = await api.call("GET", "/v1/search", shop.bot,
                                   params={"q": example.text, "limit": RANKED})
            results = found["results"]
            row["ranked"] = [answers.label_of(r["answer"]) for r in results]
            # The plain nearest neighbour: the result whose nearest question is nearest.
            near = [r for r in results if r["similarity"] is not None]
            nearest = max(near, key=lambda r: float(r["similarity"])) if near else None
            row["nn_label"] = answers.label_of(nearest["answer"]) if nearest else None
            row["nn_similarity"] = nearest["similarity"] if nearest else None
        return row

    return await each(queries, one, concurrency, description)


def ranking_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ranks = [rank_of(r["ranked"], r["label"]) for r in rows]
    answered = [r for r in rows if r["tier"] == "answer"]
    return {
        "queries": len(rows),
        "hit_at_1": round(hit_at(ranks, 1), 4), "hit_at_5": round(hit_at(ranks, 5), 4),
        "mrr": round(mrr(ranks), 4),
        "hit_at_k": [round(hit_at(ranks, k), 4) for k in range(1, RANKED + 1)],
        "answer_path_hit_at_1": round(
            sum(r["answer_label"] == r["label"] for r in rows) / len(rows), 4) if rows else 0.0,
        "tiers": tier_counts(rows),
        "answered_right": sum(r["answer_label"] == r["label"] for r in answered),
        "answered_wrong": sum(r["answer_label"] != r["label"] for r in answered),
    }


def out_of_scope_questions(args: argparse.Namespace, kb: list[Example],
                           queries: list[Example]) -> tuple[list[str], list[Example],
                                                            list[Example], dict[str, int]]:
    """The held-out labels; the known questions left for knowledge; the questions asked, the
    out-of-scope ones labelled OOS; and where those came from."""
    oos_label = args.oos_label
    labels = sorted({e.label for e in kb + queries if e.label != oos_label})
    held = choose_held_out(labels, args.holdout_labels, args.seed)
    outside = set(held) | ({oos_label} if oos_label else set())
    extra = read_texts(args.oos) if args.oos else []
    asked = relabel(queries, outside) + [Example(t, OOS) for t in extra]
    sources = {"oos_label": sum(e.label == oos_label for e in queries),
               "held_out_labels": sum(e.label in set(held) for e in queries),
               "oos_file": len(extra)}
    return held, [e for e in kb if e.label not in outside], asked, sources


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kb = read_examples(args.kb)
    queries = read_examples(args.queries)
    if args.per_label < 1:
        raise ValueError("--per-label is at least 1")
    held, known_kb, asked, sources = out_of_scope_questions(args, kb, queries)
    labels = sorted({e.label for e in known_kb})
    answers = Answers.for_labels(labels, args.answers)
    texts = first_per_label(known_kb, args.per_label)
    started = time.monotonic()
    async with instance_and_api(args) as (instance, api):
        shop = await create_shop(api, instance.admin_key, "eval-retrieval")
        entries = await seed_knowledge(api, shop, texts, answers)
        calibration = await calibrate(api, shop)
        rows = await ask(api, shop, asked, answers, args.concurrency, "queries")
    inscope = [r for r in rows if r["label"] != OOS]
    ranking = ranking_figures(inscope)
    scope = {**scope_figures(rows), "in_scope_hit_at_1": ranking["hit_at_1"]}
    reference = nearest_neighbour(rows)
    ours, theirs = scope["answer_or_fallback_accuracy"], reference.get(
        "answer_or_fallback_accuracy")
    report: dict[str, Any] = {
        "command": "learnkb eval retrieval", "kb": str(args.kb), "queries": str(args.queries),
        "per_label": args.per_label, "labels": len(labels), "entries": entries,
        "holdout_fraction": args.holdout_labels, "seed": args.seed, "held_out_labels": held,
        "oos_label": args.oos_label, "oos_file": str(args.oos) if args.oos else None,
        "out_of_scope_sources": sources,
        "calibration": calibration,
        "ranking": ranking,
        "scope": scope,
        "nearest_neighbour": reference,
        "margin_over_nearest_neighbour": None if ours is None or theirs is None
        else round(ours - theirs, 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json(args.out, "retrieval.json", report)
    write_jsonl(args.out, "retrieval-queries.jsonl", rows)
    plot(report, args.out)
    print(summary(report))
    return report


def plot(report: dict[str, Any], out: Path) -> Path:
    fig, axes = figure(1, 3, (16.0, 4.5))
    ax = axes[0][0]
    ks = list(range(1, RANKED + 1))
    ax.plot(ks, report["ranking"]["hit_at_k"], marker="o")
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k (in scope)")
    ax.set_ylim(0, 1)
    ax.set_title(f"hit@k, {report['entries']} entries, K={report['per_label']} questions "
                 "per label")
    ax.grid(alpha=0.3)

    # What the bot served, as a share of the in-scope and of the out-of-scope questions.
    ax = axes[0][1]
    scope = report["scope"]
    groups = [("in scope", scope["tiers"]["in_scope"], scope["in_scope_queries"]),
              ("out of scope", scope["tiers"]["out_of_scope"], scope["out_of_scope_queries"])]
    width = 0.4
    for g, (name, tiers, n) in enumerate(groups):
        xs = [i + (g - 0.5) * width for i in range(len(TIERS))]
        ax.bar(xs, [tiers.get(t, 0) / n if n else 0 for t in TIERS], width,
               label=f"{name} ({n})")
    ax.set_xticks(range(len(TIERS)), TIERS)
    ax.set_ylabel("share of the questions")
    ax.set_ylim(0, 1)
    ax.set_title("what the bot served")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    # The reference's floor sweep, against the bot's one operating point.
    ax = axes[0][2]
    nn = report["nearest_neighbour"]
    curve = nn["curve"]
    xs = [c["floor"] for c in curve]
    ax.plot(xs, [c["answer_or_fallback_accuracy"] for c in curve],
            label="nearest neighbour: accuracy")
    if scope["out_of_scope_queries"]:
        ax.plot(xs, [c["out_of_scope_fallback_rate"] for c in curve], linestyle="--",
                label="nearest neighbour: out-of-scope fallback")
    ax.plot(xs, [c["in_scope_fallback_rate"] for c in curve], linestyle=":",
            label="nearest neighbour: in-scope fallback")
    if nn.get("floor") is not None:
        ax.axvline(nn["floor"], color="grey", linestyle="--", linewidth=0.8,
                   label=f"floor tuned on the test ({nn['floor']:.2f})")
    if scope["answer_or_fallback_accuracy"] is not None:
        ax.axhline(scope["answer_or_fallback_accuracy"], color="black",
                   label="learnkb: accuracy")
    ax.set_xlabel("similarity floor")
    ax.set_ylim(0, 1.02)
    ax.set_title("answer-or-fallback accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save(fig, out, "retrieval.png")


def summary(report: dict[str, Any]) -> str:
    r = report["ranking"]
    lines = [table([{"queries": r["queries"], "entries": report["entries"],
                     "K": report["per_label"], "hit@1": r["hit_at_1"], "hit@5": r["hit_at_5"],
                     "MRR": r["mrr"], "bot hit@1": r["answer_path_hit_at_1"]}],
                   ["queries", "entries", "K", "hit@1", "hit@5", "MRR", "bot hit@1"],
                   "retrieval (in-scope queries)")]
    scope = report["scope"]
    lines.append(tiers_table(scope))
    nn = report["nearest_neighbour"]
    rows = [{"": "learnkb", "accuracy": scope["answer_or_fallback_accuracy"],
             "in-scope fallback": scope["in_scope_fallback_rate"],
             "oos fallback": scope["out_of_scope_fallback_rate"],
             "confident wrong": scope["confident_wrong"]["of_all"], "floor": None},
            {"": "nearest neighbour (floor tuned on these questions)",
             "accuracy": nn.get("answer_or_fallback_accuracy"),
             "in-scope fallback": nn.get("in_scope_fallback_rate"),
             "oos fallback": nn.get("out_of_scope_fallback_rate"),
             "confident wrong": nn.get("confident_wrong_rate"), "floor": nn.get("floor")}]
    lines.append(table(rows, ["", "accuracy", "in-scope fallback", "oos fallback",
                              "confident wrong", "floor"],
                       f"answer or fall back ({scope['in_scope_queries']} in scope, "
                       f"{scope['out_of_scope_queries']} out of scope; accuracy: the right "
                       "entry first, or no entry for an out-of-scope question)"))
    margin = report["margin_over_nearest_neighbour"]
    if margin is not None:
        lines.append(f"learnkb's margin over the tuned nearest neighbour: {margin:+.3f}")
    return "\n\n".join(lines)


def tiers_table(scope: dict[str, Any]) -> str:
    """The tiers served to in-scope and to out-of-scope questions, with the share answered
    outright and wrongly."""
    tiers = scope["tiers"]
    extra = sorted({t for part in tiers.values() for t in part} - set(TIERS))
    columns = ["questions", "n", *TIERS, *extra, "confident wrong"]
    rows = [{"questions": "in scope", "n": scope["in_scope_queries"], **tiers["in_scope"],
             "confident wrong": scope["confident_wrong"]["of_in_scope"]},
            {"questions": "out of scope", "n": scope["out_of_scope_queries"],
             **tiers["out_of_scope"],
             "confident wrong": scope["confident_wrong"]["of_out_of_scope"]}]
    return table(rows, columns, "tiers served")
