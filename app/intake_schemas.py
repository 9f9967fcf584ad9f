"""msgspec structs of the intake endpoints: call transcripts and logged conversations."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from app.schemas import Metadata, ShortText
from knowledge.errors import Invalid
from knowledge.intake import conversations, transcripts


class TranscriptIn(Struct, forbid_unknown_fields=True):
    # The call as text (plain, JSON, WebVTT or SRT), or its turns as a list.
    transcript: Annotated[str, Meta(max_length=1_000_000)] | None = None
    turns: Annotated[list[dict[str, Any]], Meta(max_length=5_000)] | None = None
    format: Annotated[str, Meta(pattern="^(text|json|vtt|srt)$")] | None = None
    filename: Annotated[str, Meta(max_length=200)] | None = None
    conversation_id: ShortText | None = None
    user_id: ShortText | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)

    def to_domain(self) -> transcripts.TranscriptIn:
        if (self.transcript is None) == (self.turns is None):
            raise Invalid("send the call as `transcript` (text) or as `turns` (a list), "
                          "one of the two", field="transcript")
        text = self.transcript if self.transcript is not None else json.dumps(self.turns)
        fmt = self.format if self.transcript is not None else "json"
        return transcripts.TranscriptIn(text, fmt, self.filename, self.conversation_id,
                                        self.user_id, self.metadata)


class TranscriptOut(Struct):
    id: UUID
    created_at: datetime
    format: str
    sentiment: str
    summary: str
    entities: dict[str, Any]
    pairs: list[dict[str, Any]]
    unanswered: list[str]
    bot_answered: list[str]
    turn_sentiments: list[dict[str, Any]]
    queued: list[dict[str, Any]]
    needs_review: bool


class TranscriptPage(Struct):
    transcripts: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


class LoggedTurnIn(Struct, forbid_unknown_fields=True):
    turn_id: Annotated[str, Meta(min_length=1, max_length=200)]
    conversation_id: Annotated[str, Meta(min_length=1, max_length=200)]
    message: Annotated[str, Meta(min_length=1, max_length=100_000)]
    answer: Annotated[str, Meta(max_length=200_000)]
    confidence: Annotated[float, Meta(ge=0, le=1)]
    user_id: ShortText | None = None
    channel: Annotated[str, Meta(min_length=1, max_length=50)] = "chat"
    tier: Annotated[str, Meta(pattern="^(answer|options|clarify|fallback|handover)$")] | None = (
        None)
    handed_over: bool = False
    ab_variant: Annotated[str, Meta(max_length=50)] | None = None
    asked_at: datetime | None = None
    answered_at: datetime | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)

    def to_domain(self) -> conversations.LoggedTurn:
        return conversations.LoggedTurn(
            turn_id=self.turn_id, conversation_id=self.conversation_id, message=self.message,
            answer=self.answer, confidence=self.confidence, user_id=self.user_id,
            channel=self.channel, tier=self.tier, handed_over=self.handed_over,
            ab_variant=self.ab_variant, asked_at=self.asked_at, answered_at=self.answered_at,
            metadata=self.metadata)


class BulkTurnsIn(Struct, forbid_unknown_fields=True):
    turns: Annotated[list[LoggedTurnIn], Meta(min_length=1, max_length=1_000)]


class BulkTurnsOut(Struct):
    stored: int
    already_stored: int
    # The client's turn id -> learnkb's, for feedback and corrections on a logged turn.
    turn_ids: dict[str, str]
