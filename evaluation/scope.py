"""Out-of-scope questions: which are, what the bot did with them, and the plain reference."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from evaluation.datasets import Example

# The one label every out-of-scope question carries inside the evaluation, whether it came
# with --oos-label, from a held-out label or from an --oos file.
OOS = "<out of scope>"
TIERS = ("answer", "options", "clarify", "decline", "fallback", "handover")
# The reference's similarity floors: 0.10 to 0.95 in steps of 0.01.
FLOORS = tuple(round(0.10 + i * 0.01, 2) for i in range(86))


def choose_held_out(labels: Iterable[str], fraction: float, seed: int) -> list[str]:
    """round(fraction * labels) labels that get no knowledge: their questions are in-domain
    out-of-scope questions. Sorted; the same for the same labels, fraction and seed."""
    pool = sorted(set(labels))
    if not 0 <= fraction < 1:
        raise ValueError("--holdout-labels is a fraction from 0 up to (not including) 1")
    k = round(fraction * len(pool))
    if pool and k >= len(pool):
        raise ValueError(f"--holdout-labels {fraction} would hold out every label")
    return sorted(random.Random(seed).sample(pool, k))


def relabel(examples: Iterable[Example], outside: set[str]) -> list[Example]:
    """The examples, those of a label in `outside` labelled out of scope."""
    return [Example(e.text, OOS) if e.label in outside else e for e in examples]


def declined(row: dict[str, Any]) -> bool:
    """The bot offered no entry: it fell back or declined."""
    return bool(row["fallback"]) or str(row["tier"]) in {"fallback", "decline"}


def right(row: dict[str, Any]) -> bool:
    """Answer-or-fallback: an out-of-scope question is right when the bot offered nothing, an
    in-scope one when it offered something and its first entry is the right label's."""
    if row["label"] == OOS:
        return declined(row)
    return not declined(row) and bool(row["answer_label"] == row["label"])


def confident_wrong(row: dict[str, Any]) -> bool:
    """Answered outright, and wrongly: another label's entry, or anything out of scope."""
    return bool(row["tier"] == "answer"
                and (row["label"] == OOS or row["answer_label"] != row["label"]))


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def tier_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How often each tier was served: every known tier (0 when never), then any other."""
    counted = Counter(r["tier"] for r in rows)
    return {**{t: counted.get(t, 0) for t in TIERS},
            **{t: n for t, n in sorted(counted.items()) if t not in TIERS}}


def scope_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the bot did with in-scope and out-of-scope questions, from /v1/answer's replies
    (rows with label, tier, fallback, answer_label and the reply's scope object)."""
    inscope = [r for r in rows if r["label"] != OOS]
    outside = [r for r in rows if r["label"] == OOS]

    def decided_by(part: list[dict[str, Any]]) -> dict[str, int]:
        return dict(sorted(Counter(str((r.get("scope") or {}).get("decided_by"))
                                   for r in part).items()))

    wrong_in = sum(confident_wrong(r) for r in inscope)
    wrong_out = sum(confident_wrong(r) for r in outside)
    return {
        "in_scope_queries": len(inscope), "out_of_scope_queries": len(outside),
        "answer_or_fallback_accuracy": _share(sum(right(r) for r in rows), len(rows)),
        "in_scope_fallback_rate": _share(sum(declined(r) for r in inscope), len(inscope)),
        "out_of_scope_fallback_rate": _share(sum(declined(r) for r in outside), len(outside)),
        "confident_wrong": {"of_in_scope": _share(wrong_in, len(inscope)),
                            "of_out_of_scope": _share(wrong_out, len(outside)),
                            "of_all": _share(wrong_in + wrong_out, len(rows))},
        "tiers": {"in_scope": tier_counts(inscope), "out_of_scope": tier_counts(outside)},
        # The service's scope decision, when it reports one: what decided it, and how often
        # its calibration was in force.
        "decided_by": {"in_scope": decided_by(inscope), "out_of_scope": decided_by(outside)},
        "calibrated": sum(bool((r.get("scope") or {}).get("calibrated")) for r in rows),
    }


def nearest_neighbour(rows: Sequence[dict[str, Any]],
                      floors: Sequence[float] = FLOORS) -> dict[str, Any]:
    """The plain reference: the label of the search result with the highest similarity,
    fallen back when that similarity is under a floor; the floor tuned on these very rows
    (the best answer-or-fallback accuracy, the lowest such floor), so it flatters the
    reference. Rows carry nn_label and nn_similarity (None: nothing found)."""
    inscope = [r for r in rows if r["label"] != OOS]
    outside = [r for r in rows if r["label"] == OOS]
    curve: list[dict[str, Any]] = []
    for floor in floors:
        def falls(r: dict[str, Any], floor: float = floor) -> bool:
            return r["nn_similarity"] is None or r["nn_similarity"] < floor

        ok = sum(falls(r) for r in outside) + sum(
            not falls(r) and r["nn_label"] == r["label"] for r in inscope)
        wrong = sum(not falls(r) for r in outside) + sum(
            not falls(r) and r["nn_label"] != r["label"] for r in inscope)
        curve.append({
            "floor": floor, "answer_or_fallback_accuracy": _share(ok, len(rows)) or 0.0,
            "in_scope_fallback_rate": _share(sum(falls(r) for r in inscope), len(inscope)),
            "out_of_scope_fallback_rate": _share(sum(falls(r) for r in outside), len(outside)),
            "confident_wrong_rate": _share(wrong, len(rows))})
    best = max(curve, key=lambda c: c["answer_or_fallback_accuracy"]) if curve else {}
    return {**best, "tuned_on": "the asked (test) questions", "curve": curve}
