"""What every evaluation shares: its options, its instance and shop, the answers of labels."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from evaluation.client import Api, ShopKeys
from evaluation.datasets import default_answer, read_answers
from evaluation.instance import Instance, start_instance
from knowledge.settings import Settings


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--answers", type=Path, help="CSV label,answer (default: one answer "
                        "text made from each label)")
    parser.add_argument("--oos-label", help="the label of out-of-scope questions, if any")
    add_instance_options(parser)


def add_instance_options(parser: argparse.ArgumentParser) -> None:
    """Where the report goes, and the instance the evaluation starts (or uses)."""
    parser.add_argument("--out", type=Path, default=Path("eval-out"),
                        help="where the JSON report, the PNG plot and the server's log "
                        "(server.log) go")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--data-dir", help="the instance's data directory (default: a fresh "
                        "temporary one, removed afterwards)")
    parser.add_argument("--database-url", help="an empty PostgreSQL with pgvector to use "
                        "instead of an embedded one")


def add_scope_options(parser: argparse.ArgumentParser, oos_where: str = "asked") -> None:
    """Where out-of-scope questions come from, besides --oos-label."""
    parser.add_argument("--holdout-labels", type=float, default=0.0, metavar="FRACTION",
                        help="this share of the labels (chosen by --seed) gets no knowledge: "
                        "their questions are asked as in-domain out-of-scope questions")
    parser.add_argument("--oos", type=Path, metavar="FILE", help="CSV with a text column "
                        "(any label column is ignored): out-of-domain out-of-scope questions, "
                        + oos_where)
    parser.add_argument("--seed", type=int, default=7,
                        help="picks the held-out labels (and, in the loop, shuffles)")


class Answers:
    """The answer text of each label, and the label an answer text stands for."""

    def __init__(self, of_label: dict[str, str]) -> None:
        self.of_label = of_label
        self._label_of = {a.strip(): label for label, a in of_label.items()}

    @classmethod
    def for_labels(cls, labels: list[str], path: Path | None) -> Answers:
        given = read_answers(path) if path else {}
        return cls({label: given.get(label) or default_answer(label) for label in labels})

    def label_of(self, answer: str | None) -> str | None:
        return None if answer is None else self._label_of.get(answer.strip())


@asynccontextmanager
async def instance_and_api(args: argparse.Namespace, jobs: bool = False,
                           settings: dict[str, str] | None = None,
                           ) -> AsyncIterator[tuple[Instance, Api]]:
    """A fresh service of the evaluation's own, and a client for it."""
    # The ONNX export of the model is kept where `learnkb serve` keeps it, not redone per run.
    cache = Settings.from_env().model_cache_dir
    # The server's own output goes to a file in --out (made first), not between the bars.
    with start_instance(args.data_dir, args.database_url, cache, jobs, settings,
                        log=Path(args.out) / "server.log") as instance:
        api = Api(instance.base_url, args.concurrency)
        try:
            yield instance, api
        finally:
            await api.close()


async def calibrate(api: Api, shop: ShopKeys) -> dict[str, Any]:
    """Have the service recompute the shop's out-of-scope calibration now (it otherwise does
    so only now and then) from what the shop knows; what it computed."""
    result: dict[str, Any] = await api.call("POST", f"/v1/shops/{shop.slug}/calibration",
                                            shop.owner)
    return result


def source_label(response: dict[str, Any], answers: Answers) -> str | None:
    """The label of the first entry the bot's answer rests on (None when it fell back or
    declined)."""
    if response.get("fallback") or response.get("tier") in {"fallback", "decline"}:
        return None
    sources = response.get("sources") or response.get("options") or []
    return answers.label_of(sources[0]["answer"]) if sources else None
