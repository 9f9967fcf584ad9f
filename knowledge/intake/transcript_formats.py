"""Call transcripts as speech-to-text services deliver them, read into speaker turns.

Four formats: speaker-labelled plain text (`Customer: ...`), a JSON list of turns (speaker,
text, start/end seconds), WebVTT (`<v Speaker>` voice tags or `Speaker:` inside a cue) and SRT
(`Speaker:` or `[Speaker]` inside a cue). Every speaker is given a role: the customer, the
shop's side (agent or owner), the bot, or unknown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from knowledge.errors import Invalid

FORMATS = ("text", "json", "vtt", "srt")
ROLES = ("customer", "agent", "owner", "bot", "unknown")
MAX_TURNS = 5_000
# A call of more than a day is no call.
MAX_SECONDS = 86_400

# What speech-to-text services and call centres call each side.
_ROLE_WORDS = {
    "customer": ("customer", "caller", "client", "user", "buyer", "guest", "visitor"),
    "agent": ("agent", "staff", "support", "rep", "representative", "operator",
              "shop assistant", "sales assistant", "store assistant", "employee", "advisor",
              "adviser", "shop", "store", "seller", "clerk"),
    "owner": ("owner", "manager", "founder"),
    # A speaker a speech-to-text service calls just "Assistant" is, in shop calls, the voice
    # assistant; people are "shop assistant", "sales assistant" or named.
    "bot": ("bot", "ivr", "ai", "virtual assistant", "voice assistant", "chatbot", "automated",
            "system", "assistant"),
}
_LABEL = re.compile(r"^\s*(?:\[(?P<bracket>[^\]\n]{1,40})\]|(?P<plain>[A-Za-z][\w .'-]{0,39}?))"
                    r"\s*:\s+(?P<text>.*)$")
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+(?P<speaker>[^>]{1,60})>(?P<text>.*?)(?:</v>|$)",
                    re.DOTALL)
_TIMING = re.compile(r"(?P<start>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})\s*-->\s*"
                     r"(?P<end>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})")
_TAGS = re.compile(r"</?[^>]{1,40}>")


@dataclass(frozen=True, slots=True)
class SpokenTurn:
    speaker: str                  # as the transcript names it
    role: str                     # customer | agent | owner | bot | unknown
    text: str
    start: float | None = None    # seconds from the start of the call
    end: float | None = None


def role_of(speaker: str) -> str:
    name = speaker.strip().lower()
    # Staff titles that contain "assistant" first, then the bot, then the rest.
    for word in ("shop assistant", "sales assistant", "store assistant"):
        if word in name:
            return "agent"
    for role in ("bot", "owner", "customer", "agent"):
        for word in _ROLE_WORDS[role]:
            if name == word or re.search(rf"\b{re.escape(word)}\b", name):
                return role
    return "unknown"


def detect_format(raw: str, filename: str | None = None) -> str:
    """The format from the file name's extension, else from the content."""
    if filename:
        suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        known = {"txt": "text", "text": "text", "json": "json", "vtt": "vtt", "srt": "srt"}
        if suffix in known:
            return known[suffix]
    head = raw.lstrip("\ufeff \t\r\n")
    if head.startswith("WEBVTT"):
        return "vtt"
    if head[:1] in "[{":
        return "json"
    if _TIMING.search(head[:200]) and re.match(r"\d+\s*\n", head):
        return "srt"
    return "text"


def _seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    total = 0.0
    for part in parts:
        total = total * 60 + float(part)
    return total


def _labelled(line: str) -> tuple[str, str] | None:
    """("Speaker", "text") when the line starts with a speaker label."""
    match = _LABEL.match(line)
    if match is None:
        return None
    speaker = (match.group("bracket") or match.group("plain") or "").strip()
    # "Note: ..." or a sentence with a colon is not a speaker unless it names a role.
    if match.group("plain") and len(speaker.split()) > 3:
        return None
    if role_of(speaker) == "unknown" and not match.group("bracket") and len(speaker) > 20:
        return None
    return speaker, match.group("text").strip()


def _plain(raw: str) -> list[SpokenTurn]:
    # Each turn's lines are gathered and joined once: a long turn of many lines stays linear.
    open_turns: list[tuple[str, float | None, list[str]]] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        # An optional leading time, "[00:12]" or "00:12", before the label.
        timed = re.match(r"^\s*\[?(?P<t>(?:\d+:)?\d{1,2}:\d{2}(?:[.,]\d+)?)\]?\s+(?P<rest>.*)$",
                         line)
        start = _seconds(timed.group("t")) if timed else None
        body = timed.group("rest") if timed else line
        labelled = _labelled(body)
        if labelled is None:
            if open_turns:  # a line that carries on the previous speaker's turn
                open_turns[-1][2].append(body.strip())
            continue
        speaker, text = labelled
        open_turns.append((speaker, start, [text]))
    return [SpokenTurn(speaker, role_of(speaker), " ".join(parts), start)
            for speaker, start, parts in open_turns]


