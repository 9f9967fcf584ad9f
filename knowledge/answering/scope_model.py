"""Is a question inside what a shop knows? Evidence features, and a logistic model fitted per shop.

The model estimates the chance that the bot's best entry is the right answer. It is fitted on
questions the shop already has: each known question asked of the knowledge without it (its entry
keeps its other phrasings: an in-scope question, right when its own entry comes first) and asked
of the knowledge without its whole entry (an in-domain out-of-scope question, the kind that is
hardest to tell apart), plus the owner's out-of-scope examples and the turns customers rated.
Nothing here touches the database: scope.py reads the vectors and stores the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

# The evidence the decision weighs, in this order: the best entry's fit (half its nearest
# question, half the mean of its questions, as retrieval ranks), its lead in fit over the next
# entry (a crowded neighbourhood is less sure), and the nearest single question's similarity.
FEATURES = ("fit", "margin", "similarity")
# The share of an entry's fit that comes from the mean of its questions (retrieval.py
# uses the same weight).
PROFILE_WEIGHT = 0.5
# Ridge on the standardized weights: with a few dozen probes the fit must stay tame.
L2 = 1e-3
# The smallest spread a feature is standardized by: a feature nearly constant over the probes
# (a shop of identical phrasings) must not turn a hair's difference into certainty.
MIN_SCALE = 0.02
# Below these counts the shop's own evidence is too thin to fit on; the prior serves instead.
MIN_IN_SCOPE_PROBES = 20
MIN_OUT_OF_SCOPE_PROBES = 10
# Owner-marked out-of-scope questions are the shop's own word: each counts as this many probes.
EXAMPLE_WEIGHT = 3.0
# A rated turn is weaker evidence than a probe (a thumbs down may be about tone).
RATED_TURN_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Evidence:
    fit: float
    margin: float
    similarity: float

    def as_array(self) -> NDArray[np.float64]:
        return np.array([self.fit, self.margin, self.similarity], dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return {"fit": round(self.fit, 4), "margin": round(self.margin, 4),
                "similarity": round(self.similarity, 4)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Evidence | None:
        try:
            return cls(float(value["fit"]), float(value["margin"]), float(value["similarity"]))
        except (KeyError, TypeError, ValueError):
            return None


def evidence_of(fits: Sequence[float], similarities: Sequence[float]) -> Evidence:
    """The features from the candidates' fits and nearest-question similarities (any order)."""
    ranked = sorted(fits, reverse=True)
    first = ranked[0] if ranked else 0.0
    second = ranked[1] if len(ranked) > 1 else 0.0
    return Evidence(fit=first, margin=first - second,
                    similarity=max(similarities, default=0.0))


@dataclass(frozen=True, slots=True)
class ScopeModel:
    """Standardized logistic regression over FEATURES: p(the best entry is right)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    calibrated: bool                      # fitted on this shop's evidence, or the prior
    counts: dict[str, int] = field(default_factory=dict)

    def p_right(self, e: Evidence) -> float:
        z = self.logit(e)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def logit(self, e: Evidence) -> float:
        x = e.as_array()
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in
                            zip(self.weights, x, self.mean, self.scale, strict=True))
        return float(z)

    def contributions(self, e: Evidence) -> dict[str, float]:
        """Each feature's push on the log-odds, relative to the shop's typical question."""
        x = e.as_array()
        return {name: round(w * (v - m) / s, 3) for name, w, v, m, s in
                zip(FEATURES, self.weights, x, self.mean, self.scale, strict=True)}

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias,
                "calibrated": self.calibrated, "counts": self.counts}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ScopeModel:
        if list(value.get("features", [])) != list(FEATURES):
            return PRIOR  # fitted on other features by an older version: the prior until refit
        return cls(mean=tuple(value["mean"]), scale=tuple(value["scale"]),
                   weights=tuple(value["weights"]), bias=float(value["bias"]),
                   calibrated=bool(value["calibrated"]), counts=dict(value.get("counts", {})))


# The model a shop starts with, before it has enough knowledge to measure its own. A shop too
# small to calibrate has one question per entry (or few), so the prior is fitted on that shape:
# banking77's train split, 58 intents known by their first question, the next ten questions of
# each as in-scope and the held-out intents' questions as out-of-scope (never the test set).
# Fitted on ten questions per entry instead it expects the higher fits of a well-known shop and
# turns a one-question shop's clear matches away.
PRIOR = ScopeModel(mean=(0.6195, 0.1002, 0.6195), scale=(0.1350, 0.1051, 0.1350),
                   weights=(0.3144, 1.3258, 0.3144), bias=0.0321, calibrated=False)


def fit_logistic(x: NDArray[np.float64], y: NDArray[np.float64],
                 weight: NDArray[np.float64], counts: dict[str, int]) -> ScopeModel:
    """Weighted, ridge-regularized logistic regression by Newton's method."""
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), MIN_SCALE)
    z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    beta = np.zeros(z.shape[1])
    total = float(weight.sum())
    ridge = L2 * np.eye(len(beta))
    ridge[-1, -1] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50, 50)))
        gradient = z.T @ ((p - y) * weight) / total + ridge @ beta
        hessian = (z.T * (p * (1 - p) * weight)) @ z / total + ridge + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return ScopeModel(mean=tuple(float(v) for v in mean), scale=tuple(float(v) for v in scale),
                      weights=tuple(float(v) for v in beta[:-1]), bias=float(beta[-1]),
                      calibrated=True, counts=counts)


