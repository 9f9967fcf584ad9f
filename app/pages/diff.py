"""Word-by-word differences between an item's answer and the knowledge it would change."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# Words with the spaces after them, so the pieces put back together give the text again.
_TOKENS = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class Piece:
    kind: str  # same | added | removed
    text: str


def word_diff(old: str, new: str) -> list[Piece]:
    """The pieces of both texts in reading order: what both say, what only the old one says
    (removed) and what only the new one says (added)."""
    a, b = _TOKENS.findall(old or ""), _TOKENS.findall(new or "")
    # Compare words without their trailing space, so a line break does not count as a change.
    matcher = difflib.SequenceMatcher(None, [t.strip() for t in a], [t.strip() for t in b],
                                      autojunk=False)
    pieces: list[Piece] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pieces.append(Piece("same", "".join(b[j1:j2])))
            continue
        if op in {"delete", "replace"}:
            pieces.append(Piece("removed", "".join(a[i1:i2])))
        if op in {"insert", "replace"}:
            pieces.append(Piece("added", "".join(b[j1:j2])))
    return pieces
