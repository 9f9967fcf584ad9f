"""The queue pages: filter and page through items, review each in place or many at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from app.auth import runtime_of
from app.pages.diff import Piece, word_diff
from app.pages.web import MAX_IDS, Page, PageOf, back_to, is_htmx, render, text_field
from knowledge.errors import Invalid
from knowledge.learning import bulk, out_of_scope, review
from knowledge.learning.queue import KINDS, SOURCES, QueueItem
from knowledge.learning.review import PRIORITIES, SORTS, STATUSES, ReviewView
from knowledge.store.db import Queryable

PAGE_SIZE = 25
MAX_OFFSET = 1_000_000
# Below this similarity the nearest knowledge is on another topic: shown, but not diffed.
DIFF_MIN_SIMILARITY = 0.6
# A list shows each item's first few signals and their turns; the item's own page shows all.
# An item asked hundreds of times keeps 100 signals, and a page of 25 such items drawn in full
# was 1.6 MB of HTML and 90 ms of rendering (benchmarks/review_listing.py).
LISTED_SIGNALS = 10


@dataclass(frozen=True, slots=True)
class ItemView:
    """An item as the page shows it: beside the knowledge it is nearest to or contradicts,
    with the words that differ marked in each."""

    item: QueueItem
    known: dict[str, Any] | None
    conflict: bool
    proposed_pieces: list[Piece]
    known_pieces: list[Piece]
    # The signals shown (the first LISTED_SIGNALS in a list) and their conversation turns.
    signals: list[dict[str, Any]]
    turns: list[dict[str, Any]]


async def item_views(conn: Queryable, views: list[ReviewView],
                     signals: int | None = LISTED_SIGNALS) -> list[ItemView]:
    """Items as a list shows them, or with signals=None, each with all its signals."""
    turns = await review.turns_of(conn, [v.item for v in views], signals)
    return [item_view(v, v.item.signals[:signals], turns.get(v.item.id, [])) for v in views]


def item_view(view: ReviewView, signals: list[dict[str, Any]],
              turns: list[dict[str, Any]]) -> ItemView:
    known = view.conflict or view.nearest
    proposed = view.item.proposed_content or ""
    similarity = view.item.nearest_similarity or 0.0
    if known and proposed and (view.conflict or similarity >= DIFF_MIN_SIMILARITY):
        diff = word_diff(known["answer"], proposed)
        return ItemView(view.item, known, view.conflict is not None,
                        [p for p in diff if p.kind != "removed"],
                        [p for p in diff if p.kind != "added"], signals, turns)
    # Another topic altogether: marking every word as changed would only be noise.
    return ItemView(view.item, known, view.conflict is not None,
                    [Piece("same", proposed)] if proposed else [],
                    [Piece("same", known["answer"])] if known else [], signals, turns)


def _choice(value: str | None, allowed: tuple[str, ...] | list[str], name: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise Invalid(f"{name} is one of {', '.join(allowed)}", field=name)
    return value


async def _one(state: State, page: Page, item_id: UUID,
               signals: int | None = LISTED_SIGNALS) -> ItemView:
    pool = runtime_of(state).pool
    item = await review.get_any(pool, page.shop.id if page.shop else None, item_id)
    return (await item_views(pool, await review.with_knowledge(pool, [item]), signals))[0]


def _shop_id(page: Page) -> int | None:
    return page.shop.id if page.shop else None


class QueuePages(Controller):
    path = "/admin/queue"
    include_in_schema = False

    @get("/")
    async def queue(self, state: State, page: PageOf,
                    status: FromQuery[str | None] = "pending",
                    kind: FromQuery[str | None] = None, source: FromQuery[str | None] = None,
                    priority: FromQuery[str | None] = None, sort: FromQuery[str] = "priority",
                    conflict: FromQuery[bool | None] = None,
                    offset: FromQuery[int] = 0) -> Template:
        f = review.QueueFilter(status=_choice(status, STATUSES, "status"),
                               kind=_choice(kind, KINDS, "kind"),
                               source_type=_choice(source, SOURCES, "source"),
                               priority=_choice(priority, PRIORITIES, "priority"),
                               sort=_choice(sort, list(SORTS), "sort") or "priority",
                               conflict=True if conflict else None)
        if not 0 <= offset <= MAX_OFFSET:
            raise Invalid(f"offset is 0 to {MAX_OFFSET}", field="offset", limit=MAX_OFFSET)
        views, total = await review.list_items(runtime_of(state).pool, _shop_id(page), f,
                                               PAGE_SIZE, offset)
        chosen = {"status": f.status, "kind": f.kind, "source": f.source_type,
                  "priority": f.priority, "sort": f.sort, "conflict": f.conflict}
        # An empty status is "any": kept in the links, or they would fall back to pending.
        query = {"status": f.status or "", **{k: ("true" if v is True else v)
                                              for k, v in chosen.items() if v}}

        def at(o: int) -> str:
            return "/admin/queue?" + urlencode({**query, "offset": o})

        return render(page, "queue.html", views=await item_views(runtime_of(state).pool, views),
                      total=total,
                      offset=offset, chosen=chosen, sorts=list(SORTS),
                      filters=[("status", "Status", STATUSES), ("kind", "Kind", KINDS),
                               ("source", "Source", SOURCES),
                               ("priority", "Priority", PRIORITIES)],
                      prev_url=at(max(0, offset - PAGE_SIZE)) if offset else None,
                      next_url=at(offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None)

    @get("/{item_id:uuid}")
    async def item(self, state: State, page: PageOf, item_id: FromPath[UUID]) -> Template:
        return render(page, "item.html", view=await _one(state, page, item_id, signals=None))

    async def _done(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                    item_id: UUID) -> Template | Redirect:
        """After an action: the item again, in place (htmx), or back to the page."""
        if not is_htmx(request):
            return back_to(request, "/admin/queue")
        return render(page, "_item.html", view=await _one(state, page, item_id))

    @post("/{item_id:uuid}/approve", status_code=200)
    async def approve(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                      item_id: FromPath[UUID]) -> Template | Redirect:
        await review.approve(runtime_of(state), _shop_id(page), item_id, page.session.principal)
        return await self._done(request, state, page, item_id)

    @post("/{item_id:uuid}/edit", status_code=200)
    async def edit(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                   item_id: FromPath[UUID]) -> Template | Redirect:
        """Edit, then approve; for a gap, its first answer."""
        form = await request.form()
        rt = runtime_of(state)
        item = await review.get_any(rt.pool, _shop_id(page), item_id)
        answer = text_field(form, "answer", required=True, limit=rt.settings.max_answer_chars)
        question = text_field(form, "question", limit=rt.settings.max_question_chars)
        await review.approve(rt, _shop_id(page), item_id, page.session.principal,
                             answer=answer if answer != item.proposed_content else None,
                             question=question if question != item.question else None)
        return await self._done(request, state, page, item_id)

    @post("/{item_id:uuid}/reject", status_code=200)
    async def reject(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                     item_id: FromPath[UUID]) -> Template | Redirect:
        reason = text_field(await request.form(), "reason", required=True,
                            limit=review.MAX_NOTE)
        await review.reject(runtime_of(state), _shop_id(page), item_id, page.session.principal,
                            reason or "")
        return await self._done(request, state, page, item_id)

    @post("/{item_id:uuid}/merge", status_code=200)
    async def merge(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                    item_id: FromPath[UUID]) -> Template | Redirect:
        into = _item_id(text_field(await request.form(), "into", required=True, limit=36))
        await review.merge(runtime_of(state), _shop_id(page), item_id, into,
                           page.session.principal)
        return await self._done(request, state, page, item_id)

    @post("/{item_id:uuid}/out-of-scope", status_code=200)
    async def out_of_scope(self, request: Request[Any, Any, Any], state: State, page: PageOf,
                           item_id: FromPath[UUID]) -> Template | Redirect:
        redirect = text_field(await request.form(), "redirect", limit=review.MAX_NOTE)
        await out_of_scope.mark_item(runtime_of(state), _shop_id(page), item_id,
                                     page.session.principal, redirect, None)
        return await self._done(request, state, page, item_id)

    @post("/bulk", status_code=200)
    async def bulk(self, request: Request[Any, Any, Any], state: State,
                   page: PageOf) -> Template | Redirect:
        """One action on every selected item; each item's outcome is reported, and with htmx
        every changed item is redrawn in place."""
        form = await request.form()
        rt = runtime_of(state)
        action = _choice(text_field(form, "action", required=True, limit=20), bulk.ACTIONS,
                         "action")
        ids = list(dict.fromkeys(_item_id(v) for v in form.getall("ids", [])))
        if not ids:
            raise Invalid("select at least one item", field="ids")
        if len(ids) > MAX_IDS:
            raise Invalid(f"at most {MAX_IDS} items at once", field="ids", limit=MAX_IDS)
        reason = text_field(form, "reason", limit=review.MAX_NOTE)
        into_text = text_field(form, "into", limit=36)
        into = _item_id(into_text) if action == "merge" and into_text else None
        if action == "reject" and not reason:
            raise Invalid("a rejection needs a reason", field="reason")
        shop_id = _shop_id(page)
        # The form's one text field is a rejection's reason or, out of scope, the redirect.
        outcomes = await bulk.act_on_many(
            rt, shop_id, ids, action or "", page.session.principal,
            reason=None if action == "out_of_scope" else reason,
            redirect=reason if action == "out_of_scope" else None, into=into)
        if not is_htmx(request):
            return back_to(request, "/admin/queue")
        done = [o.item for o in outcomes if o.item is not None]
        failed = [f"{o.id}: {o.error}" for o in outcomes if o.item is None]
        message = f"{len(done)} item{'' if len(done) == 1 else 's'} done" + (
            f"; {len(failed)} not: " + "; ".join(failed) if failed else ".")
        if into is not None:  # the item merged into changed too
            done.append(await review.get_any(rt.pool, shop_id, into))
        views = await item_views(rt.pool, await review.with_knowledge(rt.pool, done))
        return render(page, "_bulk_done.html", views=views, message=message,
                      level="error" if failed else "ok")


def _item_id(value: object) -> UUID:
    try:
        return UUID(str(value))
    except ValueError as exc:
        raise Invalid(f"{str(value)[:40]!r} is not an item id", field="ids") from exc