class Knowledge:
    """A shop's question vectors grouped by entry, for asking questions of it in memory."""

    def __init__(self, vectors: NDArray[np.float32], entries: NDArray[np.int64],
                 askable: NDArray[np.bool_] | None = None) -> None:
        self.vectors = vectors.astype(np.float32)
        self.entries = entries
        # Which vectors are questions a customer could ask (not document chunks): only those
        # are asked as probes, though every vector competes for an answer.
        self.askable = np.ones(len(entries), dtype=bool) if askable is None else askable
        self.count = int(entries.max()) + 1 if len(entries) else 0
        self.sizes = np.bincount(entries, minlength=self.count).astype(np.float64)
        sums = np.zeros((self.count, vectors.shape[1] if vectors.ndim == 2 else 0))
        np.add.at(sums, entries, vectors.astype(np.float64))
        self.sums = sums
        self.sum_norms2 = (sums * sums).sum(axis=1)

    def evidence(self, queries: NDArray[np.float32], without_vector: Sequence[int] | None = None,
                 without_entry: Sequence[int] | None = None,
                 batch: int = 256) -> list[tuple[Evidence, int]]:
        """The features of each question and the entry that fits it best, with (per question)
        one vector taken out (its entry keeps the others) or one whole entry taken out."""
        out: list[tuple[Evidence, int]] = []
        for start in range(0, len(queries), batch):
            q = queries[start:start + batch].astype(np.float32)
            sims = q @ self.vectors.T
            dots = q.astype(np.float64) @ self.sums.T
            for r in range(len(q)):
                i = start + r
                out.append(self._one(
                    q[r], sims[r], dots[r].copy(),
                    None if without_vector is None else without_vector[i],
                    None if without_entry is None else without_entry[i]))
        return out

    def _one(self, q: NDArray[np.float32], sims: NDArray[np.float32], dots: NDArray[np.float64],
             drop_vector: int | None, drop_entry: int | None) -> tuple[Evidence, int]:
        best = np.full(self.count, -1.0)
        np.maximum.at(best, self.entries, sims.astype(np.float64))
        norms2 = self.sum_norms2
        alive = self.sizes > 0
        if drop_vector is not None and drop_vector >= 0:
            owner = int(self.entries[drop_vector])
            keep = self.entries == owner
            keep[drop_vector] = False
            v = self.vectors[drop_vector].astype(np.float64)
            best[owner] = float(sims[keep].max()) if keep.any() else -1.0
            dots[owner] -= float(sims[drop_vector])
            norms2 = norms2.copy()
            norms2[owner] = max(0.0, norms2[owner] - 2 * float(self.sums[owner] @ v)
                                + float(v @ v))
            if not keep.any():
                alive = alive.copy()
                alive[owner] = False
        if drop_entry is not None and drop_entry >= 0:
            alive = alive.copy()
            alive[drop_entry] = False
        if not alive.any():
            return Evidence(0.0, 0.0, 0.0), -1
        norms = np.sqrt(norms2)
        profile = dots / np.where(norms > 0, norms, 1.0)
        fit = np.where(alive, PROFILE_WEIGHT * profile + (1 - PROFILE_WEIGHT) * best, -np.inf)
        top = int(np.argmax(fit))
        live = fit[alive]
        two = np.partition(live, -2)[-2:] if len(live) > 1 else live
        return evidence_of([float(x) for x in two], [float(best[alive].max())]), top


