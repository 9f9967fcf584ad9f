"""Labelled CSV files: questions with their label, answers per label, question pairs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# The column that holds the label may be named any of these (banking77 says "category").
LABEL_COLUMNS = ("label", "category", "intent")


class DatasetError(ValueError):
    """A file the harness cannot read as the labelled data it needs."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    duplicate: bool


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                    for row in reader]
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({exc})") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}: the header needs the column(s) {', '.join(missing)}; "
                           f"it has {', '.join(header) or 'none'}")
    return rows, header


def read_examples(path: Path) -> list[Example]:
    """`text,label` rows (the label column may also be called category or intent)."""
    rows, header = _rows(path, ("text",))
    column = next((c for c in LABEL_COLUMNS if c in header), None)
    if column is None:
        raise DatasetError(f"{path}: the header needs a label column "
                           f"({' or '.join(LABEL_COLUMNS)}); it has {', '.join(header)}")
    examples = [Example(r["text"], r[column]) for r in rows if r["text"] and r[column]]
    if not examples:
        raise DatasetError(f"{path}: no labelled rows")
    return examples


def read_texts(path: Path) -> list[str]:
    """The `text` column of a CSV, each text once, in file order (any other column, a label
    among them, is ignored): questions that are outside the shop's business."""
    rows, _ = _rows(path, ("text",))
    texts = list(dict.fromkeys(r["text"] for r in rows if r["text"]))
    if not texts:
        raise DatasetError(f"{path}: no texts")
    return texts


def read_answers(path: Path) -> dict[str, str]:
    """`label,answer` rows: the answer the knowledge base gives for each label."""
    rows, _ = _rows(path, ("label", "answer"))
    return {r["label"]: r["answer"] for r in rows if r["label"] and r["answer"]}


def read_pairs(path: Path) -> list[Pair]:
    """`text_a,text_b,duplicate` rows; duplicate is 1/0 (or true/false, yes/no)."""
    rows, _ = _rows(path, ("text_a", "text_b", "duplicate"))
    pairs = []
    for number, r in enumerate(rows, start=2):
        flag = r["duplicate"].lower()
        if flag not in {"1", "0", "true", "false", "yes", "no"}:
            raise DatasetError(f"{path}, line {number}: duplicate is 1 or 0, not {flag!r}")
        if r["text_a"] and r["text_b"]:
            pairs.append(Pair(r["text_a"], r["text_b"], flag in {"1", "true", "yes"}))
    if not pairs:
        raise DatasetError(f"{path}: no pairs")
    return pairs


def default_answer(label: str) -> str:
    """An answer text for a label when no answers file is given (each label its own)."""
    words = label.replace("_", " ").replace("-", " ").strip()
    return f"Here is what you need to know about {words}."


def first_per_label(examples: list[Example], k: int) -> dict[str, list[str]]:
    """Up to k texts of each label, in file order (the order the data set gives them)."""
    out: dict[str, list[str]] = {}
    for e in examples:
        texts = out.setdefault(e.label, [])
        if len(texts) < k and e.text not in texts:
            texts.append(e.text)
    return out
