"""The knowledge pages: search as the bot would, entries with their history, edit, retire, add,
and documents uploaded to ingest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from app.auth import runtime_of
from app.pages.diff import Piece, word_diff
from app.pages.web import PageOf, is_htmx, render, text_field
from knowledge.answering.answer import Question, evaluate
from knowledge.answering.retrieval import cache_of
from knowledge.errors import Invalid
from knowledge.store import documents, entries
from knowledge.store.entries import Entry

PAGE_SIZE = 25
MAX_OFFSET = 1_000_000
SEARCH_SHOWN = 10
# Multipart framing around an uploaded document.
FORM_OVERHEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Version:
    entry: Entry
    question_diff: list[Piece]
    answer_diff: list[Piece]


def versions_of(history: list[Entry]) -> list[Version]:
    """Newest first, each with what changed from the version before it."""
    out, before = [], None
    for e in history:
        out.append(Version(e, word_diff(before.question or "", e.question or "") if before
                           else [Piece("same", e.question or "")],
                           word_diff(before.answer, e.answer) if before
                           else [Piece("same", e.answer)]))
        before = e
    return out[::-1]


def _variants(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class KnowledgePages(Controller):
    path = "/admin/knowledge"
    include_in_schema = False

    @get("/")
    async def knowledge(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                        q: FromQuery[str | None] = None,
                        offset: FromQuery[int] = 0) -> Template:
        shop = page.need_shop()
        rt = runtime_of(state)
        if not 0 <= offset <= MAX_OFFSET:
            raise Invalid(f"offset is 0 to {MAX_OFFSET}", field="offset", limit=MAX_OFFSET)
        query = (q or "").strip()
        context: dict[str, Any] = {"q": query, "offset": offset}
        if query:
            # Exactly the bot's path, short of logging a turn or opening a gap.
            evaluation = await evaluate(rt, shop, Question(text=query, learn=False))
            context["evaluation"] = evaluation
            context["candidates"] = evaluation.candidates[:SEARCH_SHOWN]
            if is_htmx(request):
                return render(page, "_search.html", **context)
        found, total = await entries.list_entries(rt.pool, shop.id, limit=PAGE_SIZE,
                                                  offset=offset)
        docs = await documents.list_documents(rt.pool, shop.id, 50, 0)

        def at(o: int) -> str:
            return "/admin/knowledge?" + urlencode({"offset": o})

        return render(page, "knowledge.html", entries=found, total=total, documents=docs,
                      max_document_bytes=rt.settings.max_document_bytes,
                      prev_url=at(max(0, offset - PAGE_SIZE)) if offset else None,
                      next_url=at(offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None,
                      **context)

    @get("/{entry_id:uuid}")
    async def entry(self, state: State, page: PageOf, entry_id: FromPath[UUID]) -> Template:
        shop = page.need_shop()
        history = await entries.history(runtime_of(state).pool, shop.id, entry_id)
        return render(page, "entry.html", entry=history[-1], versions=versions_of(history))

    @post("/{entry_id:uuid}/edit", status_code=303)
    async def edit(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                   entry_id: FromPath[UUID]) -> Redirect:
        shop = page.need_shop()
        rt = runtime_of(state)
        form = await request.form()
        s = rt.settings
        version = text_field(form, "version", required=True, limit=12)
        if not (version or "").isdigit():
            raise Invalid("version is a number", field="version")
        await entries.supersede_entry(
            rt, shop.id, entry_id, page.session.principal,
            question=text_field(form, "question", limit=s.max_question_chars),
            answer=text_field(form, "answer", required=True, limit=s.max_answer_chars),
            category=text_field(form, "category", limit=100),
            variants=_variants(text_field(form, "variants", limit=s.max_answer_chars)),
            reason=text_field(form, "reason", limit=1000) or "edited on the review pages",
            expected_version=int(version or 0))
        cache_of(rt).forget(shop.id)
        return Redirect(f"/admin/knowledge/{entry_id}", status_code=303)

    @post("/{entry_id:uuid}/retire", status_code=303)
    async def retire(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                     entry_id: FromPath[UUID]) -> Redirect:
        shop = page.need_shop()
        rt = runtime_of(state)
        reason = text_field(await request.form(), "reason", limit=1000)
        await entries.retire_entry(rt, shop.id, entry_id, page.session.principal, reason)
        cache_of(rt).forget(shop.id)
        return Redirect(f"/admin/knowledge/{entry_id}", status_code=303)

    @post("/new", status_code=303)
    async def add(self, request: Request[Any, Any, Any], state: State, page: PageOf) -> Redirect:
        shop = page.need_shop()
        rt = runtime_of(state)
        form = await request.form()
        s = rt.settings
        made = await entries.add_entries(rt, shop.id, [entries.EntryDraft(
            answer=text_field(form, "answer", required=True, limit=s.max_answer_chars) or "",
            question=text_field(form, "question", required=True, limit=s.max_question_chars),
            variants=_variants(text_field(form, "variants", limit=s.max_answer_chars)),
            category=text_field(form, "category", limit=100))], page.session.principal)
        cache_of(rt).forget(shop.id)
        return Redirect(f"/admin/knowledge/{made[0].entry_id}", status_code=303)


def upload_controller(max_document_bytes: int) -> type[Controller]:
    """Document upload, with the request limit taken from the app's settings."""

    class DocumentUpload(Controller):
        path = "/admin/knowledge/documents"
        include_in_schema = False

        @post("/", status_code=200, request_max_body_size=max_document_bytes + FORM_OVERHEAD)
        async def upload(self, request: Request[Any, Any, Any], state: State,
                         page: PageOf) -> Template | Redirect:
            shop = page.need_shop()
            rt = runtime_of(state)
            upload = (await request.form()).get("file")
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise Invalid("choose a file to upload", field="file")
            result = await documents.ingest_document(
                rt, shop.id, upload.filename, await upload.read(), upload.content_type,
                page.session.principal)
            cache_of(rt).forget(shop.id)
            if not is_htmx(request):
                return Redirect("/admin/knowledge", status_code=303)
            return render(page, "_uploaded.html", result=result)

    return DocumentUpload
