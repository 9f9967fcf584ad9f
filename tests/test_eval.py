"""`learnkb eval` on tiny labelled sets, run as users run it: the figures it prints are right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evaluation.datasets import DatasetError, read_examples, read_pairs
from evaluation.metrics import grid, hit_at, mrr, rank_of, sweep

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


def write_csv(path: Path, header: str, rows: list[tuple[str, ...]]) -> Path:
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


def test_eval_retrieval_reports_the_ranks_it_was_given(tmp_path: Path, data_dir: Path) -> None:
    kb = write_csv(tmp_path / "kb.csv", "text,label",
                   [(q, label) for label, qs in KB.items() for q in qs])
    queries = [("When will my parcel arrive?", "delivery"),
               ("Can I send back my order?", "returns"),
               ("Is my grinder covered by the guarantee?", "warranty"),
               ("Can I pay with PayPal?", "payment"),
               # Known questions labelled with another label: their right entry is not first.
               ("What is your return policy?", "payment"),
               ("How long is the warranty?", "delivery"),
               ("Which moon of Jupiter has the best opera house?", "oos"),
               ("Recite the third verse of a sea shanty about turnips", "oos")]
    q = write_csv(tmp_path / "q.csv", "text,label", queries)
    report, printed = run_eval(["retrieval", "--kb", str(kb), "--queries", str(q),
                                "--per-label", "3", "--oos-label", "oos"],
                               data_dir, tmp_path / "out")
    ranking = report["ranking"]
    assert report["entries"] == 4 and ranking["queries"] == 6
    assert ranking["hit_at_1"] == pytest.approx(4 / 6, abs=1e-4)
    assert ranking["hit_at_5"] == 1.0  # four entries: every one is in the top 5
    assert (4 + 2 / 4) / 6 - 1e-4 <= ranking["mrr"] <= (4 + 2 / 2) / 6 + 1e-4
    assert "0.667" in printed and f"{ranking['mrr']:.3f}" in printed
    assert sum(ranking["tiers"].values()) == 6
    fallback = report["fallback"]
    assert fallback["out_of_scope_queries"] == 2
    for point in fallback["curve"]:
        assert point["tp"] + point["fn"] == 2 and point["fp"] + point["tn"] == 6
    default = [p for p in fallback["curve"] if p["default"]]
    assert len(default) == 1 and default[0]["threshold"] == fallback["default_floor"]
    # What the sweep says at the default is what the service did.
    assert default[0]["tp"] == fallback["served_out_of_scope_fallbacks"]
    assert default[0]["fp"] == fallback["served_inscope_fallbacks"]


def test_eval_loop_accounts_for_every_action(tmp_path: Path, data_dir: Path) -> None:
    stream = [("When does my order arrive?", "delivery"),
              ("how many days until my package gets here", "delivery"),
              ("I want to give back the kettle I bought", "returns"),
              ("Can I get my money back for an unopened item?", "returns"),
              ("My grinder broke after a year, is that covered?", "warranty"),
              ("Is Apple Pay an option at checkout?", "payment")]
    train = write_csv(tmp_path / "train.csv", "text,label",
                      [(qs[0], label) for label, qs in KB.items()] + stream)
    test = write_csv(tmp_path / "test.csv", "text,label", stream)
    report, printed = run_eval(["loop", "--train", str(train), "--test", str(test),
                                "--rounds", "2", "--batch", "3"], data_dir, tmp_path / "out")
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    start = rounds[0]
    assert start["learnkb"]["hit_at_1"] == start["append"]["hit_at_1"] == \
        start["none"]["hit_at_1"]
    for r in rounds:
        learnkb, append, none = r["learnkb"], r["append"], r["none"]
        # learnkb adds each corrected question to the entry with that answer: no new entries.
        assert learnkb["entries"] == 4
        assert learnkb["effort"]["corrections"] == learnkb["stream"]["wrong"]
        assert learnkb["effort"]["reviews"] == 0
        # The reference writes one entry per correction or answered gap.
        assert append["entries"] == 4 + append["effort"]["corrections"] + \
            append["effort"]["gap_answers"]
        assert append["effort"]["total"] == append["stream"]["wrong"] + \
            append["stream"]["fallbacks"]
        assert none["entries"] == 4 and none["effort"]["total"] == 0
        assert none["hit_at_1"] == start["none"]["hit_at_1"]
    end = rounds[-1]
    assert end["learnkb"]["stream"]["asked"] == 6
    # Every stream question is now a known phrasing of its right entry.
    assert end["learnkb"]["hit_at_1"] == 1.0
    assert f"{end['learnkb']['hit_at_1']:.3f}" in printed


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
