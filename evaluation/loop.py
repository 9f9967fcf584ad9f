"""`learnkb eval loop`: a shop's life, round by round, beside two reference policies."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.client import Api, ServiceError, ShopKeys, create_shop, each
from evaluation.common import (
    Answers,
    add_common_options,
    add_scope_options,
    calibrate,
    instance_and_api,
    source_label,
)
from evaluation.datasets import Example, first_per_label, read_examples, read_texts
from evaluation.report import figure, save, table, write_json
from evaluation.retrieval import ask, seed_knowledge, tiers_table
from evaluation.scope import OOS, choose_held_out, declined, relabel, scope_figures

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
                   help="known questions per label at the start (an entry holds up to 51; "
                   "more make more entries)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=1000,
                   help="train questions customers ask per round")
    add_common_options(p)
    add_scope_options(p, "shuffled by --seed: the first half (rounded down) mixed into the "
                      "customers' stream, the rest into the test")


@dataclass
class Effort:
    """What people did for one policy, cumulative."""

    corrections: int = 0      # an owner wrote the right answer for a wrongly answered question
    gap_answers: int = 0      # an owner answered a knowledge gap
    reviews: int = 0          # someone approved, rejected or marked out of scope a queue item
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
    right: int = 0            # in scope and answered with the right entry
    wrong: int = 0            # answered with a wrong entry, or answered out of scope at all
    fallbacks: int = 0        # fell back or declined (no entry offered)
    declines: int = 0         # ... of which declined as outside the shop's business
    out_of_scope_asked: int = 0
    out_of_scope_fallbacks: int = 0   # out of scope, and the bot fell back or declined
    out_of_scope_declines: int = 0    # ... of which declined
    out_of_scope_answered: int = 0    # out of scope, and the bot offered an entry
    signals: int = 0          # feedback and corrections sent
    merged: int = 0           # signals dedup folded into an existing item or dropped as known

    def served(self, e: Example, said: dict[str, Any], answers: Answers) -> bool:
        """Count one reply; was it right (the right entry, or none out of scope)?"""
        self.asked += 1
        fell = declined(said)
        self.fallbacks += fell
        self.declines += said["tier"] == "decline"
        if e.label == OOS:
            self.out_of_scope_asked += 1
            self.out_of_scope_fallbacks += fell
            self.out_of_scope_declines += said["tier"] == "decline"
            self.out_of_scope_answered += not fell
            self.wrong += not fell
            return fell
        if fell:
            return False
        if source_label(said, answers) == e.label:
            self.right += 1
            return True
        self.wrong += 1
        return False


class Owner:
    """The shop's people, played from the labels: they know the right answer of each
    question, correct what the bot got wrong, answer gaps, say which questions are outside
    the shop's business and review what waits."""

    def __init__(self, api: Api, answers: Answers, label_of_text: dict[str, str]) -> None:
        self.api = api
        self.answers = answers
        self.label_of_text = label_of_text

    async def learnkb_round(self, shop: ShopKeys, batch: list[Example], concurrency: int,
                            effort: Effort, stream: Stream, description: str) -> None:
        outcomes: Counter[str] = Counter()

        async def one(e: Example) -> None:
            said = await self.api.call("POST", "/v1/answer", shop.bot,
                                       json={"question": e.text})
            if stream.served(e, said, self.answers):
                if e.label == OOS:
                    # A fallback opened (or joined) a gap the owner marks out of scope.
                    return
                await self.api.call("POST", "/v1/feedback", shop.bot, json={
                    "turn_id": said["turn_id"], "type": "thumbs_up"})
                stream.signals += 1
                return
            if declined(said) and said["tier"] != "decline":
                return  # the fallback opened (or joined) a knowledge gap by itself
            # A wrong entry, an entry for a question outside the shop's business, or a
            # question of the shop's declined: the customer says so, which opens an item.
            down = await self.api.call("POST", "/v1/feedback", shop.bot, json={
                "turn_id": said["turn_id"], "type": "thumbs_down"})
            stream.signals += 1
            if down.get("queued"):
                outcomes[down["queued"]["outcome"]] += 1
            if e.label == OOS or declined(said):
                # Out of scope: no right answer, the owner marks the item when tending the
                # queue. Declined: the thumbs down opened a gap the owner answers.
                return
            fixed = await self.api.call("POST", "/v1/corrections", shop.owner, json={
                "turn_id": said["turn_id"],
                "corrected_answer": self.answers.of_label[e.label]})
            effort.corrections += 1
            stream.signals += 1
            if fixed.get("queued"):
                outcomes[fixed["queued"]["outcome"]] += 1

        await each(batch, one, concurrency, description)
        stream.merged += sum(outcomes[o] for o in ("merged", "dropped", "rejected_before"))
        await self.tend_queue(shop, effort)

    async def tend_queue(self, shop: ShopKeys, effort: Effort) -> None:
        """Answer the gaps (most asked first), mark what is outside the shop's business out
        of scope, and review every item still pending."""
        for item in await self.pending(shop, "gap"):
            label = self.label_of_text.get(item["question"])
            if label == OOS:
                await self.out_of_scope(shop, item, effort)
            elif label is not None:
                if await self.act(shop, item, "answer",
                                  {"answer": self.answers.of_label[label]}):
                    effort.gap_answers += 1
            elif await self.act(shop, item, "reject",
                                {"reason": "not a question this shop answers"}):
                effort.review(item, "rejected")
        for item in await self.pending(shop, None):
            label = self.label_of_text.get(item["question"])
            proposed = self.answers.label_of(item.get("proposed_content"))
            if label == OOS:
                await self.out_of_scope(shop, item, effort)
            elif item["kind"] == "answer" and label is not None and proposed == label:
                if await self.act(shop, item, "approve", {}):
                    effort.review(item, "approved")
            elif await self.act(shop, item, "reject",
                                {"reason": "not the right answer for this question"}):
                effort.review(item, "rejected")

    async def out_of_scope(self, shop: ShopKeys, item: dict[str, Any], effort: Effort) -> None:
        """The owner says the item's question is outside the shop's business (no redirect):
        a review, after which the bot declines such questions."""
        if await self.act(shop, item, "out-of-scope", {"redirect": None, "note": None}):
            effort.review(item, "out_of_scope")

    async def act(self, shop: ShopKeys, item: dict[str, Any], action: str,
                  body: dict[str, Any]) -> bool:
        """POST /v1/queue/{id}/{action}; False when the item was no longer pending (an
        earlier action, such as marking a like question out of scope, settled it)."""
        try:
            await self.api.call("POST", f"/v1/queue/{item['id']}/{action}", shop.owner,
                                json=body)
        except ServiceError as exc:
            if exc.status != 409:
                raise
            now = await self.api.call("GET", f"/v1/queue/{item['id']}", shop.owner)
            if now["status"] == "pending":
                raise
            return False
        return True

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
            if stream.served(e, said, self.answers) or e.label == OOS:
                return  # right, or out of scope: there is no answer to append
            await self.api.call("POST", "/v1/knowledge", shop.owner, json={
                "question": e.text, "answer": self.answers.of_label[e.label],
                "category": e.label[:100]})
            if declined(said):
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


