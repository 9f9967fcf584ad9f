"""Knowledge entries: add, read, list, supersede and retire; history is never overwritten."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from knowledge.access import Principal
from knowledge.errors import Conflict, Invalid, NotFound
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import ArrayItem, Conn, Queryable, Vector

MAX_VARIANTS = 50
MAX_CATEGORY = 100
SOURCES = ("manual", "document", "learning", "import", "demo")


@dataclass(slots=True)
class EntryDraft:
    """What a caller provides for a new entry (or a new version of one)."""

    answer: str
    question: str | None = None
    variants: list[str] = field(default_factory=list)
    category: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "manual"
    document_id: UUID | None = None
    chunk_index: int | None = None
    # Vectors already made for some search texts (text -> vector), e.g. a queue item's question.
    known_vectors: dict[str, Vector] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entry:
    id: UUID
    entry_id: UUID
    version: int
    shop_id: int
    category: str | None
    question: str | None
    variants: list[str]
    answer: str
    source: str
    document_id: UUID | None
    chunk_index: int | None
    metadata: dict[str, Any]
    created_by: str | None
    change_reason: str | None
    created_at: datetime
    valid_from: datetime
    valid_to: datetime | None
    supersedes: UUID | None
    superseded_by: UUID | None

    @property
    def live(self) -> bool:
        return self.valid_to is None

    def summary(self) -> dict[str, Any]:
        """What the audit log keeps of a version."""
        return {"id": str(self.id), "version": self.version, "question": self.question,
                "variants": self.variants, "answer": self.answer, "category": self.category}


_COLUMNS = ("id, entry_id, version, shop_id, category, question, variants, answer, source, "
            "document_id, chunk_index, metadata, created_by, change_reason, created_at, "
            "valid_from, valid_to, supersedes, superseded_by")

COLUMNS = _COLUMNS
COLUMN_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))

INSERT_ENTRY = f"""
INSERT INTO knowledge_base_rag (id, entry_id, version, shop_id, category, question, variants,
    answer, content, embedding, embedding_model, source, document_id, chunk_index, metadata,
    created_by, change_reason, supersedes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
RETURNING {_COLUMNS}
"""
# Many versions in one statement: one round trip for a whole batch instead of one per entry.
INSERT_ENTRIES = f"""
INSERT INTO knowledge_base_rag (id, entry_id, version, shop_id, category, question, variants,
    answer, content, embedding, embedding_model, source, document_id, chunk_index, metadata,
    created_by)
SELECT t.id, t.entry_id, 1, $1, t.category, t.question,
       ARRAY(SELECT jsonb_array_elements_text(t.variants::jsonb)), t.answer, t.content, t.embedding,
       $2, t.source, t.document_id, t.chunk_index, t.metadata, $3
FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::vector[], $12::text[], $13::uuid[], $14::integer[], $15::jsonb[])
     AS t(id, entry_id, category, question, variants, answer, content, embedding, source,
          document_id, chunk_index, metadata)
