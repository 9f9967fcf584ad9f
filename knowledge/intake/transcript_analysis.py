"""What a call says, with no language model: question/answer pairs, sentiment, entities and an
extractive summary, all from the (already redacted) speaker turns."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from knowledge.intake.transcript_formats import SpokenTurn

SHOP_SIDE = ("agent", "owner")
# VADER's compound score: at or beyond these a turn is positive or negative.
POSITIVE = 0.05
NEGATIVE = -0.05
# A call with both a clearly positive and a clearly negative customer turn is mixed.
MIXED_STRENGTH = 0.4
SUMMARY_SENTENCES = 3
MAX_SCORED_SENTENCES = 50
MAX_WHOLE_CHARS = 2_000
MIN_ANSWER_WORDS = 1

# Words of shop talk that VADER's general lexicon misses or reads the wrong way.
_SHOP_LEXICON = {
    "waiting": -1.2, "waited": -1.2, "still": -0.4, "nobody": -1.2, "never": -0.6,
    "broken": -2.0, "damaged": -2.0, "refund": -0.5, "late": -1.2, "missing": -1.5,
    "wrong": -1.5, "ridiculous": -2.5, "unacceptable": -2.5, "cancel": -0.8,
    "complaint": -1.5, "again": -0.3, "useless": -2.5, "scam": -3.0, "overcharged": -2.0,
}
_QUESTION_START = re.compile(
    r"^(?:(?:(?:hi|hello|hey) there|good (?:morning|afternoon|evening)|so|and|but|um|uh|hi|"
    r"hello|hey|also|oh|ok|okay|yeah|yes|right|well|then|sorry|excuse me)[,.!]?\s+)*"
    r"(how|what|when|where|why|which|who|whom|whose|can|could|do|does|did|is|are|was|were|"
    r"will|would|should|shall|may|might|have|has|had|am|any|is there|are there)\b",
    re.IGNORECASE)
# A question inside a longer sentence: a question word or verb, then its subject.
_INVERTED = re.compile(
    r",\s*(?:and\s+)?(?:how|what|when|where|which|who|why|do|does|did|can|could|is|are|will|"
    r"would|have|has)\s+(?:you|i|we|it|they|there|that|this|he|she|much|many|long|late|soon)\b",
    re.IGNORECASE)
# A sentence ends at . ! or ? before a space or the end ("$12.50" stays one).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Holding phrases: the shop's side is not answering yet. "Yes" and "no" are kept: they are the
# answer to a yes/no question.
_FILLER = re.compile(
    r"^(?:ok(?:ay)?|sure|right|well|so|sorry|hi|hello|hey|hmm+|um+|uh+|er+|ah+|"
    r"one (?:moment|second|sec|minute)|"
    r"let me (?:check|see|look)(?: that| this)?(?: for you)?|just a (?:moment|second|sec)|"
    r"hold on|bear with me|give me a (?:moment|second|sec)|good question|great question|"
    r"thanks?(?: you)?|i see|of course|certainly|mm+)\b[\s,.!…-]*", re.IGNORECASE)
# Sentences of the shop's side that are about the call, not an answer: greetings, names,
# apologies for the line, holding.
_META = re.compile(
    r"\b(?:speaking|this is \w+|thanks? (?:you )?for (?:calling|waiting|holding)|welcome to|"
    r"breaking up|can you hear me|bear with me|sorry about that|sorry to keep you|"
    r"(?:good )?(?:morning|afternoon|evening)|hi there|hello there|how can i help|"
    r"what can i do for you|anything else|put you through|transfer you|pass you (?:over|on)|"
    r"i'?m (?:so |really |very |terribly )?sorry|i apologi[sz]e|(?:we|i) apologi[sz]e|"
    r"sorry (?:to hear|for the|about)|that'?s not (?:good|ok|okay|acceptable)|"
    r"i understand|i hear you)\b", re.IGNORECASE)
# Replies that admit not knowing: the question is still open (a gap), not answered.
_NOT_KNOWN = re.compile(
    r"\b(?:(?:i|we) (?:honestly |really |just )?(?:don'?t|do not) know|not sure|no idea|"
    r"can'?t say|couldn'?t (?:tell|say)|doesn'?t (?:give|show|say)|not (?:really )?my area|"
    r"(?:i'?ll|we'?ll|let me) (?:have to )?(?:find out|ask|check (?:and|with))|"
    r"call you back|get back to you|can'?t tell|hard to say|(?:i think )?we'?ve lost you|"
    r"(?:you'?re|you are) breaking up|lost (?:the|your) (?:line|connection))\b", re.IGNORECASE)
# Asking the shop to do something is a request, not a question about the shop.
_REQUEST = re.compile(
    r"^(?:\w+,?\s+)*?(?:can|could|would|will)\s+(?:you|i|we)\s+(?:please\s+)?"
    r"(?:reserve|book|put|hold|send|email|e-mail|text|call|ring|transfer|cancel|wrap|"
    r"set aside|keep|order|speak|talk|sign (?:me|us) up|save (?:me|us)|deliver it|"
    r"drop it|bring it)\b", re.IGNORECASE)
# Small talk and rhetoric: asked, but not for anything the shop knows.
_SMALL_TALK = re.compile(
    r"\b(?:how are you|how'?s it going|how do you do|isn'?t it|aren'?t you|is anyone there|"
    r"are you there|can you hear me|how would i know|are you kidding|are you serious|"
    r"what do you (?:mean|think)|you know what i mean|right\?$)", re.IGNORECASE)

ORDER_NUMBER = re.compile(r"(?:\border(?: number| no\.?| #)?\s*#?\s*|#)(?P<n>[A-Z]{0,3}-?\d{4,})",
                          re.IGNORECASE)
PRODUCT_CODE = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z][A-Z0-9]*-?\d[A-Z0-9-]*\b")
AMOUNT = re.compile(
    r"(?:[$€£]\s?\d[\d,]*(?:\.\d{1,2})?|\b\d[\d,]*(?:\.\d{1,2})?\s?"
    r"(?:euros?|dollars?|pounds?|eur|usd|gbp)\b)", re.IGNORECASE)
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
DATE = re.compile(
    rf"\b(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?|"
    rf"\d{{1,2}}(?:st|nd|rd|th)? (?:of )?(?:{_MONTHS})\b|(?:{_MONTHS}) \d{{1,2}}(?:st|nd|rd|th)?|"
    r"(?:next |last |this )?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
    r"today|tomorrow|yesterday)\b", re.IGNORECASE)
_STOP_WORDS = """
a an the and or but if of to in on at for with from by is are was were be been am i you he she
it we they me my your our their this that these those do does did have has had can could will
would should may might so just not no yes ok okay um uh hi hello thanks thank please what how
when where why which who there here about as into than then too very also get got anyone
someone anybody somebody hey
"""
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True, slots=True)
class Pair:
    """A customer's question and the shop's answer, with where they were said."""

    question: str
    answer: str
    question_turn: int
    answer_turns: tuple[int, ...]
    start: float | None
    end: float | None
    speaker: str                  # who answered, as the transcript names them

    def excerpt(self, turns: list[SpokenTurn]) -> list[dict[str, Any]]:
        picked = (self.question_turn, *self.answer_turns)
        return [{"speaker": turns[i].speaker, "role": turns[i].role, "text": turns[i].text,
                 "start": turns[i].start, "end": turns[i].end} for i in picked]


@dataclass(frozen=True, slots=True)
class Analysis:
    pairs: list[Pair]
    unanswered: list[str]         # nobody answered: knowledge gaps
    bot_answered: list[str]       # only the bot answered: no pair, no gap
    sentiment: str
    turn_sentiments: list[dict[str, Any]]
    entities: dict[str, Any]
    summary: str
    speakers: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon.update(_SHOP_LEXICON)
    return analyzer


def sentiment_score(text: str) -> float:
    """VADER's compound score of a turn. Its cost grows with the square of a text's length, so
    a long turn is scored sentence by sentence over its first MAX_SCORED_SENTENCES: a speech
    cannot stall the server."""
    if len(text) <= MAX_WHOLE_CHARS:
        return float(_analyzer().polarity_scores(text)["compound"])
    scored = [float(_analyzer().polarity_scores(s[:MAX_WHOLE_CHARS])["compound"])
              for s in sentences(text)[:MAX_SCORED_SENTENCES]]
    return sum(scored) / len(scored) if scored else 0.0


def label_of(score: float) -> str:
    return "positive" if score >= POSITIVE else "negative" if score <= NEGATIVE else "neutral"


def call_sentiment(scores: list[float]) -> str:
    """The customer's mood over the call: mixed when it was clearly both."""
    if not scores:
        return "neutral"
    if max(scores) >= MIXED_STRENGTH and min(scores) <= -MIXED_STRENGTH:
        return "mixed"
    mean = sum(scores) / len(scores)
    # The end of a call weighs as much as all before it: an angry caller soothed is mixed.
    return label_of((mean + scores[-1]) / 2)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def questions_in(text: str) -> list[str]:
    """The sentences of a turn that ask the shop something it knows.

    A question opens like one ("how", "do you", "is there") or, for a speech-to-text service
    that wrote no punctuation, at least reads like one. Declarative echoes ("so it sat there
    for two weeks?"), small talk, rhetoric and requests ("can you put one aside?") are not.
    """
    found = []
    for s in sentences(text):
        # "Hello?" or "Is anyone there?" asks for attention, not for knowledge.
        if len(s.split()) < 3 or not _words(s):
            continue
        # "Hi, I need keys cut, do you do that?": the question may follow a statement.
        asks = _QUESTION_START.match(s) or (s.endswith("?") and _INVERTED.search(s))
        if not asks or s.endswith("!"):
            continue
        if _SMALL_TALK.search(s) or _REQUEST.match(s):
            continue
        found.append(s if s.endswith("?") else s.rstrip(".") + "?")
    return found