def _json(raw: str) -> list[SpokenTurn]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Invalid(f"the transcript is not valid JSON: {exc.msg} at line {exc.lineno}",
                      field="transcript") from exc
    if isinstance(data, dict):
        data = data.get("turns") or data.get("segments") or data.get("utterances")
    if not isinstance(data, list):
        raise Invalid("a JSON transcript is a list of turns (or an object with `turns`)",
                      field="transcript")
    turns = []
    for number, item in enumerate(data):
        if not isinstance(item, dict):
            raise Invalid(f"turn {number} is not an object", field="transcript")
        speaker = item.get("speaker") or item.get("role") or item.get("channel") or ""
        text = item.get("text") or item.get("transcript") or ""
        if not isinstance(speaker, str) or not isinstance(text, str):
            raise Invalid(f"turn {number}: speaker and text are strings", field="transcript")
        start, end = item.get("start"), item.get("end")
        for name, value in (("start", start), ("end", end)):
            if value is not None and (not isinstance(value, int | float)
                                      or isinstance(value, bool)
                                      or not 0 <= value <= MAX_SECONDS):
                raise Invalid(f"turn {number}: {name} is a number of seconds from 0 to "
                              f"{MAX_SECONDS}", field="transcript", limit=MAX_SECONDS)
        if text.strip():
            turns.append(SpokenTurn(speaker.strip(), role_of(speaker), text.strip(),
                                    None if start is None else float(start),
                                    None if end is None else float(end)))
    return turns


def _cues(raw: str) -> list[SpokenTurn]:
    """WebVTT and SRT alike: blocks of a timing line and text lines."""
    turns: list[SpokenTurn] = []
    for block in re.split(r"\r?\n\s*\r?\n", raw.replace("\ufeff", "")):
        lines = [x for x in block.splitlines() if x.strip()]
        timing_at = next((i for i, x in enumerate(lines) if _TIMING.search(x)), None)
        if timing_at is None:
            continue  # the WEBVTT header, NOTE and STYLE blocks
        timing = _TIMING.search(lines[timing_at])
        assert timing is not None
        start, end = _seconds(timing.group("start")), _seconds(timing.group("end"))
        text = "\n".join(lines[timing_at + 1:])
        voiced = list(_VOICE.finditer(text))
        if voiced:
            for v in voiced:
                speaker = v.group("speaker").strip()
                said = " ".join(_TAGS.sub("", v.group("text")).split())
                if said:
                    turns.append(SpokenTurn(speaker, role_of(speaker), said, start, end))
            continue
        for line in text.splitlines():
            clean = " ".join(_TAGS.sub("", line).split())
            if not clean:
                continue
            labelled = _labelled(clean)
            if labelled is not None:
                speaker, said = labelled
                turns.append(SpokenTurn(speaker, role_of(speaker), said, start, end))
            elif turns:
                # Unlabelled: the same speaker goes on (merged() joins the pieces once).
                last = turns[-1]
                turns.append(SpokenTurn(last.speaker, last.role, clean, start, end))
            else:
                turns.append(SpokenTurn("", "unknown", clean, start, end))
    return turns


def merged(turns: list[SpokenTurn]) -> list[SpokenTurn]:
    """Consecutive turns of one speaker as one (captions split speech at arbitrary points)."""
    groups: list[list[SpokenTurn]] = []
    for t in turns:
        if groups and groups[-1][0].speaker == t.speaker and groups[-1][0].role == t.role:
            groups[-1].append(t)
        else:
            groups.append([t])
    out = []
    for group in groups:
        first, last = group[0], group[-1]
        out.append(SpokenTurn(first.speaker, first.role, " ".join(t.text for t in group),
                              first.start, last.end if last.end is not None else first.end))
    return out


def parse(raw: str, fmt: str) -> list[SpokenTurn]:
    """The transcript's turns, consecutive ones of a speaker merged."""
    if fmt not in FORMATS:
        raise Invalid(f"format is one of {', '.join(FORMATS)}", field="format")
    if "\x00" in raw:
        raise Invalid("the transcript contains a NUL character", field="transcript")
    reader = {"text": _plain, "json": _json, "vtt": _cues, "srt": _cues}[fmt]
    turns = merged(reader(raw))
    if not turns:
        raise Invalid(f"no speaker turns found in this {fmt} transcript (plain text needs "
                      "lines such as `Customer: ...` and `Agent: ...`)", field="transcript")
    if len(turns) > MAX_TURNS:
        raise Invalid(f"a transcript has at most {MAX_TURNS} turns", field="transcript",
                      limit=MAX_TURNS)
    return turns
