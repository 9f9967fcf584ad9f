"""`learnkb eval` on tiny labelled sets, run as users run it: the figures it prints are right."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from evaluation.common import Answers
from evaluation.datasets import DatasetError, Example, read_examples, read_pairs, read_texts
from evaluation.metrics import grid, hit_at, mrr, rank_of, sweep
from evaluation.retrieval import entry_bodies
from evaluation.scope import (
    OOS,
    choose_held_out,
    nearest_neighbour,
    relabel,
    scope_figures,
)

LEARNKB = str(Path(sys.executable).parent / "learnkb")

KB = {
    "delivery": ["How long does delivery take?", "When will my parcel arrive?",
                 "What are your shipping times?"],
    "returns": ["How do I return an item?", "Can I send back my order?",
                "What is your return policy?"],
    "warranty": ["How long is the warranty?", "Is my grinder covered by the guarantee?",
                 "What does the warranty cover?"],
    "payment": ["Which payment methods do you accept?", "Can I pay with PayPal?",
                "Do you take credit cards?"],
}


def write_csv(path: Path, header: str, rows: Sequence[tuple[str, ...]]) -> Path:
    def quoted(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    path.write_text(header + "\n" + "".join(",".join(quoted(v) for v in row) + "\n"
                                            for row in rows))
    return path


def run_eval(args: list[str], data_dir: Path, out: Path) -> tuple[dict[str, Any], str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               # The session's export of the model, not one more of its own.
               LEARNKB_MODEL_CACHE=str(data_dir / "models"))
    env.pop("LEARNKB_DATABASE_URL", None)
    done = subprocess.run([LEARNKB, "eval", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    name = {"retrieval": "retrieval", "loop": "loop", "duplicates": "duplicates"}[args[0]]
    assert (out / f"{name}.png").stat().st_size > 1000
    # Quiet: what the server says goes to server.log, not between the bars and tables.
    assert "INFO" in (out / "server.log").read_text()
    assert "INFO" not in done.stdout + done.stderr
    return json.loads((out / f"{name}.json").read_text()), done.stdout


def test_metrics_by_hand() -> None:
    ranks = [rank_of(["a", "b"], "a"), rank_of(["b", "a", "c"], "a"), rank_of(["b"], "a")]
    assert ranks == [1, 2, None]
    assert hit_at(ranks, 1) == pytest.approx(1 / 3)
    assert hit_at(ranks, 5) == pytest.approx(2 / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 2) / 3)
    truth = [True, True, False, False]
    scores = [0.9, 0.4, 0.6, 0.1]
    low, high = sweep(truth, lambda i, t: scores[i] >= t, [0.5, 0.95])
    assert (low.true_positive, low.false_positive, low.false_negative) == (1, 1, 1)
    assert low.precision == 0.5 and low.recall == 0.5 and low.f1 == 0.5
    assert high.true_positive == 0 and high.precision == 1.0 and high.recall == 0.0
    assert grid(0.1, 0.3, 0.1, 0.25) == [0.1, 0.2, 0.25, 0.3]


def test_out_of_scope_figures_by_hand() -> None:
    labels = ["e", "b", "d", "a", "c", "b"]
    held = choose_held_out(labels, 0.4, 3)
    assert held == sorted(random.Random(3).sample(["a", "b", "c", "d", "e"], 2))
    assert choose_held_out(labels, 0.0, 3) == []
    with pytest.raises(ValueError, match="holdout"):
        choose_held_out(labels, 1.0, 3)
    relabelled = relabel([Example("q1", held[0]), Example("q2", "x")], set(held))
    assert [e.label for e in relabelled] == [OOS, "x"]

    def row(label: str, tier: str, got: str | None) -> dict[str, Any]:
        return {"label": label, "tier": tier, "fallback": tier in {"fallback", "decline"},
                "answer_label": got, "scope": {"decided_by": "model", "calibrated": True}}

    rows = [row("a", "answer", "a"),        # right
            row("a", "answer", "b"),        # confidently wrong
            row("b", "options", "b"),       # right: its first option
            row("b", "fallback", None),     # wrong: fell back in scope
            row(OOS, "decline", None),      # right
            row(OOS, "fallback", None),     # right
            row(OOS, "answer", "a"),        # confidently wrong
            row(OOS, "clarify", "b")]       # wrong, not confidently
    figures = scope_figures(rows)
    assert (figures["in_scope_queries"], figures["out_of_scope_queries"]) == (4, 4)
    assert figures["answer_or_fallback_accuracy"] == 4 / 8
    assert figures["in_scope_fallback_rate"] == 1 / 4
    assert figures["out_of_scope_fallback_rate"] == 2 / 4
    assert figures["confident_wrong"] == {"of_in_scope": 0.25, "of_out_of_scope": 0.25,
                                          "of_all": 0.25}
    assert figures["tiers"]["in_scope"] == {"answer": 2, "options": 1, "clarify": 0,
                                            "decline": 0, "fallback": 1, "handover": 0}
    assert figures["tiers"]["out_of_scope"]["decline"] == 1
    assert figures["decided_by"]["out_of_scope"] == {"model": 4} and figures["calibrated"] == 8

    def near(label: str, got: str | None, similarity: float | None) -> dict[str, Any]:
        return {"label": label, "nn_label": got, "nn_similarity": similarity}

    nn = nearest_neighbour([near("a", "a", 0.9), near("b", "a", 0.7), near("b", "b", 0.5),
                            near(OOS, "a", 0.6), near(OOS, None, None)],
                           floors=[0.4, 0.55, 0.65, 0.8])
    # 0.4: a, b(0.5) right, both OOS answered... the one with nothing found falls back: 3/5.
    # 0.55: a right, b(0.5) falls back (wrong), OOS 0.6 answered: 2/5. 0.65: 3/5. 0.8: 3/5.
    assert [c["answer_or_fallback_accuracy"] for c in nn["curve"]] == [0.6, 0.4, 0.6, 0.6]
    assert nn["floor"] == 0.4 and nn["answer_or_fallback_accuracy"] == 0.6
    assert nn["out_of_scope_fallback_rate"] == 0.5 and nn["in_scope_fallback_rate"] == 0.0
    assert nn["confident_wrong_rate"] == 0.4


def test_a_label_with_many_questions_takes_several_entries() -> None:
    answers = Answers({"many": "Many.", "one": "One."})
    texts = {"many": [f"question {i}" for i in range(120)], "one": ["only question"]}
    bodies = entry_bodies(texts, answers)
    assert [1 + len(b["variants"]) for b in bodies] == [51, 51, 18, 1]
    assert [b["answer"] for b in bodies] == ["Many."] * 3 + ["One."]
    assert [q for b in bodies[:3] for q in [b["question"], *b["variants"]]] == texts["many"]


def test_data_files_say_what_is_wrong(tmp_path: Path) -> None:
    banking = write_csv(tmp_path / "b.csv", "text,category", [("Where is my card?", "card")])
    assert read_examples(banking)[0].label == "card"
    bad = write_csv(tmp_path / "bad.csv", "question,label", [("Where is my card?", "card")])
    with pytest.raises(DatasetError, match="text"):
        read_examples(bad)
    pairs = write_csv(tmp_path / "p.csv", "text_a,text_b,duplicate", [("a", "b", "maybe")])
    with pytest.raises(DatasetError, match="line 2"):
        read_pairs(pairs)
    with pytest.raises(DatasetError, match="no such file"):
        read_examples(tmp_path / "missing.csv")
    oos = write_csv(tmp_path / "oos.csv", "intent,text", [("poetry", "Write a haiku"),
                                                         ("poetry", "Write a haiku"),
                                                         ("geo", "Capital of Chad?")])
    assert read_texts(oos) == ["Write a haiku", "Capital of Chad?"]
    with pytest.raises(DatasetError, match="text"):
        read_texts(bad)


# Held out by --holdout-labels 0.2 --seed 1: round(0.2 * 5) = 1 label of the five sorted
# ones, random.Random(1).sample(...) picks "hours" (checked below, not assumed).
HOURS = ["What are your opening hours?", "Are you open on Sunday?", "When do you open?"]
OOS_FILE_ROWS = [("What is the capital of Mongolia?", "geography"),
                 ("Write me a haiku about penguins", "poetry")]
SCOPE_ARGS = ["--oos-label", "oos", "--holdout-labels", "0.2", "--seed", "1"]


def recomputed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The scope figures, counted here from the rows the evaluation wrote, by hand."""
    inscope = [r for r in rows if r["label"] != OOS]
    outside = [r for r in rows if r["label"] == OOS]

    def none(r: dict[str, Any]) -> bool:
        return r["tier"] in {"fallback", "decline"}

    right = [r for r in outside if none(r)] + [
        r for r in inscope if not none(r) and r["answer_label"] == r["label"]]
    wrong_in = [r for r in inscope if r["tier"] == "answer" and r["answer_label"] != r["label"]]
    wrong_out = [r for r in outside if r["tier"] == "answer"]
    return {"accuracy": len(right) / len(rows),
            "in_fallback": sum(map(none, inscope)) / len(inscope),
            "oos_fallback": sum(map(none, outside)) / len(outside),
            "wrong": (len(wrong_in) / len(inscope), len(wrong_out) / len(outside),
                      (len(wrong_in) + len(wrong_out)) / len(rows))}


