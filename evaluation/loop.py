"""`learnkb eval loop`: a shop's life, round by round, beside two reference policies."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.client import Api, ServiceError, ShopKeys, create_shop, each
from evaluation.common import Answers, add_common_options, instance_and_api, source_label
from evaluation.datasets import Example, first_per_label, read_examples
from evaluation.report import figure, save, table, write_json
from evaluation.retrieval import ask, seed_knowledge

POLICIES = ("learnkb", "append", "none")
PAGE = 500
APPLY_SECONDS = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("loop", help="learning curve: customers ask, the owner corrects, the "
                       "apply job runs; against 'no learning' and 'append every correction'")
    p.add_argument("--train", type=Path, required=True,
                   help="CSV text,label: the seed questions and the stream customers ask")
    p.add_argument("--test", type=Path, required=True, help="CSV text,label: asked each round")
    p.add_argument("--seed-per-label", type=int, default=1,
                   help="known questions per entry at the start")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=1000,
                   help="train questions customers ask per round")
    p.add_argument("--seed", type=int, default=7, help="shuffles the train stream")
    add_common_options(p)


@dataclass
class Effort:
    """What people did for one policy, cumulative."""

    corrections: int = 0      # an owner wrote the right answer for a wrongly answered question
    gap_answers: int = 0      # an owner answered a knowledge gap
    reviews: int = 0          # someone approved or rejected a queue item
    # What the reviews were about: "kind/source/decision" -> how many.
    reviewed: dict[str, int] = field(default_factory=dict)

    def review(self, item: dict[str, Any], decision: str) -> None:
        self.reviews += 1
        what = f"{item['kind']}/{item['source_type']}/{decision}"
        if item.get("conflict_entry_id"):
            what += " (conflict)"
        self.reviewed[what] = self.reviewed.get(what, 0) + 1

    @property
    def total(self) -> int:
        return self.corrections + self.gap_answers + self.reviews


@dataclass
class Stream:
    """What the customers' questions of one policy led to, cumulative."""

    asked: int = 0
    right: int = 0
    wrong: int = 0
    fallbacks: int = 0
    signals: int = 0          # feedback and corrections sent
    merged: int = 0           # signals dedup folded into an existing item or dropped as known


class Owner:
    """The shop's people, played from the labels: they know the right answer of each
    question, correct what the bot got wrong, answer gaps and review what waits."""

    def __init__(self, api: Api, answers: Answers, oos_label: str | None,
                 label_of_text: dict[str, str]) -> None:
        self.api = api
        self.answers = answers
        self.oos = oos_label
        self.label_of_text = label_of_text

    async def learnkb_round(self, shop: ShopKeys, batch: list[Example], concurrency: int,
                            effort: Effort, stream: Stream, description: str) -> None:
        outcomes: Counter[str] = Counter()

        async def one(e: Example) -> None:
            said = await self.api.call("POST", "/v1/answer", shop.bot,
                                       json={"question": e.text})
            stream.asked += 1
            got = source_label(said, self.answers)
            if said["fallback"]:
                stream.fallbacks += 1
                return  # the fallback opened (or joined) a knowledge gap by itself
            if e.label == self.oos or got != e.label:
                stream.wrong += 1
                down = await self.api.call("POST", "/v1/feedback", shop.bot, json={
                    "turn_id": said["turn_id"], "type": "thumbs_down"})
                stream.signals += 1
                if down.get("queued"):
                    outcomes[down["queued"]["outcome"]] += 1
                if e.label == self.oos:
                    return  # there is no right answer to give
                fixed = await self.api.call("POST", "/v1/corrections", shop.owner, json={
                    "turn_id": said["turn_id"],
                    "corrected_answer": self.answers.of_label[e.label]})
                effort.corrections += 1
                stream.signals += 1
                if fixed.get("queued"):
                    outcomes[fixed["queued"]["outcome"]] += 1
                return
            stream.right += 1
            await self.api.call("POST", "/v1/feedback", shop.bot, json={
                "turn_id": said["turn_id"], "type": "thumbs_up"})
            stream.signals += 1

        await each(batch, one, concurrency, description)
        stream.merged += sum(outcomes[o] for o in ("merged", "dropped", "rejected_before"))
        await self.tend_queue(shop, effort)

    async def tend_queue(self, shop: ShopKeys, effort: Effort) -> None:
        """Answer the gaps (most asked first) and review every item still pending."""
        for item in await self.pending(shop, "gap"):
            label = self.label_of_text.get(item["question"])
            if label is not None and label != self.oos:
                await self.api.call("POST", f"/v1/queue/{item['id']}/answer", shop.owner,
                                    json={"answer": self.answers.of_label[label]})
                effort.gap_answers += 1
            else:
                await self.api.call("POST", f"/v1/queue/{item['id']}/reject", shop.owner,
                                    json={"reason": "not a question this shop answers"})
                effort.review(item, "rejected")
        for item in await self.pending(shop, None):
            label = self.label_of_text.get(item["question"])
            proposed = self.answers.label_of(item.get("proposed_content"))
            if item["kind"] == "answer" and label is not None and proposed == label:
                await self.api.call("POST", f"/v1/queue/{item['id']}/approve", shop.owner,
                                    json={})
                effort.review(item, "approved")
            else:
                await self.api.call("POST", f"/v1/queue/{item['id']}/reject", shop.owner,
                                    json={"reason": "not the right answer for this question"})
                effort.review(item, "rejected")

    async def pending(self, shop: ShopKeys, kind: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"status": "pending", "sort": "observations", "limit": PAGE}
        if kind:
            params["kind"] = kind
        items: list[dict[str, Any]] = []
        while True:
            page = await self.api.call("GET", "/v1/queue", shop.owner,
                                       params={**params, "offset": len(items)})
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                return items

    async def append_round(self, shop: ShopKeys, batch: list[Example], concurrency: int,
                           effort: Effort, stream: Stream, description: str) -> None:
        """The reference: every wrong answer or gap becomes a new entry, as written."""
        async def one(e: Example) -> None:
            said = await self.api.call("POST", "/v1/answer", shop.bot,
                                       json={"question": e.text, "learn": False})
            stream.asked += 1
            if said["fallback"]:
                stream.fallbacks += 1
            elif source_label(said, self.answers) == e.label:
                stream.right += 1
                return
            else:
                stream.wrong += 1
            if e.label == self.oos:
                return
            await self.api.call("POST", "/v1/knowledge", shop.owner, json={
                "question": e.text, "answer": self.answers.of_label[e.label],
                "category": e.label[:100]})
            if said["fallback"]:
                effort.gap_answers += 1
            else:
                effort.corrections += 1

        await each(batch, one, concurrency, description)


