"""What every evaluation shares: its options, its instance and shop, the answers of labels."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from evaluation.client import Api
from evaluation.datasets import default_answer, read_answers
from evaluation.instance import Instance, start_instance
from knowledge.settings import Settings


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--answers", type=Path, help="CSV label,answer (default: one answer "
                        "text made from each label)")
    parser.add_argument("--oos-label", help="the label of out-of-scope questions, if any")
    parser.add_argument("--out", type=Path, default=Path("eval-out"),
                        help="where the JSON report and the PNG plot go")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--data-dir", help="the instance's data directory (default: a fresh "
                        "temporary one, removed afterwards)")
    parser.add_argument("--database-url", help="an empty PostgreSQL with pgvector to use "
                        "instead of an embedded one")


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
    with start_instance(args.data_dir, args.database_url, cache, jobs, settings) as instance:
        api = Api(instance.base_url, args.concurrency)
        try:
            yield instance, api
        finally:
            await api.close()


def source_label(response: dict[str, Any], answers: Answers) -> str | None:
    """The label of the first entry the bot's answer rests on (None for a fallback)."""
    if response.get("fallback"):
        return None
    sources = response.get("sources") or response.get("options") or []
    return answers.label_of(sources[0]["answer"]) if sources else None