def test_eval_retrieval_reports_ranks_and_scope(tmp_path: Path, data_dir: Path) -> None:
    # 55 questions of payment: more than one entry takes (51), so two entries.
    payment = KB["payment"] + [f"Can I pay with payment option number {i}?" for i in range(52)]
    known = {**KB, "payment": payment, "hours": HOURS}
    kb = write_csv(tmp_path / "kb.csv", "text,label",
                   [(q, label) for label, qs in known.items() for q in qs])
    queries = [("When will my parcel arrive?", "delivery"),
               ("Can I send back my order?", "returns"),
               ("Is my grinder covered by the guarantee?", "warranty"),
               ("Can I pay with PayPal?", "payment"),
               # Known questions labelled with another label: their right entry is not first.
               ("What is your return policy?", "payment"),
               ("How long is the warranty?", "delivery"),
               ("Which moon of Jupiter has the best opera house?", "oos"),
               ("Recite the third verse of a sea shanty about turnips", "oos"),
               # The held-out label's: in-domain questions the shop was given no answer for.
               ("Is the shop open on Sunday?", "hours"),
               ("What time do you close today?", "hours")]
    q = write_csv(tmp_path / "q.csv", "text,label", queries)
    oos = write_csv(tmp_path / "oos.csv", "text,intent", OOS_FILE_ROWS)
    out = tmp_path / "out"
    report, printed = run_eval(["retrieval", "--kb", str(kb), "--queries", str(q),
                                "--per-label", "60", "--oos", str(oos), *SCOPE_ARGS],
                               data_dir, out)
    assert report["held_out_labels"] == ["hours"] == choose_held_out(known, 0.2, 1)
    assert report["labels"] == 4
    assert report["entries"] == 5  # one each, two for payment; none for hours
    assert isinstance(report["calibration"], dict)
    ranking = report["ranking"]
    assert ranking["queries"] == 6
    assert ranking["hit_at_1"] == pytest.approx(4 / 6, abs=1e-4)
    assert ranking["hit_at_5"] == 1.0  # five entries: every one is in the top 5
    assert (4 + 2 / 5) / 6 - 1e-4 <= ranking["mrr"] <= (4 + 2 / 2) / 6 + 1e-4
    assert "0.667" in printed and f"{ranking['mrr']:.3f}" in printed
    assert report["out_of_scope_sources"] == {"oos_label": 2, "held_out_labels": 2,
                                              "oos_file": 2}

    rows = [json.loads(line) for line in
            (out / "retrieval-queries.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    outside = {r["text"] for r in rows if r["label"] == OOS}
    assert outside == {t for t, label in queries if label in {"oos", "hours"}} | \
        {t for t, _ in OOS_FILE_ROWS}
    assert all(isinstance(r["scope"]["in_scope"], bool) for r in rows)
    scope = report["scope"]
    assert (scope["in_scope_queries"], scope["out_of_scope_queries"]) == (6, 6)
    assert sum(scope["tiers"]["in_scope"].values()) == 6
    assert sum(scope["tiers"]["out_of_scope"].values()) == 6
    assert scope["in_scope_hit_at_1"] == ranking["hit_at_1"]
    mine = recomputed(rows)
    assert scope["answer_or_fallback_accuracy"] == pytest.approx(mine["accuracy"], abs=1e-4)
    assert scope["in_scope_fallback_rate"] == pytest.approx(mine["in_fallback"], abs=1e-4)
    assert scope["out_of_scope_fallback_rate"] == pytest.approx(mine["oos_fallback"], abs=1e-4)
    wrong = scope["confident_wrong"]
    assert (wrong["of_in_scope"], wrong["of_out_of_scope"], wrong["of_all"]) == \
        pytest.approx(mine["wrong"], abs=1e-4)

    # The reference, by hand: every floor from 0.10 to 0.95, the best (lowest on a tie).
    best = (-1.0, 0.0)
    for step in range(86):
        floor = round(0.10 + step * 0.01, 2)
        ok = sum((r["nn_similarity"] is None or r["nn_similarity"] < floor)
                 if r["label"] == OOS else
                 (r["nn_similarity"] is not None and r["nn_similarity"] >= floor
                  and r["nn_label"] == r["label"]) for r in rows)
        if ok / len(rows) > best[0] + 1e-12:
            best = (ok / len(rows), floor)
    nn = report["nearest_neighbour"]
    assert len(nn["curve"]) == 86
    assert nn["answer_or_fallback_accuracy"] == pytest.approx(best[0], abs=1e-4)
    assert nn["floor"] == best[1]
    assert report["margin_over_nearest_neighbour"] == pytest.approx(
        scope["answer_or_fallback_accuracy"] - nn["answer_or_fallback_accuracy"], abs=2e-4)
    assert f"{nn['answer_or_fallback_accuracy']:.3f}" in printed


def test_eval_loop_accounts_for_every_action(tmp_path: Path, data_dir: Path) -> None:
    stream = [("When does my order arrive?", "delivery"),
              ("how many days until my package gets here", "delivery"),
              ("I want to give back the kettle I bought", "returns"),
              ("Can I get my money back for an unopened item?", "returns"),
              ("My grinder broke after a year, is that covered?", "warranty"),
              ("Is Apple Pay an option at checkout?", "payment")]
    outside = [(HOURS[1], "hours"), ("Which moon of Jupiter has the best opera house?", "oos")]
    # The held-out label's first question is no seed: it is asked in the stream too.
    train = write_csv(tmp_path / "train.csv", "text,label",
                      [(qs[0], label) for label, qs in {**KB, "hours": HOURS}.items()]
                      + stream + outside)
    test = write_csv(tmp_path / "test.csv", "text,label",
                     [*stream, (HOURS[0], "hours"), *outside])
    oos = write_csv(tmp_path / "oos.csv", "text,intent", OOS_FILE_ROWS)
    report, printed = run_eval(["loop", "--train", str(train), "--test", str(test),
                                "--rounds", "2", "--batch", "5", "--oos", str(oos),
                                *SCOPE_ARGS], data_dir, tmp_path / "out")
    assert report["held_out_labels"] == ["hours"]
    assert report["out_of_scope_sources"] == {
        "oos_label": {"train": 1, "test": 1}, "held_out_labels": {"train": 2, "test": 2},
        "oos_file": {"train": 1, "test": 1}}
    # Two of hours, one of oos and one of the file in the stream; the same three and the
    # file's other one in the test.
    assert report["stream_out_of_scope"] == 4 and report["test_out_of_scope"] == 4
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    start = rounds[0]
    assert start["learnkb"]["hit_at_1"] == start["append"]["hit_at_1"] == \
        start["none"]["hit_at_1"]
    for r in rounds:
        learnkb, append, none = r["learnkb"], r["append"], r["none"]
        for x in (learnkb, append, none):
            assert sum(x["tiers"]["out_of_scope"].values()) == x["out_of_scope_queries"] == 4
            assert sum(x["tiers"]["in_scope"].values()) == x["in_scope_queries"] == 6
        # learnkb adds each corrected question to the entry with that answer: no new entries.
        assert learnkb["entries"] == 4
        s = learnkb["stream"]
        assert learnkb["effort"]["corrections"] == s["wrong"] - s["out_of_scope_answered"]
        # Its only reviews: the owner marking what is not the shop's business out of scope,
        # at most one per question that fell back (a gap) or was answered (a thumbs down).
        reviewed = learnkb["effort"]["reviewed"]
        assert all(k.endswith("/out_of_scope") for k in reviewed)
        opened = s["out_of_scope_fallbacks"] - s["out_of_scope_declines"] + \
            s["out_of_scope_answered"]
        assert (learnkb["effort"]["reviews"] > 0) == (opened > 0)
        assert learnkb["effort"]["reviews"] <= opened
        # The reference writes one entry per correction or answered gap.
        assert append["entries"] == 4 + append["effort"]["corrections"] + \
            append["effort"]["gap_answers"]
        assert append["effort"]["total"] == append["stream"]["wrong"] + \
            append["stream"]["fallbacks"] - append["stream"]["out_of_scope_asked"]
        assert none["entries"] == 4 and none["effort"]["total"] == 0
        assert none["hit_at_1"] == start["none"]["hit_at_1"]
        # Only an owner's out-of-scope mark makes the bot decline: the others never do.
        assert append["tiers"]["out_of_scope"]["decline"] == 0
        assert none["tiers"]["out_of_scope"]["decline"] == 0
    end = rounds[-1]
    learnkb = end["learnkb"]
    assert learnkb["stream"]["asked"] == 10 and learnkb["stream"]["out_of_scope_asked"] == 4
    # Every stream question is now a known phrasing of its right entry...
    assert learnkb["hit_at_1"] == 1.0
    # ... or, out of scope, one the owner marked (declined now) or the bot never answered.
    fell = learnkb["tiers"]["out_of_scope"]
    assert fell["fallback"] + fell["decline"] >= 3
    if learnkb["effort"]["reviews"]:
        assert fell["decline"] >= 1
    assert f"{learnkb['hit_at_1']:.3f}" in printed
    assert f"{learnkb['answer_or_fallback_accuracy']:.3f}" in printed


def test_eval_duplicates_scores_a_known_set_of_pairs(tmp_path: Path, data_dir: Path) -> None:
    pairs = write_csv(tmp_path / "pairs.csv", "text_a,text_b,duplicate", [
        ("Where is my order 123?", "where is my order 123", "1"),
        ("How do I reset my password?", "how do I reset my password", "1"),
        # Different identifiers are never the same question: a duplicate by label, missed.
        ("Refund for order 555", "Refund for order 556", "1"),
        ("Does part A11 fit the G1?", "Does part A22 fit the G2?", "0"),
        ("What time do you open?", "Do you sell gift cards?", "0"),
    ])
    report, printed = run_eval(["duplicates", "--pairs", str(pairs)], data_dir,
                               tmp_path / "out")
    assert report["pairs"] == 5 and report["duplicates"] == 3
    assert report["service_agrees_at_default"]
    for point in report["curve"]:
        assert (point["tp"], point["fp"], point["fn"], point["tn"]) == (2, 0, 1, 2)
        assert point["precision"] == 1.0 and point["recall"] == pytest.approx(2 / 3, abs=1e-4)
        assert point["f1"] == pytest.approx(0.8, abs=1e-4)
    assert report["at_default"]["threshold"] == report["default_threshold"] == 0.88
    assert "<- default" in printed