async def applied(api: Api, shop: ShopKeys, wait_seconds: float = 300) -> None:
    """Wait until the service's apply job has applied every approved item."""
    deadline = time.monotonic() + wait_seconds
    while await count(api, shop.owner, "/v1/queue", status="approved"):
        if time.monotonic() > deadline:
            raise ServiceError("approved items were not applied within "
                               f"{wait_seconds:.0f} s")
        await asyncio.sleep(0.5)


async def count(api: Api, key: str, path: str, **params: Any) -> int:
    page = await api.call("GET", path, key, params={"limit": 1, **params})
    return int(page["total"])


def test_figures(rows: list[dict[str, Any]], oos: str | None) -> dict[str, Any]:
    inscope = [r for r in rows if r["label"] != oos]
    out: dict[str, Any] = {"hit_at_1": round(
        sum(r["answer_label"] == r["label"] for r in inscope) / len(inscope), 4)}
    outside = [r for r in rows if r["label"] == oos]
    if outside:
        out["oos_fallback_rate"] = round(sum(r["fallback"] for r in outside) / len(outside), 4)
    return out


def split_stream(train: list[Example], seeded: set[str], rounds: int, batch: int,
                 seed: int) -> list[list[Example]]:
    stream = [e for e in train if e.text not in seeded]
    random.Random(seed).shuffle(stream)
    return [b for b in (stream[i * batch:(i + 1) * batch] for i in range(rounds)) if b]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    train, test = read_examples(args.train), read_examples(args.test)
    if args.seed_per_label < 1 or args.rounds < 1 or args.batch < 1:
        raise ValueError("--seed-per-label, --rounds and --batch are at least 1")
    oos = args.oos_label
    labels = sorted({e.label for e in train + test if e.label != oos})
    answers = Answers.for_labels(labels, args.answers)
    seeds = first_per_label([e for e in train if e.label != oos], args.seed_per_label)
    seeded = {t for texts in seeds.values() for t in texts}
    batches = split_stream(train, seeded, args.rounds, args.batch, args.seed)
    label_of_text = {e.text: e.label for e in train}
    started = time.monotonic()
    # The service applies what was approved on its own, as in production (every 20 s by
    # default; here every APPLY_SECONDS, since a simulated day of questions takes seconds).
    async with instance_and_api(args, jobs=True, settings={
            "LEARNKB_APPLY_INTERVAL_SECONDS": str(APPLY_SECONDS)}) as (instance, api):
        shops = {p: await create_shop(api, instance.admin_key, f"eval-loop-{p}")
                 for p in POLICIES}
        for shop in shops.values():
            await seed_knowledge(api, shop, seeds, answers)
        owner = Owner(api, answers, oos, label_of_text)
        report_rounds = await play(args, api, shops, owner, batches, test)
    report: dict[str, Any] = {
        "command": "learnkb eval loop", "train": str(args.train), "test": str(args.test),
        "labels": len(labels), "seed_per_label": args.seed_per_label,
        "rounds_asked": len(batches), "batch": args.batch, "test_queries": len(test),
        "rounds": report_rounds, "seconds": round(time.monotonic() - started, 1)}
    write_json(args.out, "loop.json", report)
    plot(report, args.out)
    print(summary(report))
    return report