def substantive(text: str) -> str:
    """What in a shop-side turn answers anything: without the holding phrases that open it
    ("let me check... okay, so"), the sentences about the call itself (greetings, the line)
    and the questions it asks back ("what size is he?")."""
    kept = []
    for sentence in sentences(text):
        rest = sentence
        while True:
            stripped = _FILLER.sub("", rest, count=1).strip()
            if stripped == rest:
                break
            rest = stripped
        if not rest or rest.endswith("?") or _META.search(rest):
            continue
        if not _words(rest) and not re.match(r"(?i)^(?:yes|yep|yeah|no|nope)\b", rest):
            continue
        kept.append(rest)
    return " ".join(kept)


def extract_pairs(turns: list[SpokenTurn]) -> tuple[list[Pair], list[str], list[str]]:
    """Each customer question with the shop side's answer to it.

    The answer is what the agent or owner says after the question, before the customer asks
    something else; holding phrases ("one moment, let me check") are skipped, the bot's words
    never count. Questions without a pair are returned apart: those nobody answered, and those
    only the bot answered.
    """
    pairs: list[Pair] = []
    unanswered: list[str] = []
    bot_answered: list[str] = []
    # Each turn read once: every question looks ahead over the turns after it.
    asked_in = [questions_in(t.text) if t.role == "customer" else [] for t in turns]
    said_in = [substantive(t.text) if t.role in SHOP_SIDE else "" for t in turns]
    for i, turn in enumerate(turns):
        asked = asked_in[i]
        if not asked:
            continue
        answer_parts: list[str] = []
        used: list[int] = []
        bot_spoke = False
        for j in range(i + 1, len(turns)):
            nxt = turns[j]
            if nxt.role == "customer":
                if asked_in[j] or answer_parts:
                    break  # a new question, or the customer reacting to the answer
                continue  # "ok", "sure": the customer waits for the answer
            if nxt.role not in SHOP_SIDE:
                bot_spoke = bot_spoke or nxt.role == "bot"
                continue  # the bot or an unknown voice: never taken as the shop's answer
            said = said_in[j]
            if len(said.split()) < MIN_ANSWER_WORDS:
                continue  # holding, greeting, or asking back: the answer is still to come
            answer_parts.append(said)
            used.append(j)
        # "I don't know, sorry" leaves the question open: a gap, not an answer.
        answer = " ".join(x for x in sentences(" ".join(answer_parts))
                          if not _NOT_KNOWN.search(x))
        if not answer:
            (bot_answered if bot_spoke and not answer_parts else unanswered).append(
                " ".join(asked))
            continue
        last = turns[used[-1]]
        # Two questions in one breath ("do you do gluten-free? how much notice?") are two
        # pairs; the reply is taken as the answer to each.
        for question in asked:
            pairs.append(Pair(question, answer, i, tuple(used), turn.start,
                              last.end if last.end is not None else last.start,
                              turns[used[0]].speaker))
    return pairs, unanswered, bot_answered


