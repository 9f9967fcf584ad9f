"""`learnkb eval transcripts`: the question/answer pairs learnkb pulls out of call transcripts,
against pairs a person labelled in the same calls.

Each labelled call goes through POST /v1/transcripts as a bot sends it. Within a call, the
extracted pairs are matched one-to-one to the labelled ones: a match is the same question
(`token_set_ratio` >= 80, or one text contains the other) answered with overlapping words
(`token_set_ratio` >= 70), both on lowercased text stripped of punctuation. Precision is the
share of extracted pairs matched, recall the share of labelled pairs found.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, utils

from evaluation.client import Api, ServiceError, ShopKeys, create_shop, each
from evaluation.common import add_instance_options, instance_and_api
from evaluation.datasets import DatasetError
from evaluation.report import figure, save, table, write_json, write_jsonl

FORMATS = ("text", "json", "vtt", "srt")
QUESTION_MIN = 80.0
ANSWER_MIN = 70.0
# The target: precision at least 0.9 with recall at least 0.7.
TARGET_PRECISION = 0.9
TARGET_RECALL = 0.7


def add_parser(sub: Any) -> None:
    p = sub.add_parser("transcripts", help="precision and recall of the question/answer pairs "
                       "extracted from call transcripts, against labelled pairs")
    p.add_argument("calls", type=Path, metavar="FILE.jsonl", help="one call a line: "
                   '{"id", "format": text|json|vtt|srt, "transcript", '
                   '"pairs": [{"question", "answer"}]}')
    add_instance_options(p)


@dataclass(frozen=True, slots=True)
class QA:
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    format: str
    transcript: str
    pairs: tuple[QA, ...]


def _qa(value: Any, where: str) -> QA:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: a pair is an object with question and answer")
    q, a = value.get("question"), value.get("answer")
    if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
        raise DatasetError(f"{where}: a pair needs a non-empty question and answer")
    return QA(q, a)


def read_calls(path: Path) -> list[Call]:
    """The labelled calls of a JSONL file, in file order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from exc
    calls: list[Call] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: a call is a JSON object")
        call_id, fmt, text = row.get("id"), row.get("format"), row.get("transcript")
        if not isinstance(call_id, str) or not call_id:
            raise DatasetError(f"{where}: the call needs an id")
        if call_id in seen:
            raise DatasetError(f"{where}: the id {call_id!r} is used twice")
        if fmt not in FORMATS:
            raise DatasetError(f"{where}: format is one of {', '.join(FORMATS)}")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{where}: the call needs a transcript")
        pairs = row.get("pairs", [])
        if not isinstance(pairs, list):
            raise DatasetError(f"{where}: pairs is a list")
        seen.add(call_id)
        calls.append(Call(call_id, fmt, text, tuple(_qa(p, where) for p in pairs)))
    if not calls:
        raise DatasetError(f"{path}: no calls")
    return calls


def _norm(text: str) -> str:
    return str(utils.default_process(text))


def question_score(a: str, b: str) -> float:
    """100 when one question contains the other, else their token set ratio."""
    na, nb = _norm(a), _norm(b)
    if not na or not nb:
        return 0.0
    if na in nb or nb in na:
        return 100.0
    return float(fuzz.token_set_ratio(na, nb))


def answer_score(a: str, b: str) -> float:
    na, nb = _norm(a), _norm(b)
    return float(fuzz.token_set_ratio(na, nb)) if na and nb else 0.0


def same_question(a: str, b: str) -> bool:
    return question_score(a, b) >= QUESTION_MIN


def is_match(extracted: QA, gold: QA) -> bool:
    return (same_question(extracted.question, gold.question)
            and answer_score(extracted.answer, gold.answer) >= ANSWER_MIN)


def match_pairs(extracted: Sequence[QA], gold: Sequence[QA]) -> list[tuple[int, int]]:
    """A largest one-to-one matching of extracted to gold pairs, as (extracted, gold) index
    pairs: among the candidates of a pair, the closer ones are tried first."""
    candidates: list[list[int]] = []
    for e in extracted:
        scored = [(question_score(e.question, g.question) + answer_score(e.answer, g.answer), j)
                  for j, g in enumerate(gold) if is_match(e, g)]
        candidates.append([j for _, j in sorted(scored, key=lambda s: (-s[0], s[1]))])
    owner: dict[int, int] = {}  # gold index -> extracted index

    def augment(i: int, visited: set[int]) -> bool:
        for j in candidates[i]:
            if j in visited:
                continue
            visited.add(j)
            if j not in owner or augment(owner[j], visited):
                owner[j] = i
                return True
        return False

    for i in range(len(extracted)):
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())


