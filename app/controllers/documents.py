"""Documents: upload (multipart), list, read, delete; re-uploading a name re-ingests it."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath, MultipartBody, QueryParameter

from app.auth import Caller, resolve_shop, runtime_of
from app.controllers.params import Offset, ShopParam
from app.schemas import DocumentOut, IngestOut
from knowledge.access import Action
from knowledge.answering.retrieval import cache_of
from knowledge.errors import Invalid
from knowledge.store import documents

# Multipart framing around the file itself.
_FORM_OVERHEAD = 64 * 1024


def document_controller(max_document_bytes: int) -> type[Controller]:
    """The controller, with its upload limit taken from the settings the app was built with."""

    class DocumentController(_DocumentRoutes):
        upload = post("/", summary="Upload a document (Markdown, HTML, text, PDF) as knowledge",
                      request_max_body_size=max_document_bytes + _FORM_OVERHEAD)(
                          _DocumentRoutes.upload_document)

    return DocumentController


class _DocumentRoutes(Controller):
    path = "/v1/documents"
    tags = ("documents",)

    async def upload_document(self, state: State, principal: Caller,
                     data: MultipartBody[dict[str, Any]],
                     shop: ShopParam = None) -> IngestOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.WRITE_KNOWLEDGE, shop)
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise Invalid("send the document as a multipart form field named `file`",
                          field="file")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise Invalid("`name` is a text field", field="name")
        content = await upload.read()
        result = await documents.ingest_document(
            rt, target.id, name or upload.filename or "", content, upload.content_type,
            principal)
        cache_of(rt).forget(target.id)
        return IngestOut.of(result)

    @get("/", summary="List a shop's documents")
    async def list_documents(self, state: State, principal: Caller, shop: ShopParam = None,
                             limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                             offset: Offset = 0) -> list[DocumentOut]:
        target = await resolve_shop(state, principal, Action.READ_KNOWLEDGE, shop)
        found = await documents.list_documents(runtime_of(state).pool, target.id, limit,
                                               offset)
        return [DocumentOut.of(d) for d in found]

    @get("/{document_id:uuid}", summary="One document")
    async def read(self, state: State, principal: Caller, document_id: FromPath[UUID],
                   shop: ShopParam = None) -> DocumentOut:
        target = await resolve_shop(state, principal, Action.READ_KNOWLEDGE, shop)
        return DocumentOut.of(await documents.get_document(runtime_of(state).pool, target.id,
                                                           document_id))

    @delete("/{document_id:uuid}", status_code=200, summary="Delete a document's knowledge")
    async def remove(self, state: State, principal: Caller, document_id: FromPath[UUID],
                     shop: ShopParam = None) -> DocumentOut:
        rt = runtime_of(state)
        target = await resolve_shop(state, principal, Action.WRITE_KNOWLEDGE, shop)
        deleted = await documents.delete_document(rt, target.id, document_id, principal)
        cache_of(rt).forget(target.id)
        return DocumentOut.of(deleted)