def test_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The bot's in-scope accuracy (the right entry first) and what it did out of scope."""
    inscope = [r for r in rows if r["label"] != OOS]
    return {"hit_at_1": round(sum(r["answer_label"] == r["label"] for r in inscope)
                              / len(inscope), 4) if inscope else 0.0,
            **scope_figures(rows)}


def split_stream(train: list[Example], seeded: set[str], rounds: int, batch: int,
                 seed: int) -> list[list[Example]]:
    stream = [e for e in train if e.text not in seeded]
    random.Random(seed).shuffle(stream)
    return [b for b in (stream[i * batch:(i + 1) * batch] for i in range(rounds)) if b]


def out_of_scope_questions(args: argparse.Namespace, train: list[Example],
                           test: list[Example]) -> tuple[list[str], list[Example],
                                                         list[Example], dict[str, Any]]:
    """The held-out labels, and train and test with every out-of-scope question labelled OOS:
    those of --oos-label and of the held-out labels where they are, the --oos file's shuffled
    by --seed, the first half (rounded down) into the train stream, the rest into the test;
    and how many of each are in train and in test."""
    labels = sorted({e.label for e in train + test if e.label != args.oos_label})
    held = choose_held_out(labels, args.holdout_labels, args.seed)
    outside = set(held) | ({args.oos_label} if args.oos_label else set())
    extra = read_texts(args.oos) if args.oos else []
    extra = random.Random(args.seed).sample(extra, len(extra))
    half = len(extra) // 2

    def counted(wanted: set[str]) -> dict[str, int]:
        return {"train": sum(e.label in wanted for e in train),
                "test": sum(e.label in wanted for e in test)}

    sources = {"oos_label": counted({args.oos_label} if args.oos_label else set()),
               "held_out_labels": counted(set(held)),
               "oos_file": {"train": half, "test": len(extra) - half}}
    return (held, relabel(train, outside) + [Example(t, OOS) for t in extra[:half]],
            relabel(test, outside) + [Example(t, OOS) for t in extra[half:]], sources)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    given_train, given_test = read_examples(args.train), read_examples(args.test)
    if args.seed_per_label < 1 or args.rounds < 1 or args.batch < 1:
        raise ValueError("--seed-per-label, --rounds and --batch are at least 1")
    held, train, test, sources = out_of_scope_questions(args, given_train, given_test)
    labels = sorted({e.label for e in train + test if e.label != OOS})
    answers = Answers.for_labels(labels, args.answers)
    seeds = first_per_label([e for e in train if e.label != OOS], args.seed_per_label)
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
        entries = 0
        for shop in shops.values():
            entries = await seed_knowledge(api, shop, seeds, answers)
        owner = Owner(api, answers, label_of_text)
        report_rounds = await play(args, api, shops, owner, batches, test)
    report: dict[str, Any] = {
        "command": "learnkb eval loop", "train": str(args.train), "test": str(args.test),
        "labels": len(labels), "seed_per_label": args.seed_per_label,
        "seed_entries": entries,
        "rounds_asked": len(batches), "batch": args.batch, "test_queries": len(test),
        "holdout_fraction": args.holdout_labels, "seed": args.seed, "held_out_labels": held,
        "oos_label": args.oos_label, "oos_file": str(args.oos) if args.oos else None,
        # Where the out-of-scope questions are: in the customers' stream ("train") and in
        # the test asked each round.
        "out_of_scope_sources": sources,
        "stream_out_of_scope": sum(e.label == OOS for b in batches for e in b),
        "test_out_of_scope": sum(e.label == OOS for e in test),
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
    # The service recomputes a shop's out-of-scope calibration only now and then: here it is
    # asked to, after the seed and after each round's learning, before the test is asked.
    calibrations = {p: await calibrate(api, shops[p]) for p in POLICIES}
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
            for policy in ("learnkb", "append"):
                calibrations[policy] = await calibrate(api, shops[policy])
        row: dict[str, Any] = {"round": number}
        for policy in POLICIES:
            if policy == "none" and frozen is not None:
                figures = frozen
            else:
                asked = await ask(api, shops[policy], test, owner.answers, args.concurrency,
                                  f"round {number}: {policy} test", search=False)
                figures = test_figures(asked)
                if policy == "none":
                    frozen = figures
            shop = shops[policy]
            row[policy] = {
                **figures,
                "entries": await count(api, shop.owner, "/v1/knowledge"),
                "queue_items": await count(api, shop.owner, "/v1/queue"),
                "effort": {**asdict(efforts[policy]), "total": efforts[policy].total},
                "stream": asdict(streams[policy]),
                "calibration": calibrations[policy]}
        rounds.append(row)
        # Progress, beside the bars: the tables come at the end.
        tqdm.write(round_line(row), file=sys.stderr)
    return rounds


def round_line(row: dict[str, Any]) -> str:
    def one(p: str) -> str:
        x = row[p]
        oos = x["out_of_scope_fallback_rate"]
        return (f"{p} hit@1 {x['hit_at_1']:.3f}"
                + ("" if oos is None else f", oos fallback {oos:.3f}")
                + f" ({x['entries']} entries, {x['effort']['total']} human actions)")

    return f"round {row['round']}: " + "; ".join(one(p) for p in POLICIES)


def summary(report: dict[str, Any]) -> str:
    rows = []
    for r in report["rounds"]:
        for p in POLICIES:
            x = r[p]
            rows.append({"round": r["round"], "policy": p, "test hit@1": x["hit_at_1"],
                         "accuracy": x["answer_or_fallback_accuracy"],
                         "oos fallback": x["out_of_scope_fallback_rate"],
                         "in-scope fallback": x["in_scope_fallback_rate"],
                         "confident wrong": x["confident_wrong"]["of_all"],
                         "entries": x["entries"], "queue items": x["queue_items"],
                         "corrections": x["effort"]["corrections"],
                         "gap answers": x["effort"]["gap_answers"],
                         "reviews": x["effort"]["reviews"],
                         "human actions": x["effort"]["total"],
                         "merged signals": x["stream"]["merged"]})
    columns = ["round", "policy", "test hit@1", "accuracy", "oos fallback",
               "in-scope fallback", "confident wrong", "entries", "queue items", "corrections",
               "gap answers", "reviews", "human actions", "merged signals"]
    if not report["test_out_of_scope"]:
        columns.remove("oos fallback")
    last = report["rounds"][-1]
    lines = [table(rows, columns, "learning loop (cumulative per round; test hit@1: the right "
                   "entry first, in scope; accuracy: that, or no entry out of scope)")]
    lines += [tiers_table(last[p]).replace("tiers served", f"tiers served, round "
                                           f"{last['round']}, {p}", 1) for p in POLICIES]
    return "\n\n".join(lines)


def plot(report: dict[str, Any], out: Path) -> Path:
    fig, axes = figure(1, 3, (17.0, 4.5))
    rounds = [r["round"] for r in report["rounds"]]
    left, middle, right = axes[0][0], axes[0][1], axes[0][2]
    for p in POLICIES:
        line, = left.plot(rounds, [r[p]["hit_at_1"] for r in report["rounds"]], marker="o",
                          label=p)
        middle.plot([r[p]["effort"]["total"] for r in report["rounds"]],
                    [r[p]["hit_at_1"] for r in report["rounds"]], marker="o", label=p)
        if report["test_out_of_scope"]:
            right.plot(rounds, [r[p]["out_of_scope_fallback_rate"] for r in report["rounds"]],
                       marker="o", color=line.get_color(), label=f"{p}: out of scope")
        right.plot(rounds, [r[p]["in_scope_fallback_rate"] for r in report["rounds"]],
                   marker=".", linestyle=":", color=line.get_color(),
                   label=f"{p}: in scope")
    left.set_xlabel("round")
    left.set_ylabel("test hit@1 (in scope)")
    left.set_title(f"learning curve ({report['batch']} questions asked per round)")
    middle.set_xlabel("human actions so far (corrections + gap answers + reviews)")
    middle.set_ylabel("test hit@1 (in scope)")
    middle.set_title("accuracy per human effort")
    right.set_xlabel("round")
    right.set_ylabel("fell back or declined")
    right.set_ylim(-0.02, 1.02)
    right.set_title(f"fallback rate ({report['test_out_of_scope']} out-of-scope test "
                    "questions)")
    for ax in (left, right):
        ax.set_xticks(rounds)
    for ax in (left, middle, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out, "loop.png")
