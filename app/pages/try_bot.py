"""Try the bot: ask as the bot runtime does, then rate or correct the answer, which files the
same signals the bot's users do."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.response import Redirect, Template

from app.auth import runtime_of
from app.observability import ANSWERS
from app.pages.web import PageOf, is_htmx, render, text_field
from knowledge.answering.answer import Question, answer_question
from knowledge.errors import Invalid
from knowledge.learning.signals import record_correction, record_feedback

# Turns asked from this page are told apart from customers' in the analytics.
CHANNEL = "review-page"


def _turn_id(value: str | None) -> UUID:
    try:
        return UUID(value or "")
    except ValueError as exc:
        raise Invalid("turn_id is not a turn's id", field="turn_id") from exc


class TryPages(Controller):
    path = "/admin/try"
    include_in_schema = False

    @get("/")
    async def try_page(self, page: PageOf) -> Template:
        page.need_shop()
        return render(page, "try.html")

    @post("/", status_code=200)
    async def ask(self, request: Request[Any, Any, Any], state: State,
                  page: PageOf) -> Template:
        shop = page.need_shop()
        rt = runtime_of(state)
        form = await request.form()
        question = text_field(form, "question", required=True,
                              limit=rt.settings.max_question_chars)
        conversation = text_field(form, "conversation_id", limit=200)
        answer = await answer_question(rt, shop, Question(
            text=question or "", conversation_id=conversation, channel=CHANNEL))
        ANSWERS.labels(tier=answer.tier).inc()
        return render(page, "_try_result.html" if is_htmx(request) else "try.html",
                      question=question, answer=answer)

    @post("/feedback", status_code=200)
    async def feedback(self, request: Request[Any, Any, Any], state: State,
                       page: PageOf) -> Template | Redirect:
        shop = page.need_shop()
        rt = runtime_of(state)
        form = await request.form()
        verdict = text_field(form, "verdict", required=True, limit=10)
        if verdict not in {"up", "down"}:
            raise Invalid("verdict is up or down", field="verdict")
        result = await record_feedback(
            rt, shop, rt.redactor, page.session.principal,
            turn_id=_turn_id(text_field(form, "turn_id", required=True, limit=36)),
            feedback_type=f"thumbs_{verdict}", rating=None, emoji=None,
            reason=text_field(form, "reason", limit=1000))
        if not is_htmx(request):
            return Redirect("/admin/try", status_code=303)
        return render(page, "_flash.html", level="ok", message=(
            "Thanks: rated helpful." if verdict == "up" else
            "Rated unhelpful" + (": it went to the learning queue." if result.queued else ".")))

    @post("/correction", status_code=200)
    async def correction(self, request: Request[Any, Any, Any], state: State,
                         page: PageOf) -> Template | Redirect:
        shop = page.need_shop()
        rt = runtime_of(state)
        form = await request.form()
        result = await record_correction(
            rt, shop, rt.redactor, page.session.principal,
            corrected_answer=text_field(form, "corrected_answer", required=True,
                                        limit=rt.settings.max_answer_chars) or "",
            priority="normal",
            turn_id=_turn_id(text_field(form, "turn_id", required=True, limit=36)),
            question=None, original_response=None, context=None)
        if not is_htmx(request):
            return Redirect("/admin/try", status_code=303)
        queued = result.queued
        message = ("Correction approved: the bot uses it once the apply job has run."
                   if queued.auto_approved else
                   f"Correction filed ({queued.outcome}): it waits in the queue for review.")
        return render(page, "_flash.html", level="ok", message=message)