RETURNING {_COLUMNS}
"""
INSERT_VECTORS = """
INSERT INTO knowledge_vectors (shop_id, entry_id, knowledge_id, kind, text, embedding)
SELECT t.shop_id, t.entry_id, t.knowledge_id, t.kind, t.text, t.embedding
FROM unnest($1::integer[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::vector[])
     AS t(shop_id, entry_id, knowledge_id, kind, text, embedding)
"""
SELECT_LIVE = f"""
SELECT {_COLUMNS} FROM knowledge_base_rag
WHERE shop_id = $1 AND entry_id = $2 AND valid_to IS NULL
"""
SELECT_LIVE_FOR_UPDATE = SELECT_LIVE + " FOR UPDATE"
SELECT_LATEST = f"""
SELECT {_COLUMNS} FROM knowledge_base_rag
WHERE shop_id = $1 AND entry_id = $2
ORDER BY version DESC LIMIT 1
"""
SELECT_HISTORY = f"""
SELECT {_COLUMNS} FROM knowledge_base_rag
WHERE shop_id = $1 AND entry_id = $2
ORDER BY version
"""
LIST_LIVE = f"""
SELECT {_COLUMNS} FROM knowledge_base_rag
WHERE shop_id = $1 AND valid_to IS NULL
  AND ($2::text IS NULL OR category = $2)
  AND ($3::uuid IS NULL OR document_id = $3)
ORDER BY created_at, id
LIMIT $4 OFFSET $5
"""
COUNT_LIVE = """
SELECT count(*) FROM knowledge_base_rag
WHERE shop_id = $1 AND valid_to IS NULL
  AND ($2::text IS NULL OR category = $2)
  AND ($3::uuid IS NULL OR document_id = $3)
"""
# A version is found by its shop and id (the primary key), its vectors by their shop and version.
CLOSE_VERSION = """
UPDATE knowledge_base_rag SET valid_to = now(), change_reason = coalesce($3, change_reason)
WHERE shop_id = $1 AND id = $2
"""
LINK_SUCCESSOR = """
UPDATE knowledge_base_rag SET superseded_by = $3 WHERE shop_id = $1 AND id = $2
"""
MOVE_VECTORS = """
UPDATE knowledge_vectors SET knowledge_id = $3 WHERE shop_id = $1 AND knowledge_id = $2
"""
VECTORS_OF_VERSION = """
SELECT text, embedding FROM knowledge_vectors WHERE shop_id = $1 AND knowledge_id = $2
"""
VERSION_MODEL = "SELECT embedding_model FROM knowledge_base_rag WHERE shop_id = $1 AND id = $2"
# The live entries that already give exactly these answers, the oldest for each (md5 for the
# index: answers are long).
LIVE_WITH_ANSWERS = """
SELECT DISTINCT ON (answer) answer, entry_id FROM knowledge_base_rag
WHERE shop_id = $1 AND valid_to IS NULL
  AND md5(answer) = ANY(ARRAY(SELECT md5(a) FROM unnest($2::text[]) AS a))
  AND answer = ANY($2::text[])
ORDER BY answer, created_at
"""
DELETE_VECTORS = "DELETE FROM knowledge_vectors WHERE shop_id = $1 AND knowledge_id = $2"


def entry_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Entry:
    values = {name: row[name] for name in COLUMN_NAMES}
    values["variants"] = list(values["variants"] or [])
    return Entry(**values)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    stripped = text.strip()
    return stripped or None


def validate(draft: EntryDraft, max_answer: int, max_question: int) -> EntryDraft:
    """Normalize a draft, or say exactly which field breaks which limit."""
    answer = _clean(draft.answer)
    if answer is None:
        raise Invalid("an entry needs a non-empty answer", field="answer")
    if len(answer) > max_answer:
        raise Invalid(f"answer is longer than {max_answer} characters", field="answer",
                      limit=max_answer)
    question = _clean(draft.question)
    if question is not None and len(question) > max_question:
        raise Invalid(f"question is longer than {max_question} characters", field="question",
                      limit=max_question)
    variants = [v for v in (_clean(v) for v in draft.variants) if v is not None]
    variants = list(dict.fromkeys(v for v in variants if v != question))
    if len(variants) > MAX_VARIANTS:
        raise Invalid(f"at most {MAX_VARIANTS} question variants", field="variants",
                      limit=MAX_VARIANTS)
    for variant in variants:
        if len(variant) > max_question:
            raise Invalid(f"a variant is longer than {max_question} characters",
                          field="variants", limit=max_question)
    category = _clean(draft.category)
    if category is not None and len(category) > MAX_CATEGORY:
        raise Invalid(f"category is longer than {MAX_CATEGORY} characters", field="category",
                      limit=MAX_CATEGORY)
    if draft.source not in SOURCES:
        raise Invalid(f"source is one of {', '.join(SOURCES)}", field="source")
    return EntryDraft(answer=answer, question=question, variants=variants, category=category,
                      metadata=dict(draft.metadata), source=draft.source,
                      document_id=draft.document_id, chunk_index=draft.chunk_index,
                      known_vectors=draft.known_vectors)


def search_texts(draft: EntryDraft) -> list[tuple[str, str]]:
    """The (kind, text) pairs an entry is found by: its questions, or the chunk itself."""
    if draft.question is None and not draft.variants:
        return [("chunk", draft.answer)]
    texts: list[tuple[str, str]] = []
    if draft.question is not None:
        texts.append(("question", draft.question))
    texts.extend(("variant", v) for v in draft.variants)
    return texts


def content_of(draft: EntryDraft) -> str:
    """The text full-text search sees: every way the entry is asked, and its answer."""
    parts = [draft.question or "", *draft.variants, draft.answer]
    return "\n".join(p for p in parts if p)


async def _insert_version(conn: Conn, rt: Runtime, shop_id: int,
                          draft: EntryDraft, vectors: Sequence[tuple[str, str, Vector]],
                          *, entry_id: UUID, version: int, supersedes: UUID | None,
                          actor: Principal, reason: str | None) -> Entry:
    row = await conn.fetchrow(
        INSERT_ENTRY, uuid4(), entry_id, version, shop_id, draft.category, draft.question,
        draft.variants, draft.answer, content_of(draft), vectors[0][2] if vectors else None,
        rt.embedder.model_name, draft.source, draft.document_id, draft.chunk_index,
        draft.metadata, actor.actor, reason, supersedes)
    assert row is not None
    entry = entry_from_row(row)
    await insert_vectors(conn, [entry], [vectors])
    return entry


async def insert_vectors(conn: Conn, entries: Sequence[Entry],
                         embedded: Sequence[Sequence[tuple[str, str, Vector]]]) -> None:
    """Make entries findable: their (kind, text, vector) rows, in one statement."""
    rows = [(e.shop_id, e.entry_id, e.id, kind, text, ArrayItem(vector))
            for e, vectors in zip(entries, embedded, strict=True)
            for kind, text, vector in vectors]
    if rows:
        await conn.execute(INSERT_VECTORS, *[list(c) for c in zip(*rows, strict=True)])


async def embed_drafts(rt: Runtime, drafts: Sequence[EntryDraft]
                       ) -> list[list[tuple[str, str, Vector]]]:
    pairs = [search_texts(d) for d in drafts]
    missing = list(dict.fromkeys(text for d, group in zip(drafts, pairs, strict=True)
                                 for _, text in group if text not in d.known_vectors))
    made = dict(zip(missing, await rt.embedder.embed_many(missing), strict=True)) \
        if missing else {}
    return [[(kind, text, d.known_vectors[text] if text in d.known_vectors else made[text])
             for kind, text in group] for d, group in zip(drafts, pairs, strict=True)]


async def add_entries(rt: Runtime, shop_id: int, drafts: Sequence[EntryDraft],
                      actor: Principal, *, conn: Conn | None = None,
                      audit_action: str = "knowledge.create") -> list[Entry]:
    """Create entries (embedding their questions) in one transaction."""
    s = rt.settings
    clean = [validate(d, s.max_answer_chars, s.max_question_chars) for d in drafts]
    embedded = await embed_drafts(rt, clean)
    if conn is None:
        async with rt.pool.acquire() as own, own.transaction():
            return await _add(own, rt, shop_id, clean, embedded, actor, audit_action)
    return await _add(conn, rt, shop_id, clean, embedded, actor, audit_action)


async def _add(conn: Conn, rt: Runtime, shop_id: int, drafts: Sequence[EntryDraft],
               embedded: Sequence[Sequence[tuple[str, str, Vector]]],
               actor: Principal, audit_action: str) -> list[Entry]:
    ids = [uuid4() for _ in drafts]
    entry_ids = [uuid4() for _ in drafts]
    rows = await conn.fetch(
        INSERT_ENTRIES, shop_id, rt.embedder.model_name, actor.actor, ids, entry_ids,
        [d.category for d in drafts], [d.question for d in drafts],
        # As JSON text: a list of lists would be taken for a two-dimensional array.
        [json.dumps(d.variants) for d in drafts], [d.answer for d in drafts],
        [content_of(d) for d in drafts],
        [ArrayItem(v[0][2]) if v else None for v in embedded],
        [d.source for d in drafts], [d.document_id for d in drafts],
        [d.chunk_index for d in drafts], [d.metadata for d in drafts])
    by_id = {r["id"]: entry_from_row(r) for r in rows}
    created = [by_id[i] for i in ids]
    await insert_vectors(conn, created, embedded)
    await audit.record_many(conn, shop_id=shop_id, actor=actor, action=audit_action,
                            subject_type="knowledge",
                            changes=[(e.entry_id, None, e.summary()) for e in created])
    return created


async def get_entry(conn: Queryable, shop_id: int,
                    entry_id: UUID) -> Entry:
    """The live version, or the last one if the entry was retired."""
    row = await conn.fetchrow(SELECT_LATEST, shop_id, entry_id)
    if row is None:
        raise NotFound(f"no knowledge entry {entry_id}")
    return entry_from_row(row)


async def history(conn: Queryable, shop_id: int,
                  entry_id: UUID) -> list[Entry]:
    rows = await conn.fetch(SELECT_HISTORY, shop_id, entry_id)
    if not rows:
        raise NotFound(f"no knowledge entry {entry_id}")
    return [entry_from_row(r) for r in rows]


async def list_entries(conn: Queryable, shop_id: int, *,
                       category: str | None = None, document_id: UUID | None = None,
                       limit: int = 50, offset: int = 0) -> tuple[list[Entry], int]:
    rows = await conn.fetch(LIST_LIVE, shop_id, category, document_id, limit, offset)
    total = await conn.fetchval(COUNT_LIVE, shop_id, category, document_id)
    return [entry_from_row(r) for r in rows], int(total)


async def _lock_live(conn: Conn, shop_id: int, entry_id: UUID) -> asyncpg.Record:
    """Lock an entry's live version. A concurrent change may close the row we waited for;
    then the version it wrote is the live one, found by asking again."""
    for _ in range(2):
        row = await conn.fetchrow(SELECT_LIVE_FOR_UPDATE, shop_id, entry_id)
        if row is not None:
            return row
    raise NotFound(f"no live knowledge entry {entry_id}")


_UNSET: Any = object()


async def supersede_entry(rt: Runtime, shop_id: int, entry_id: UUID, actor: Principal, *,
                          question: str | None = _UNSET, variants: list[str] | None = None,
                          answer: str | None = None, category: str | None = _UNSET,
                          metadata: dict[str, Any] | None = None, reason: str | None = None,
                          expected_version: int | None = None,
                          source: str | None = None,
                          known_vectors: dict[str, Vector] | None = None,
                          conn: Conn | None = None) -> Entry:
    """Write a new version of an entry; the old one keeps its text, gets valid_to and a link.
    Only texts it did not have before are embedded (known_vectors may supply some)."""
    if conn is None:
        async with rt.pool.acquire() as own, own.transaction():
            return await supersede_entry(
                rt, shop_id, entry_id, actor, question=question, variants=variants,
                answer=answer, category=category, metadata=metadata, reason=reason,
                expected_version=expected_version, source=source,
                known_vectors=known_vectors, conn=own)
    row = await _lock_live(conn, shop_id, entry_id)
    old = entry_from_row(row)
    if expected_version is not None and expected_version != old.version:
        raise Conflict(f"entry {entry_id} is at version {old.version}, not {expected_version}",
                       current_version=old.version)
    draft = validate(EntryDraft(
        answer=old.answer if answer is None else answer,
        question=old.question if question is _UNSET else question,
        variants=old.variants if variants is None else variants,
        category=old.category if category is _UNSET else category,
        metadata=old.metadata if metadata is None else metadata,
        source=source or old.source, document_id=old.document_id, chunk_index=old.chunk_index,
    ), rt.settings.max_answer_chars, rt.settings.max_question_chars)
    same_search_texts = search_texts(draft) == search_texts(validate(EntryDraft(
        answer=old.answer, question=old.question, variants=old.variants,
        source=old.source), rt.settings.max_answer_chars, rt.settings.max_question_chars))
    # Vectors of another model (before `reembed` has run) are never carried over: the new
    # version is stamped with the current model and would be skipped by the re-embedding.
    current = await conn.fetchval(VERSION_MODEL, shop_id, old.id) == rt.embedder.model_name
    same_search_texts = same_search_texts and current
    vectors: list[tuple[str, str, Vector]] = []
    if not same_search_texts:
        if current:
            draft.known_vectors.update({r["text"]: r["embedding"] for r in await conn.fetch(
                VECTORS_OF_VERSION, shop_id, old.id)})
        draft.known_vectors.update(known_vectors or {})
        vectors = (await embed_drafts(rt, [draft]))[0]
    await conn.execute(CLOSE_VERSION, shop_id, old.id, None)
    new = await _insert_version(conn, rt, shop_id, draft, vectors, entry_id=entry_id,
                                version=old.version + 1, supersedes=old.id, actor=actor,
                                reason=reason)
    await conn.execute(LINK_SUCCESSOR, shop_id, old.id, new.id)
    if same_search_texts:
        # Only the answer or labels changed: the entry is still found by the same vectors.
        await conn.execute(MOVE_VECTORS, shop_id, old.id, new.id)
    else:
        await conn.execute(DELETE_VECTORS, shop_id, old.id)
    await audit.record(conn, shop_id=shop_id, actor=actor, action="knowledge.supersede",
                       subject_type="knowledge", subject_id=entry_id, before=old.summary(),
                       after=new.summary())
    return new


async def entry_with_answer(conn: Queryable, shop_id: int, answer: str) -> UUID | None:
    """The live entry of the shop whose answer is exactly this text, if any."""
    return (await entries_with_answers(conn, shop_id, [answer])).get(answer.strip())


async def entries_with_answers(conn: Queryable, shop_id: int,
                               answers: Sequence[str]) -> dict[str, UUID]:
    """For many answers at once: answer -> the live entry that gives exactly that answer."""
    wanted = list({a.strip() for a in answers if a and a.strip()})
    if not wanted:
        return {}
    return {r["answer"]: r["entry_id"] for r in await conn.fetch(LIVE_WITH_ANSWERS, shop_id,
                                                                    wanted)}


async def retire_entry(rt: Runtime, shop_id: int, entry_id: UUID, actor: Principal,
                       reason: str | None = None,
                       conn: Conn | None = None) -> Entry:
    """Take an entry out of answering; its versions stay readable in history."""
    if conn is None:
        async with rt.pool.acquire() as own, own.transaction():
            return await retire_entry(rt, shop_id, entry_id, actor, reason, conn=own)
    row = await _lock_live(conn, shop_id, entry_id)
    old = entry_from_row(row)
    await conn.execute(CLOSE_VERSION, shop_id, old.id, reason or "retired")
    await conn.execute(DELETE_VECTORS, shop_id, old.id)
    await audit.record(conn, shop_id=shop_id, actor=actor, action="knowledge.retire",
                       subject_type="knowledge", subject_id=entry_id, before=old.summary())
    return await get_entry(conn, shop_id, entry_id)
