"""`learnkb eval transcripts`: the matching of extracted to labelled pairs by hand, and the
command run as users run it on a few of the labelled calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evaluation.datasets import DatasetError
from evaluation.transcripts import (
    QA,
    Call,
    build_report,
    figures,
    is_match,
    match_pairs,
    read_calls,
    same_question,
)

LEARNKB = str(Path(sys.executable).parent / "learnkb")
CALLS = Path(__file__).resolve().parent.parent / "docs" / "eval" / "transcripts" / "calls.jsonl"
# One call of each format.
SAMPLE = ("coffee-01-grinder-warranty", "coffee-02-ivr-switzerland", "bikes-01-ebike-service",
          "fashion-01-angry-refund")


def test_same_question_by_words_or_containment() -> None:
    assert same_question("How long does delivery take?", "how long does the delivery take")
    # One contains the other: the bare question inside the customer's whole turn.
    assert same_question("Is it dying?", "Hi, the leaves are going yellow. Is it dying?")
    assert same_question("IS IT DYING", "is it dying?")
    assert not same_question("Do you deliver?", "Do you sell live plants?")
    assert not same_question("", "Do you deliver?")


def test_a_match_needs_the_same_question_and_overlapping_answers() -> None:
    gold = QA("Does the gift card expire?",
              "They're valid for two years from when they were bought.")
    # The whole staff turn, holding phrase included, still holds the labelled answer.
    assert is_match(QA("Does the gift card expire?", "Um, one sec, let me check the terms. Okay, "
                       "they're valid for two years from when they were bought."), gold)
    # The right question with the wrong answer (a question back) is no match...
    assert not is_match(QA("Does the gift card expire?", "Which card do you have?"), gold)
    # ...nor the right answer under another question.
    assert not is_match(QA("Can I pay the rest by card?", gold.answer), gold)


def test_matching_is_one_to_one_and_as_large_as_it_can_be() -> None:
    a = QA("Do you deliver?", "Yes, we deliver within ten miles.")
    b = QA("Do you deliver on Sundays?", "Not on Sundays, only Monday to Saturday.")
    # The first extracted pair fits both labelled pairs, the second only the first labelled one:
    # the largest matching gives each its own.
    extracted = [QA("Do you deliver? Do you deliver on Sundays?",
                    "Yes, we deliver within ten miles. Not on Sundays, only Monday to Saturday."),
                 QA("Do you deliver?", "Yes, we deliver within ten miles.")]
    assert match_pairs(extracted, [a, b]) == [(0, 1), (1, 0)]
    # The same pair extracted twice matches once.
    assert match_pairs([a, a], [a]) == [(0, 0)]
    assert match_pairs([], [a]) == [] and match_pairs([a], []) == []


def test_figures_and_the_report_by_hand() -> None:
    assert figures(4, 5, 3) == {"gold": 4, "extracted": 5, "matched": 3, "precision": 0.6,
                                "recall": 0.75, "f1": round(2 * 0.6 * 0.75 / 1.35, 4)}
    assert figures(0, 0, 0)["precision"] is None and figures(2, 0, 0)["recall"] == 0.0
    calls = [Call("a", "text", "...", (QA("Do you deliver?", "Yes, within ten miles."),
                                       QA("Are you open on Sunday?", "Only in the morning."))),
             Call("b", "srt", "...", ())]
    rows: list[dict[str, Any]] = [
        {"id": "a", "format": "text", "gold": [{}, {}], "bot_answered": [],
         "unanswered": ["Are you open on Sunday?"],
         "pairs": [{"question": "Do you deliver?", "answer": "Yes, we do, within ten miles.",
                    "answered_by": "Agent"}]},
        {"id": "b", "format": "srt", "gold": [], "unanswered": [], "bot_answered": [],
         "pairs": [{"question": "How are you?", "answer": "Fine, thanks.",
                    "answered_by": "Agent"}]}]
    report = build_report(calls, rows)
    assert report["overall"] == {"calls": 2, "gold": 2, "extracted": 2, "matched": 1,
                                 "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert report["per_format"]["srt"]["precision"] == 0.0
    assert report["per_format"]["srt"]["recall"] is None
    assert report["target"]["met"] is False
    assert report["misses"] == [{"call": "a", "format": "text",
                                 "question": "Are you open on Sunday?",
                                 "answer": "Only in the morning.",
                                 "reason": "question reported unanswered"}]
    assert [(f["call"], f["reason"]) for f in report["false_positives"]] == [
        ("b", "no labelled question like it")]


def test_the_calls_file_says_what_is_wrong(tmp_path: Path) -> None:
    calls = read_calls(CALLS)
    assert len(calls) >= 32
    formats = [c.format for c in calls]
    assert all(formats.count(f) >= 5 for f in ("json", "vtt", "srt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "format": "docx", "transcript": "Customer: hi", "pairs": []}\n')
    with pytest.raises(DatasetError, match="line 1: format"):
        read_calls(bad)
    bad.write_text('{"id": "x", "format": "text", "transcript": "Customer: hi", '
                   '"pairs": [{"question": "Hi?"}]}\n')
    with pytest.raises(DatasetError, match="question and answer"):
        read_calls(bad)
    with pytest.raises(DatasetError, match="no such file"):
        read_calls(tmp_path / "missing.jsonl")


def test_eval_transcripts_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    rows = [json.loads(line) for line in CALLS.read_text().splitlines() if line.strip()]
    sample = [r for r in rows if r["id"] in SAMPLE]
    assert {r["format"] for r in sample} == {"text", "json", "vtt", "srt"}
    # A call the service refuses (not JSON) counts as one that gave no pairs.
    sample.append({"id": "broken", "format": "json", "transcript": "[{not json",
                   "pairs": [{"question": "Do you deliver?", "answer": "Yes."}]})
    calls = tmp_path / "calls.jsonl"
    calls.write_text("".join(json.dumps(r) + "\n" for r in sample))
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", LEARNKB_MODEL_CACHE=str(data_dir / "models"))
    env.pop("LEARNKB_DATABASE_URL", None)
    done = subprocess.run([LEARNKB, "eval", "transcripts", str(calls), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "transcripts.json").read_text())
    printed = (out / "transcripts.txt").read_text()
    assert printed.strip() in done.stdout
    assert "target: precision >= 0.9 at recall >= 0.7:" in printed
    assert (out / "transcripts.png").stat().st_size > 1000

    gold = sum(len(r["pairs"]) for r in sample)
    overall = report["overall"]
    assert overall["calls"] == len(sample) and overall["gold"] == gold
    assert report["errors"][0]["call"] == "broken"
    assert 0 < overall["matched"] <= min(overall["extracted"], gold)
    assert overall["precision"] == round(overall["matched"] / overall["extracted"], 4)
    assert overall["recall"] == round(overall["matched"] / gold, 4)
    assert set(report["per_format"]) == {"text", "json", "vtt", "srt"}
    assert sum(f["matched"] for f in report["per_format"].values()) == overall["matched"]
    # Every labelled pair is matched or listed as missed, every extracted one matched or
    # listed as a false positive.
    assert len(report["misses"]) == gold - overall["matched"]
    assert len(report["false_positives"]) == overall["extracted"] - overall["matched"]
    assert report["target"]["met"] == (overall["precision"] >= 0.9
                                       and overall["recall"] >= 0.7)
    per_call = [json.loads(line)
                for line in (out / "transcripts-calls.jsonl").read_text().splitlines()]
    assert [r["id"] for r in per_call] == [r["id"] for r in sample]
    # The bot's words are never the shop's answer.
    assert all(p["answered_by"] not in {"IVR", "Bot"} for r in per_call for p in r["pairs"])
