"""Document ingestion: Markdown, HTML, text and PDF through llama-index into chunk entries."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from uuid import UUID

import asyncpg

from knowledge.access import Principal
from knowledge.errors import Invalid, NotFound, TooLarge, Unsupported
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Queryable
from knowledge.store.entries import EntryDraft, add_entries

MEDIA_TYPES = {
    ".md": "text/markdown", ".markdown": "text/markdown", ".html": "text/html",
    ".htm": "text/html", ".txt": "text/plain", ".text": "text/plain",
    ".pdf": "application/pdf",
}
SUPPORTED = frozenset(MEDIA_TYPES.values())
CHUNK_TOKENS = 256
CHUNK_OVERLAP = 32
MAX_CHUNKS = 5_000
_HEADER = re.compile(r"^#{1,6}\s+(.*)$")


@dataclass(frozen=True, slots=True)
class Document:
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


@dataclass(frozen=True, slots=True)
class IngestResult:
    document: Document
    changed: bool
    chunks_added: int
    chunks_retired: int


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    section: str | None
    index: int


_COLUMNS = ("id, shop_id, name, media_type, content_hash, byte_size, chunk_count, version, "
            "created_at, updated_at, deleted_at")

UPSERT_DOCUMENT = """
INSERT INTO documents (shop_id, name, media_type, content_hash, byte_size, version)
VALUES ($1, $2, $3, '', 0, 0)
ON CONFLICT (shop_id, name) DO NOTHING
"""
SELECT_DOCUMENT_BY_NAME = f"SELECT {_COLUMNS} FROM documents WHERE shop_id = $1 AND name = $2"
LOCK_DOCUMENT = SELECT_DOCUMENT_BY_NAME + " FOR UPDATE"
UPDATE_DOCUMENT = f"""
UPDATE documents SET media_type = $3, content_hash = $4, byte_size = $5, chunk_count = $6,
                     version = version + 1, deleted_at = NULL