@dataclass(slots=True)
class Probes:
    x: list[NDArray[np.float64]] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, e: Evidence, right: bool, weight: float = 1.0) -> None:
        self.x.append(e.as_array())
        self.y.append(1.0 if right else 0.0)
        self.weight.append(weight)
        self.counts[kind] = self.counts.get(kind, 0) + 1


def probe_knowledge(k: Knowledge, probes: Probes, limit: int,
                    rng: np.random.Generator) -> None:
    """Leave-one-out probes from the shop's own questions (at most `limit` of each kind)."""
    multi = rng.permutation(np.flatnonzero((k.sizes[k.entries] >= 2) & k.askable))[:limit]
    for i, (e, top) in zip(multi, k.evidence(k.vectors[multi], without_vector=list(multi)),
                           strict=True):
        probes.add("in_scope", e, right=top == int(k.entries[i]))
    if k.count < 2:
        return  # without its only entry a shop knows nothing: no contrast to learn from
    chosen = rng.permutation(np.flatnonzero(k.askable))[:limit]
    for e, _ in k.evidence(k.vectors[chosen],
                           without_entry=[int(k.entries[i]) for i in chosen]):
        probes.add("out_of_scope", e, right=False)


def fit_shop(k: Knowledge, examples: NDArray[np.float32],
             rated: Sequence[tuple[Evidence, bool]],
             limit: int = 2_000, seed: int = 0) -> ScopeModel:
    """The shop's model from its knowledge, its out-of-scope examples and its rated turns (with
    the evidence each was answered on); the prior when the evidence is too thin (each class
    weighs half, whatever its count)."""
    probes = Probes()
    rng = np.random.default_rng(seed)
    if k.count:
        probe_knowledge(k, probes, limit, rng)
        if len(examples):
            for e, _ in k.evidence(examples):
                probes.add("marked_out_of_scope", e, right=False, weight=EXAMPLE_WEIGHT)
        # A rated turn counts with the evidence it was answered on: asked of today's
        # knowledge, a question since corrected would match its new phrasing and teach that a
        # close match is a wrong answer.
        for e, helpful in rated:
            probes.add("rated_helpful" if helpful else "rated_unhelpful", e,
                       right=helpful, weight=RATED_TURN_WEIGHT)
    y = np.array(probes.y)
    positives = int(y.sum())
    negatives = len(y) - positives
    if (probes.counts.get("in_scope", 0) < MIN_IN_SCOPE_PROBES or positives < 5
            or negatives < MIN_OUT_OF_SCOPE_PROBES):
        return ScopeModel(PRIOR.mean, PRIOR.scale, PRIOR.weights, PRIOR.bias, False,
                          probes.counts)
    weight = np.array(probes.weight)
    # Balanced classes: the decision's threshold (the shop's strictness) then reads as a chance
    # with even odds of in- and out-of-scope traffic.
    pos_w = weight[y == 1].sum()
    neg_w = weight[y == 0].sum()
    weight = np.where(y == 1, weight * 0.5 / pos_w, weight * 0.5 / neg_w) * len(y)
    model = fit_logistic(np.stack(probes.x), y, weight, probes.counts)
    if model.weights[0] <= 0:
        # More fit must never mean less likely right; data that says so is noise.
        return ScopeModel(PRIOR.mean, PRIOR.scale, PRIOR.weights, PRIOR.bias, False,
                          probes.counts)
    return model
