"""How learnkb speaks: warm, plain, short; one template per confidence tier."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from knowledge.store.entries import Entry

_HEADER_LINE = re.compile(r"^\s*#{1,6}\s+.*$", re.MULTILINE)
_OPENERS = ("Happy to help!", "Sure!", "Good question!")


def plain_answer(entry: Entry) -> str:
    """An entry's answer as a customer should read it (no Markdown section headers)."""
    text = entry.answer
    if entry.source == "document":
        section = entry.metadata.get("section")
        if section and text.startswith(f"{section}\n"):
            text = text[len(section) + 1:]
        text = _HEADER_LINE.sub("", text)
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def title(entry: Entry, limit: int = 90) -> str:
    """A short name for an entry when offering it as an option."""
    label = entry.question or entry.metadata.get("section") or plain_answer(entry)
    label = " ".join(str(label).split())
    return label if len(label) <= limit else label[: limit - 1].rstrip() + "…"


def answer(question: str, entry: Entry) -> str:
    opener = _OPENERS[zlib.crc32(question.encode()) % len(_OPENERS)]
    return f"{opener} {plain_answer(entry)}"


def options(entries: Sequence[Entry]) -> str:
    bullets = "\n".join(f"• {title(e)}" for e in entries)
    return ("I want to make sure I give you the right answer. Did you mean one of these?\n"
            f"{bullets}\nJust tell me which one and I'll take it from there.")


def clarify(entries: Sequence[Entry]) -> str:
    if entries:
        hint = " or ".join(f"“{title(e, 60)}”" for e in entries[:2])
        return ("Just to be sure I'm following: could you tell me a little more about what you "
                f"need? For example, is it about {hint}?")
    return ("Just to be sure I'm following: could you tell me a little more about what you "
            "need?")


def repeated(entries: Sequence[Entry]) -> str:
    return "I noticed you're asking about this again, sorry it wasn't clear. " + clarify(entries)


def fallback() -> str:
    return ("I'm sorry, I don't have an answer to that yet. I've noted your question so the "
            "team can add one. Is there anything else I can help you with?")


def handover() -> str:
    return ("I want to make sure you get the right answer, so I'm handing this over to a "
            "person on our team. They'll pick it up from here.")


def decline(redirect: str | None) -> str:
    """A question the owner marked as not the shop's business, with the owner's redirect."""
    if redirect:
        return f"I'm sorry, that's not something we can help with here. {redirect}"
    return ("I'm sorry, that's not something we can help with here. Is there anything about "
            "our shop I can help you with?")
