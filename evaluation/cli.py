"""`learnkb eval` and its subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from evaluation import duplicates, loop, retrieval, transcripts
from evaluation.client import ServiceError
from evaluation.datasets import DatasetError

COMMANDS = {"retrieval": retrieval.run, "loop": loop.run, "duplicates": duplicates.run,
            "transcripts": transcripts.run}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "eval", help="measure answering, learning, dedup and transcript intake on a labelled "
        "data set")
    eval_sub = parser.add_subparsers(dest="eval_cmd", required=True)
    retrieval.add_parser(eval_sub)
    loop.add_parser(eval_sub)
    duplicates.add_parser(eval_sub)
    transcripts.add_parser(eval_sub)
    return parser


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    # Only the progress bars, the tables and the last line: one line per request (httpx) or
    # a library's notes (matplotlib's font cache) would bury them; the server's own output
    # goes to server.log in --out.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        result: dict[str, Any] = asyncio.run(COMMANDS[args.eval_cmd](args))
    except (DatasetError, ValueError) as exc:
        print(f"learnkb eval: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except ServiceError as exc:
        print(f"learnkb eval: the service refused a request: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(f"\nreport and plot written to {args.out}/", file=sys.stderr)
    return result