async def play(args: argparse.Namespace, api: Api,
               shops: dict[str, ShopKeys], owner: Owner, batches: list[list[Example]],
               test: list[Example]) -> list[dict[str, Any]]:
    efforts = {p: Effort() for p in POLICIES}
    streams = {p: Stream() for p in POLICIES}
    rounds: list[dict[str, Any]] = []
    frozen: dict[str, Any] | None = None  # "none" never changes: its test is asked once
    for number in range(len(batches) + 1):
        if number:
            batch = batches[number - 1]
            await owner.learnkb_round(shops["learnkb"], batch, args.concurrency,
                                      efforts["learnkb"], streams["learnkb"],
                                      f"round {number}: learnkb stream")
            await owner.append_round(shops["append"], batch, args.concurrency,
                                     efforts["append"], streams["append"],
                                     f"round {number}: append stream")
            await applied(api, shops["learnkb"])
        row: dict[str, Any] = {"round": number}
        for policy in POLICIES:
            if policy == "none" and frozen is not None:
                figures = frozen
            else:
                asked = await ask(api, shops[policy], test, owner.answers, args.concurrency,
                                  f"round {number}: {policy} test", search=False)
                figures = test_figures(asked, owner.oos)
                if policy == "none":
                    frozen = figures
            shop = shops[policy]
            row[policy] = {
                **figures,
                "entries": await count(api, shop.owner, "/v1/knowledge"),
                "queue_items": await count(api, shop.owner, "/v1/queue"),
                "effort": {**asdict(efforts[policy]), "total": efforts[policy].total},
                "stream": asdict(streams[policy])}
        rounds.append(row)
        print(round_line(row))
    return rounds


def round_line(row: dict[str, Any]) -> str:
    return f"round {row['round']}: " + "; ".join(
        f"{p} hit@1 {row[p]['hit_at_1']:.3f} ({row[p]['entries']} entries, "
        f"{row[p]['effort']['total']} human actions)" for p in POLICIES)


def summary(report: dict[str, Any]) -> str:
    rows = []
    for r in report["rounds"]:
        for p in POLICIES:
            x = r[p]
            rows.append({"round": r["round"], "policy": p, "test hit@1": x["hit_at_1"],
                         "oos fallback": x.get("oos_fallback_rate"),
                         "entries": x["entries"], "queue items": x["queue_items"],
                         "corrections": x["effort"]["corrections"],
                         "gap answers": x["effort"]["gap_answers"],
                         "reviews": x["effort"]["reviews"],
                         "human actions": x["effort"]["total"],
                         "merged signals": x["stream"]["merged"]})
    columns = ["round", "policy", "test hit@1", "entries", "queue items", "corrections",
               "gap answers", "reviews", "human actions", "merged signals"]
    if any(r["oos fallback"] is not None for r in rows):
        columns.insert(3, "oos fallback")
    return table(rows, columns, "learning loop (cumulative per round)")


def plot(report: dict[str, Any], out: Path) -> Path:
    fig, axes = figure(1, 2, (12.0, 4.5))
    rounds = [r["round"] for r in report["rounds"]]
    left, right = axes[0][0], axes[0][1]
    for p in POLICIES:
        left.plot(rounds, [r[p]["hit_at_1"] for r in report["rounds"]], marker="o", label=p)
        right.plot([r[p]["effort"]["total"] for r in report["rounds"]],
                   [r[p]["hit_at_1"] for r in report["rounds"]], marker="o", label=p)
    left.set_xlabel("round")
    left.set_ylabel("test hit@1")
    left.set_title(f"learning curve ({report['batch']} questions asked per round)")
    right.set_xlabel("human actions so far (corrections + gap answers + reviews)")
    right.set_ylabel("test hit@1")
    right.set_title("accuracy per human effort")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, out, "loop.png")