def figures(gold: int, extracted: int, matched: int) -> dict[str, Any]:
    precision = matched / extracted if extracted else None
    recall = matched / gold if gold else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0
          else (0.0 if precision is not None and recall is not None else None))
    return {"gold": gold, "extracted": extracted, "matched": matched,
            "precision": None if precision is None else round(precision, 4),
            "recall": None if recall is None else round(recall, 4),
            "f1": None if f1 is None else round(f1, 4)}


def miss_reason(gold: QA, extracted: Sequence[QA], row: dict[str, Any]) -> str:
    """Why a labelled pair was not found, as far as the response tells."""
    if any(same_question(e.question, gold.question) for e in extracted):
        return "question extracted, with another answer"
    if any(same_question(q, gold.question) for q in row.get("unanswered") or []):
        return "question reported unanswered"
    if any(same_question(q, gold.question) for q in row.get("bot_answered") or []):
        return "question reported as answered by the bot"
    if any(answer_score(e.answer, gold.answer) >= ANSWER_MIN for e in extracted):
        return "answer extracted, under another question"
    return "not extracted"


def false_positive_reason(pair: QA, gold: Sequence[QA]) -> str:
    same = [j for j, g in enumerate(gold) if same_question(pair.question, g.question)]
    if not same:
        return "no labelled question like it"
    if any(answer_score(pair.answer, gold[j].answer) >= ANSWER_MIN for j in same):
        return "a second extraction of a labelled pair"
    return "labelled question, another answer"


def score_call(call: Call, row: dict[str, Any]) -> dict[str, Any]:
    """The call's matches, misses and false positives."""
    extracted = [QA(p["question"], p["answer"]) for p in row["pairs"]]
    matches = match_pairs(extracted, call.pairs)
    got = {i for i, _ in matches}
    found = {j for _, j in matches}
    row["matches"] = [{"extracted": i, "gold": j} for i, j in matches]
    row["false_positives"] = [
        {"call": call.id, "format": call.format, "question": e.question, "answer": e.answer,
         "answered_by": row["pairs"][i].get("answered_by"),
         "reason": false_positive_reason(e, call.pairs)}
        for i, e in enumerate(extracted) if i not in got]
    row["misses"] = [
        {"call": call.id, "format": call.format, "question": g.question, "answer": g.answer,
         "reason": miss_reason(g, extracted, row)}
        for j, g in enumerate(call.pairs) if j not in found]
    return row


async def extract(api: Api, shop: ShopKeys, calls: Sequence[Call],
                  concurrency: int) -> list[dict[str, Any]]:
    """Every call through POST /v1/transcripts as the shop's bot; what came back. A call the
    service refuses is kept as an error (no pairs), so the rest still count."""
    async def one(call: Call) -> dict[str, Any]:
        row: dict[str, Any] = {"id": call.id, "format": call.format,
                               "gold": [{"question": p.question, "answer": p.answer}
                                        for p in call.pairs]}
        try:
            said = await api.call("POST", "/v1/transcripts", shop.bot,
                                  json={"transcript": call.transcript, "format": call.format})
        except ServiceError as exc:
            if exc.status is None or exc.status >= 500:
                raise
            return {**row, "error": str(exc), "pairs": [], "unanswered": [],
                    "bot_answered": [], "sentiment": None}
        return {**row, "pairs": [{k: p.get(k) for k in ("question", "answer", "start", "end",
                                                        "answered_by")}
                                 for p in said["pairs"]],
                "unanswered": said.get("unanswered", []),
                "bot_answered": said.get("bot_answered", []),
                "sentiment": said.get("sentiment")}

    return await each(calls, one, concurrency, "calls")


