"""msgspec structs at the HTTP edge: what callers send and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from knowledge.answering.retrieval import Candidate
from knowledge.learning.queue import QueueItem
from knowledge.store.documents import Document, IngestResult
from knowledge.store.entries import Entry
from knowledge.store.keys import ApiKey
from knowledge.store.shops import SLUG, Shop

# Hard caps that bound parsing work; the tighter, configurable limits are checked in knowledge/.
Text = Annotated[str, Meta(max_length=100_000)]
ShortText = Annotated[str, Meta(max_length=200)]
Label = Annotated[str, Meta(max_length=100)]
Variants = Annotated[list[Annotated[str, Meta(max_length=100_000)]], Meta(max_length=50)]
Metadata = Annotated[dict[str, Any], Meta(max_length=50)]


class AnswerIn(Struct, forbid_unknown_fields=True):
    question: Annotated[str, Meta(min_length=1, max_length=100_000)]
    conversation_id: ShortText | None = None
    user_id: ShortText | None = None
    channel: Annotated[str, Meta(min_length=1, max_length=50)] = "chat"
    ab_variant: Annotated[str, Meta(max_length=50)] | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)
    # false for test and monitoring questions: logged, but a fallback opens no knowledge gap
    learn: bool = True


class SourceOut(Struct):
    entry_id: UUID
    knowledge_id: UUID
    version: int
    question: str | None
    answer: str
    category: str | None
    source: str
    document_id: UUID | None
    score: float
    similarity: float | None
    vector_rank: int | None
    lexical_rank: int | None
    # To the mean of the entry's questions, plainly and in the shop's whitened space.
    profile_similarity: float | None = None
    discriminative_similarity: float | None = None

    @classmethod
    def of(cls, c: Candidate) -> SourceOut:
        e = c.entry
        return cls(entry_id=e.entry_id, knowledge_id=e.id, version=e.version,
                   question=e.question, answer=e.answer, category=e.category, source=e.source,
                   document_id=e.document_id, score=round(c.score, 6),
                   similarity=_rounded(c.similarity),
                   vector_rank=c.vector_rank, lexical_rank=c.lexical_rank,
                   profile_similarity=_rounded(c.profile_similarity),
                   discriminative_similarity=_rounded(c.discriminative_similarity))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class AnswerOut(Struct):
    turn_id: UUID
    conversation_id: str
    tier: str
    confidence: float
    answer: str
    fallback: bool
    sources: list[SourceOut]
    options: list[SourceOut]
    latency_ms: float
    # Why the bot answered or fell back: the evidence, the shop's calibrated chance that the
    # best entry is right, the strictness it was held to, and what decided (answering/scope.py).
    scope: dict[str, Any] = msgspec.field(default_factory=dict)


class SearchOut(Struct):
    query: str
    results: list[SourceOut]
    path: str


class EntryIn(Struct, forbid_unknown_fields=True):
    answer: Text
    question: Text | None = None
    variants: Variants = msgspec.field(default_factory=list)
    category: Label | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class EntryPatch(Struct, forbid_unknown_fields=True):
    answer: Text | None = None
    question: Text | None = None
    variants: Variants | None = None
    category: Label | None = None
    metadata: Metadata | None = None
    reason: Annotated[str, Meta(max_length=1_000)] | None = None
    expected_version: Annotated[int, Meta(ge=1)] | None = None


class EntryOut(Struct):
    entry_id: UUID
    id: UUID
    version: int
    shop_id: int
    question: str | None
    variants: list[str]
    answer: str
    category: str | None
    source: str
    document_id: UUID | None
    metadata: dict[str, Any]
    live: bool
    created_by: str | None
    change_reason: str | None
    valid_from: datetime
    valid_to: datetime | None
    supersedes: UUID | None
    superseded_by: UUID | None

    @classmethod
    def of(cls, e: Entry) -> EntryOut:
        return cls(entry_id=e.entry_id, id=e.id, version=e.version, shop_id=e.shop_id,
                   question=e.question, variants=e.variants, answer=e.answer,
                   category=e.category, source=e.source, document_id=e.document_id,
                   metadata=e.metadata, live=e.live, created_by=e.created_by,
                   change_reason=e.change_reason, valid_from=e.valid_from, valid_to=e.valid_to,
                   supersedes=e.supersedes, superseded_by=e.superseded_by)


class EntryPage(Struct):
    items: list[EntryOut]
    total: int
    limit: int
    offset: int


class DocumentOut(Struct):
    id: UUID
    shop_id: int
    name: str
    media_type: str
    content_hash: str
    byte_size: int
    chunk_count: int
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def of(cls, d: Document) -> DocumentOut:
        return cls(id=d.id, shop_id=d.shop_id, name=d.name, media_type=d.media_type,
                   content_hash=d.content_hash, byte_size=d.byte_size,
                   chunk_count=d.chunk_count, version=d.version, created_at=d.created_at,
                   updated_at=d.updated_at, deleted_at=d.deleted_at)


class IngestOut(Struct):
    document: DocumentOut
    changed: bool
    chunks_added: int
    chunks_retired: int

    @classmethod
    def of(cls, r: IngestResult) -> IngestOut:
        return cls(DocumentOut.of(r.document), r.changed, r.chunks_added, r.chunks_retired)


class ShopIn(Struct, forbid_unknown_fields=True):
    # Documented; knowledge checks it whole and says what a slug is.
    slug: Annotated[str, Meta(min_length=1, max_length=63, pattern=SLUG.pattern)]
    name: Annotated[str, Meta(min_length=1, max_length=200)]


class ShopPatch(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    auto_approve_threshold: Annotated[int, Meta(ge=0, le=100)] | None = None
    answer_threshold: Annotated[float, Meta(ge=0, le=1)] | None = None
    options_threshold: Annotated[float, Meta(ge=0, le=1)] | None = None
    dedup_question_similarity: Annotated[float, Meta(ge=0, le=1)] | None = None
    dedup_answer_ratio: Annotated[int, Meta(ge=0, le=100)] | None = None
    scope_strictness: Annotated[float, Meta(ge=0, le=1)] | None = None
    # Days raw text is kept; send null to keep it for good.
    retention_days: Annotated[int, Meta(ge=1, le=36500)] | msgspec.UnsetType | None = (
        msgspec.UNSET)
    # Requests per second per key of the shop; send null for the server's default.
    rate_limit_per_second: (Annotated[float, Meta(ge=0.1, le=100000)] | msgspec.UnsetType
                            | None) = msgspec.UNSET


class ShopOut(Struct):
    id: int
    slug: str
    name: str
    auto_approve_threshold: int
    answer_threshold: float
    options_threshold: float
    dedup_question_similarity: float
    dedup_answer_ratio: int
    created_at: datetime
    scope_strictness: float = 0.25
    retention_days: int | None = None
    rate_limit_per_second: float | None = None

    @classmethod
    def of(cls, s: Shop) -> ShopOut:
        return cls(id=s.id, slug=s.slug, name=s.name,
                   auto_approve_threshold=s.auto_approve_threshold,
                   answer_threshold=round(s.answer_threshold, 4),
                   options_threshold=round(s.options_threshold, 4),
                   dedup_question_similarity=round(s.dedup_question_similarity, 4),
                   dedup_answer_ratio=s.dedup_answer_ratio, created_at=s.created_at,
                   scope_strictness=round(s.scope_strictness, 4),
                   retention_days=s.retention_days,
                   rate_limit_per_second=s.rate_limit_per_second)


class KeyIn(Struct, forbid_unknown_fields=True):
    role: Annotated[str, Meta(pattern="^(admin|owner|bot)$")]
    shop: Annotated[str, Meta(max_length=63)] | None = None
    name: ShortText = ""


class KeyOut(Struct):
    id: UUID
    role: str
    shop_id: int | None
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, k: ApiKey) -> KeyOut:
        return cls(id=k.id, role=k.role.value, shop_id=k.shop_id, name=k.name, prefix=k.prefix,
                   created_at=k.created_at, revoked_at=k.revoked_at,
                   last_used_at=k.last_used_at)


class NewKeyOut(Struct):
    key: KeyOut
    secret: str


class Health(Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


Note = Annotated[str, Meta(max_length=100_000)]


class FeedbackIn(Struct, forbid_unknown_fields=True):
    turn_id: UUID
    type: Annotated[str, Meta(pattern="^(thumbs_up|thumbs_down|star_rating|emoji)$")]
    rating: Annotated[int, Meta(ge=1, le=5)] | None = None
    emoji: Annotated[str, Meta(max_length=16)] | None = None
    reason: Note | None = None


class CorrectionIn(Struct, forbid_unknown_fields=True):
    corrected_answer: Note
    turn_id: UUID | None = None
    question: Note | None = None
    original_response: Note | None = None
    priority: Annotated[str, Meta(pattern="^(low|normal|high|urgent)$")] = "normal"
    context: Note | None = None


class SuggestionIn(Struct, forbid_unknown_fields=True):
    question: Note
    answer: Note
    category: Label | None = None
    confidence: Annotated[int, Meta(ge=0, le=100)] = 80


class QueueItemOut(Struct):
    id: UUID
    shop_id: int
    status: str
    kind: str
    source_type: str
    question: str | None
    proposed_content: str | None
    category: str | None
    confidence: int
    priority: str
    observations: int
    conflict_entry_id: UUID | None
    target_entry_id: UUID | None
    merged_into: UUID | None
    applied_knowledge_id: UUID | None
    review_note: str | None
    signals: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    reviewed_at: datetime | None
    applied_at: datetime | None
    nearest: dict[str, Any] | None = None
    nearest_similarity: float | None = None
    conflict: dict[str, Any] | None = None
    # Marked by its owner as outside the shop's business, with the redirect customers get.
    out_of_scope: bool = False
    redirect: str | None = None

    @classmethod
    def of(cls, item: QueueItem, nearest: dict[str, Any] | None = None,
           conflict: dict[str, Any] | None = None) -> QueueItemOut:
        return cls(id=item.id, shop_id=item.shop_id, status=item.status, kind=item.kind,
                   source_type=item.source_type, question=item.question,
                   proposed_content=item.proposed_content, category=item.category,
                   confidence=item.confidence_score, priority=item.priority,
                   observations=item.observations, conflict_entry_id=item.conflict_entry_id,
                   target_entry_id=item.target_entry_id, merged_into=item.merged_into,
                   applied_knowledge_id=item.applied_knowledge_id,
                   review_note=item.review_note, signals=item.signals,
                   created_at=item.created_at, updated_at=item.updated_at,
                   reviewed_at=item.reviewed_at, applied_at=item.applied_at, nearest=nearest,
                   nearest_similarity=None if item.nearest_similarity is None
                   else round(item.nearest_similarity, 4), conflict=conflict,
                   out_of_scope=bool(item.metadata.get("out_of_scope")),
                   redirect=item.metadata.get("redirect"))


class QueuePage(Struct):
    items: list[QueueItemOut]
    total: int
    limit: int
    offset: int


class SubmittedOut(Struct):
    outcome: str
    auto_approved: bool
    item: QueueItemOut | None


class FeedbackOut(Struct):
    feedback_id: UUID
    sentiment: str
    queued: SubmittedOut | None


class CorrectionOut(Struct):
    correction_id: UUID
    queued: SubmittedOut


class ApproveIn(Struct, forbid_unknown_fields=True):
    question: Note | None = None
    answer: Note | None = None
    category: Label | None = None
    note: Note | None = None


class AnswerGapIn(Struct, forbid_unknown_fields=True):
    answer: Note
    category: Label | None = None


class PairIn(Struct, forbid_unknown_fields=True):
    a: Note
    b: Note


class CompareIn(Struct, forbid_unknown_fields=True):
    pairs: Annotated[list[PairIn], Meta(min_length=1, max_length=256)]


class ComparisonOut(Struct):
    similarity: float
    text_ratio: float
    same_identifiers: bool
    duplicate: bool
    duplicate_up_to: float | None


class CompareOut(Struct):
    question_similarity: float
    text_ratio: int
    results: list[ComparisonOut]


class RejectIn(Struct, forbid_unknown_fields=True):
    reason: Note


class MergeIn(Struct, forbid_unknown_fields=True):
    into: UUID


class BulkIn(Struct, forbid_unknown_fields=True):
    action: Annotated[str, Meta(pattern="^(approve|reject|merge|out_of_scope)$")]
    ids: Annotated[list[UUID], Meta(min_length=1, max_length=500)]
    reason: Note | None = None
    into: UUID | None = None
    # out_of_scope: what customers asking any of these are told instead.
    redirect: Annotated[str, Meta(max_length=2_000)] | None = None


class BulkResult(Struct):
    id: UUID
    ok: bool
    status: str | None = None
    error: str | None = None


class AuditOut(Struct):
    id: int
    actor: str
    action: str
    subject_type: str
    subject_id: UUID | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: datetime


class OutOfScopeIn(Struct, forbid_unknown_fields=True):
    # What customers asking something like this are told instead ("we don't sell insurance").
    redirect: Annotated[str, Meta(max_length=2_000)] | None = None
    note: Annotated[str, Meta(max_length=1_000)] | None = None


class OutOfScopeExampleIn(Struct, forbid_unknown_fields=True):
    question: Annotated[str, Meta(min_length=1, max_length=100_000)]
    redirect: Annotated[str, Meta(max_length=2_000)] | None = None


class OutOfScopeMarked(Struct):
    item: QueueItemOut
    example: dict[str, Any]


class OutOfScopePage(Struct):
    examples: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


class CalibrationIn(Struct, forbid_unknown_fields=True):
    # The lowest chance that the best entry is right at which the bot still answers.
    strictness: Annotated[float, Meta(ge=0, le=1)] | None = None