WHERE shop_id = $1 AND id = $2
RETURNING {_COLUMNS}
"""
RETIRE_CHUNKS = """
WITH closed AS (
    UPDATE knowledge_base_rag SET valid_to = now(), change_reason = $3
    WHERE shop_id = $1 AND document_id = $2 AND valid_to IS NULL
    RETURNING id
), dropped AS (
    DELETE FROM knowledge_vectors WHERE shop_id = $1 AND knowledge_id IN (SELECT id FROM closed)
)
SELECT count(*) FROM closed
"""
SELECT_DOCUMENT = f"SELECT {_COLUMNS} FROM documents WHERE shop_id = $1 AND id = $2"
LIST_DOCUMENTS = f"""
SELECT {_COLUMNS} FROM documents WHERE shop_id = $1 AND deleted_at IS NULL
ORDER BY name LIMIT $2 OFFSET $3
"""
MARK_DELETED = f"""
UPDATE documents SET deleted_at = now(), chunk_count = 0 WHERE shop_id = $1 AND id = $2
RETURNING {_COLUMNS}
"""


def _document(row: asyncpg.Record) -> Document:
    return Document(**dict(row))


def media_type_for(name: str, declared: str | None) -> str:
    """The media type from the declared content type, else from the file name."""
    if declared:
        base = declared.split(";")[0].strip().lower()
        if base in SUPPORTED:
            return base
    suffix = PurePath(name).suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    raise Unsupported(
        f"cannot read {name!r} ({declared or 'no content type'}); supported: Markdown (.md), "
        "HTML (.html), plain text (.txt) and PDF (.pdf)", supported=sorted(SUPPORTED))


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{name!r} is not UTF-8 text", field="file") from exc


def _pdf_text(data: bytes, name: str) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as exc:  # a malformed or encrypted upload may fail anywhere in the reader
        raise Invalid(f"{name!r} is not a readable PDF: {exc}", field="file") from exc


def parse_chunks(data: bytes, name: str, media_type: str) -> list[Chunk]:
    """Split a document into chunks of about CHUNK_TOKENS tokens, keeping section titles."""
    from llama_index.core import Document as LlamaDocument
    from llama_index.core.node_parser import (
        HTMLNodeParser,
        MarkdownNodeParser,
        SentenceSplitter,
    )

    if media_type == "application/pdf":
        text = _pdf_text(data, name)
        sections = [LlamaDocument(text=text)]
    else:
        text = _decode(data, name)
        source = LlamaDocument(text=text)
        if media_type == "text/markdown":
            sections = [LlamaDocument(text=n.get_content(), metadata=n.metadata)
                        for n in MarkdownNodeParser().get_nodes_from_documents([source])]
        elif media_type == "text/html":
            sections = [LlamaDocument(text=n.get_content())
                        for n in HTMLNodeParser().get_nodes_from_documents([source])]
        else:
            sections = [source]
    splitter = SentenceSplitter(chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP)
    chunks: list[Chunk] = []
    for section in sections:
        body = section.text.strip()
        if not body:
            continue
        first_line = body.splitlines()[0]
        header = _HEADER.match(first_line)
        title = header.group(1).strip() if header else None
        for node in splitter.get_nodes_from_documents([LlamaDocument(text=body)]):
            piece = node.get_content().strip()
            if not piece or (header and piece == first_line):
                continue
            if title and not piece.startswith("#"):
                # A continuation of a section still says which section it belongs to.
                piece = f"{title}\n{piece}"
            chunks.append(Chunk(text=piece, section=title, index=len(chunks)))
    if len(chunks) > MAX_CHUNKS:
        raise TooLarge(f"{name!r} makes {len(chunks)} chunks; the limit is {MAX_CHUNKS}",
                       limit=MAX_CHUNKS)
    return chunks


async def ingest_document(rt: Runtime, shop_id: int, name: str, data: bytes,
                          declared_type: str | None, actor: Principal) -> IngestResult:
    """Ingest or re-ingest a document by name; an unchanged one (same hash) does nothing."""
    name = name.strip()
    if not 1 <= len(name) <= 300:
        raise Invalid("a document name is 1 to 300 characters", field="name", limit=300)
    if len(data) > rt.settings.max_document_bytes:
        raise TooLarge(f"the document is {len(data)} bytes; the limit is "
                       f"{rt.settings.max_document_bytes}", limit=rt.settings.max_document_bytes)
    if not data.strip():
        raise Invalid("the document is empty", field="file")
    media_type = media_type_for(name, declared_type)
    digest = hashlib.sha256(data).hexdigest()
    existing = await rt.pool.fetchrow(SELECT_DOCUMENT_BY_NAME, shop_id, name)
    if existing is not None and existing["content_hash"] == digest \
            and existing["deleted_at"] is None:
        return IngestResult(_document(existing), changed=False, chunks_added=0,
                            chunks_retired=0)
    chunks = await asyncio.to_thread(parse_chunks, data, name, media_type)
    if not chunks:
        raise Invalid(f"no text could be read from {name!r}", field="file")
    drafts = [EntryDraft(answer=c.text, category=None, source="document",
                         metadata={"document": name, "section": c.section},
                         chunk_index=c.index) for c in chunks]
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(UPSERT_DOCUMENT, shop_id, name, media_type)
        locked = await conn.fetchrow(LOCK_DOCUMENT, shop_id, name)
        assert locked is not None
        if locked["content_hash"] == digest and locked["deleted_at"] is None:
            # A concurrent ingest of the same bytes won the race.
            return IngestResult(_document(locked), changed=False, chunks_added=0,
                                chunks_retired=0)
        document_id: UUID = locked["id"]
        retired = await conn.fetchval(RETIRE_CHUNKS, shop_id, document_id,
                                      "document re-ingested")
        for draft in drafts:
            draft.document_id = document_id
        await add_entries(rt, shop_id, drafts, actor, conn=conn,
                          audit_action="knowledge.create_from_document")
        row = await conn.fetchrow(UPDATE_DOCUMENT, shop_id, document_id, media_type, digest,
                                  len(data), len(drafts))
        assert row is not None
        document = _document(row)
        await audit.record(conn, shop_id=shop_id, actor=actor, action="document.ingest",
                           subject_type="document", subject_id=document_id,
                           before={"content_hash": locked["content_hash"],
                                   "chunks": int(retired)} if locked["version"] else None,
                           after={"content_hash": digest, "chunks": len(drafts),
                                  "version": document.version})
    return IngestResult(document, changed=True, chunks_added=len(drafts),
                        chunks_retired=int(retired))


async def get_document(conn: Queryable, shop_id: int,
                       document_id: UUID) -> Document:
    row = await conn.fetchrow(SELECT_DOCUMENT, shop_id, document_id)
    if row is None:
        raise NotFound(f"no document {document_id}")
    return _document(row)


async def list_documents(conn: Queryable, shop_id: int,
                         limit: int = 50, offset: int = 0) -> list[Document]:
    return [_document(r) for r in await conn.fetch(LIST_DOCUMENTS, shop_id, limit, offset)]


async def delete_document(rt: Runtime, shop_id: int, document_id: UUID,
                          actor: Principal) -> Document:
    """Retire a document's chunks; the document and chunk history stay readable."""
    async with rt.pool.acquire() as conn, conn.transaction():
        current = await get_document(conn, shop_id, document_id)
        if current.deleted_at is not None:
            raise NotFound(f"document {document_id} was already deleted")
        retired = await conn.fetchval(RETIRE_CHUNKS, shop_id, document_id, "document deleted")
        row = await conn.fetchrow(MARK_DELETED, shop_id, document_id)
        assert row is not None
        await audit.record(conn, shop_id=shop_id, actor=actor, action="document.delete",
                           subject_type="document", subject_id=document_id,
                           before={"content_hash": current.content_hash,
                                   "chunks": int(retired)})
        return _document(row)
