"""The figures an evaluation reports, computed from what the service returned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


def rank_of(ranked: Sequence[str | None], truth: str) -> int | None:
    """1-based position of the first result with the right label, None when absent."""
    for position, label in enumerate(ranked, start=1):
        if label == truth:
            return position
    return None


def hit_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr(ranks: Sequence[int | None]) -> float:
    return sum(1 / r for r in ranks if r is not None) / len(ranks) if ranks else 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """A binary decision at one threshold, scored against the truth."""

    threshold: float
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int

    @property
    def precision(self) -> float:
        decided = self.true_positive + self.false_positive
        return self.true_positive / decided if decided else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positive + self.false_negative
        return self.true_positive / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"threshold": round(self.threshold, 4), "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4),
                "tp": self.true_positive, "fp": self.false_positive,
                "fn": self.false_negative, "tn": self.true_negative}


def sweep(truth: Sequence[bool], decide: Callable[[int, float], bool],
          thresholds: Sequence[float]) -> list[Decision]:
    """Score `decide(i, threshold)` (is case i positive?) against `truth` at each threshold."""
    out = []
    for t in thresholds:
        tp = fp = fn = tn = 0
        for i, actual in enumerate(truth):
            said = decide(i, t)
            if said and actual:
                tp += 1
            elif said:
                fp += 1
            elif actual:
                fn += 1
            else:
                tn += 1
        out.append(Decision(t, tp, fp, fn, tn))
    return out


def grid(low: float, high: float, step: float, marked: float) -> list[float]:
    """Thresholds from low to high, with the service's default among them."""
    values = {round(low + i * step, 4) for i in range(round((high - low) / step) + 1)}
    values.add(round(marked, 4))
    return sorted(values)