def entities_of(turns: list[SpokenTurn], known_codes: set[str],
                redacted: dict[str, int]) -> dict[str, Any]:
    """Order numbers, product codes (marked when the shop's knowledge names them), amounts,
    dates; phone numbers and e-mail addresses only counted (they were redacted)."""
    # The bot's scripted words ("how can I help you today?") are no facts of this call.
    text = "\n".join(t.text for t in turns if t.role != "bot")
    orders = list(dict.fromkeys(m.group("n").upper() for m in ORDER_NUMBER.finditer(text)))
    codes = [c for c in dict.fromkeys(m.group(0).upper() for m in PRODUCT_CODE.finditer(text))
             if c not in orders]
    return {
        "order_numbers": orders,
        "products": [{"code": c, "known": c.lower() in known_codes} for c in codes],
        "amounts": list(dict.fromkeys(m.group(0).strip() for m in AMOUNT.finditer(text))),
        "dates": list(dict.fromkeys(m.group(0).strip() for m in DATE.finditer(text))),
        "phone_numbers": redacted.get("phone", 0),
        "email_addresses": redacted.get("email", 0),
    }


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP and len(w) > 2]


def summarize(turns: list[SpokenTurn], limit: int = SUMMARY_SENTENCES) -> str:
    """The call's most central sentences (by shared content words), in the order said."""
    said = [(t.speaker, s) for t in turns if t.role != "bot" for s in sentences(t.text)]
    said = [(who, s) for who, s in said if len(_words(s)) >= 2]
    if not said:
        return ""
    frequency = Counter(w for _, s in said for w in set(_words(s)))
    scored = [(sum(frequency[w] for w in set(_words(s))) / (len(set(_words(s))) ** 0.5), i)
              for i, (_, s) in enumerate(said)]
    chosen = sorted(i for _, i in sorted(scored, reverse=True)[:limit])
    return " ".join(f"{said[i][0] or 'Someone'}: {said[i][1]}" for i in chosen)


def analyse(turns: list[SpokenTurn], known_codes: set[str],
            redacted: dict[str, int]) -> Analysis:
    pairs, unanswered, bot_answered = extract_pairs(turns)
    turn_sentiments = []
    scores = []
    for i, t in enumerate(turns):
        if t.role != "customer":
            continue
        score = sentiment_score(t.text)
        scores.append(score)
        turn_sentiments.append({"turn": i, "score": round(score, 3), "label": label_of(score)})
    return Analysis(pairs=pairs, unanswered=unanswered, bot_answered=bot_answered,
                    sentiment=call_sentiment(scores),
                    turn_sentiments=turn_sentiments,
                    entities=entities_of(turns, known_codes, redacted),
                    summary=summarize(turns),
                    speakers={t.speaker: t.role for t in turns})