def build_report(calls: Sequence[Call], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    scored = [score_call(c, r) for c, r in zip(calls, rows, strict=True)]

    def totals(part: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"calls": len(part), **figures(sum(len(r["gold"]) for r in part),
                                              sum(len(r["pairs"]) for r in part),
                                              sum(len(r["matches"]) for r in part))}

    overall = totals(scored)
    per_format = {f: totals([r for r in scored if r["format"] == f]) for f in FORMATS
                  if any(r["format"] == f for r in scored)}
    false_positives = [fp for r in scored for fp in r["false_positives"]]
    misses = [m for r in scored for m in r["misses"]]
    met = (overall["precision"] is not None and overall["recall"] is not None
           and overall["precision"] >= TARGET_PRECISION and overall["recall"] >= TARGET_RECALL)
    return {
        "matching": {"question": f"token_set_ratio >= {QUESTION_MIN:g} or one contains the "
                     "other", "answer": f"token_set_ratio >= {ANSWER_MIN:g}",
                     "text": "lowercased, punctuation removed (rapidfuzz default_process)",
                     "assignment": "one-to-one within a call (largest matching)"},
        "overall": overall,
        "per_format": per_format,
        "target": {"precision": TARGET_PRECISION, "recall": TARGET_RECALL, "met": met},
        "miss_reasons": dict(Counter(m["reason"] for m in misses).most_common()),
        "false_positive_reasons": dict(Counter(f["reason"] for f in false_positives)
                                       .most_common()),
        "unanswered_reported": sum(len(r["unanswered"]) for r in scored),
        "bot_answered_reported": sum(len(r["bot_answered"]) for r in scored),
        "errors": [{"call": r["id"], "error": r["error"]} for r in scored if r.get("error")],
        "false_positives": false_positives,
        "misses": misses,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    calls = read_calls(args.calls)
    started = time.monotonic()
    async with instance_and_api(args) as (instance, api):
        shop = await create_shop(api, instance.admin_key, "eval-transcripts")
        rows = await extract(api, shop, calls, args.concurrency)
    report = {"command": "learnkb eval transcripts", "calls_file": str(args.calls),
              **build_report(calls, rows), "seconds": round(time.monotonic() - started, 1)}
    printed = summary(report)
    write_json(args.out, "transcripts.json", report)
    write_jsonl(args.out, "transcripts-calls.jsonl", rows)
    (args.out / "transcripts.txt").write_text(printed + "\n")
    plot(report, args.out)
    print(printed)
    return report


def summary(report: dict[str, Any]) -> str:
    columns = ["format", "calls", "gold", "extracted", "matched", "precision", "recall", "F1"]

    def line(name: str, f: dict[str, Any]) -> dict[str, Any]:
        return {"format": name, **f, "F1": f["f1"]}

    rows = [line(name, f) for name, f in report["per_format"].items()]
    rows.append(line("all", report["overall"]))
    o, t = report["overall"], report["target"]
    lines = [table(rows, columns, "question/answer pairs from call transcripts")]
    lines.append(f"target: precision >= {t['precision']} at recall >= {t['recall']}: "
                 + ("met" if t["met"] else "NOT met")
                 + f" (precision {fmt(o['precision'])}, recall {fmt(o['recall'])})")
    if report["misses"]:
        lines.append("misses: " + "; ".join(f"{n} {reason}" for reason, n
                                            in report["miss_reasons"].items()))
    if report["false_positives"]:
        lines.append("false positives: " + "; ".join(
            f"{n} {reason}" for reason, n in report["false_positive_reasons"].items()))
    if report["errors"]:
        lines.append(f"calls the service refused: {len(report['errors'])} "
                     f"({', '.join(e['call'] for e in report['errors'])})")
    return "\n\n".join(lines)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(report: dict[str, Any], out: Path) -> Path:
    fig, axes = figure(1, 1, (8.0, 4.5))
    ax = axes[0][0]
    groups = [*report["per_format"].items(), ("all", report["overall"])]
    width = 0.27
    for k, (name, label) in enumerate([("precision", "precision"), ("recall", "recall"),
                                       ("f1", "F1")]):
        xs = [i + (k - 1) * width for i in range(len(groups))]
        ax.bar(xs, [g[name] or 0.0 for _, g in groups], width, label=label)
    ax.set_xticks(range(len(groups)), [f"{n}\n({g['gold']} pairs)" for n, g in groups])
    ax.axhline(report["target"]["precision"], color="black", linestyle="--", linewidth=0.8,
               label="target precision")
    ax.axhline(report["target"]["recall"], color="grey", linestyle=":", linewidth=0.8,
               label="target recall")
    ax.set_ylim(0, 1.05)
    ax.set_title("pairs extracted from call transcripts, by format")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, out, "transcripts.png")
