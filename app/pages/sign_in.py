"""Signing in with an owner or admin key, signing out, and an admin's choice of shop."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie, State
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from app.auth import runtime_of
from app.pages.web import (
    COOKIE_PATH,
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    PageOf,
    back_to,
    secure_cookies,
    text_field,
)
from knowledge.errors import Forbidden, Invalid, LearnkbError, Unauthorized
from knowledge.store import shops, web_sessions

SIGN_IN_SECONDS = 3600


def _safe_next(target: str | None) -> str:
    """Only a path of these pages: never another site after sign-in."""
    if target and target.startswith(COOKIE_PATH + "/") and not target.startswith("//") \
            and "\\" not in target and "\n" not in target:
        return target
    return "/admin/queue"


def _sign_in_form(request: Request[Any, Any, Any], status: int = 200,
                  error: str | None = None, next_path: str | None = None) -> Template:
    token = secrets.token_urlsafe(32)
    return Template("sign_in.html", status_code=status, context={
        "csrf": token, "error": error, "next": _safe_next(next_path), "page": None},
        cookies=[Cookie(SIGN_IN_COOKIE, value=token, path=COOKIE_PATH, max_age=SIGN_IN_SECONDS,
                        httponly=True, samesite="strict", secure=secure_cookies(request))])


class SignInPages(Controller):
    path = "/admin"
    include_in_schema = False

    @get("/", name="admin:home")
    async def home(self) -> Redirect:
        return Redirect("/admin/queue", status_code=303)

    @get("/sign-in")
    async def sign_in_form(self, request: Request[Any, Any, Any],
                           next: FromQuery[str | None] = None) -> Template:
        return _sign_in_form(request, next_path=next)

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: Request[Any, Any, Any], state: State) -> Any:
        form = await request.form()
        sent, expected = form.get(CSRF_FIELD), request.cookies.get(SIGN_IN_COOKIE)
        next_path = _safe_next(text_field(form, "next", limit=2000))
        if not (isinstance(sent, str) and expected and
                hmac.compare_digest(sent.encode(), expected.encode())):
            return _sign_in_form(request, 403, "The form had expired or came from elsewhere: "
                                 "try again.", next_path)
        rt = runtime_of(state)
        try:
            key = text_field(form, "key", required=True, limit=200)
            async with rt.pool.acquire() as conn, conn.transaction():
                made = await web_sessions.sign_in(conn, key, rt.settings.session_hours)
        except (Unauthorized, Forbidden, Invalid) as exc:
            status = 403 if isinstance(exc, Forbidden) else 401
            message = exc.detail if isinstance(exc, Forbidden) else \
                "That key is not valid or was revoked."
            return _sign_in_form(request, status, message, next_path)
        cookies = [
            Cookie(SESSION_COOKIE, value=made.token, path=COOKIE_PATH,
                   max_age=int(rt.settings.session_hours * 3600), httponly=True,
                   samesite="strict", secure=secure_cookies(request)),
            Cookie(SIGN_IN_COOKIE, value="", path=COOKIE_PATH, max_age=0, httponly=True,
                   samesite="strict", secure=secure_cookies(request))]
        return Redirect(next_path, status_code=303, cookies=cookies)

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any], state: State,
                       page: PageOf) -> Redirect:
        await web_sessions.sign_out(runtime_of(state).pool, request.cookies.get(SESSION_COOKIE))
        return Redirect("/admin/sign-in", status_code=303, cookies=[
            Cookie(SESSION_COOKIE, value="", path=COOKIE_PATH, max_age=0, httponly=True,
                   samesite="strict", secure=secure_cookies(request))])

    @post("/shop", status_code=303)
    async def pick_shop(self, request: Request[Any, Any, Any], state: State,
                        page: PageOf) -> Redirect:
        """An admin looks at one shop, or at all (an owner's shop is fixed)."""
        if not page.is_admin:
            raise Forbidden("an owner's pages always show its own shop")
        ref = text_field(await request.form(), "shop", limit=100)
        pool = runtime_of(state).pool
        try:
            shop_id = (await shops.get_shop(pool, ref)).id if ref else None
        except LearnkbError as exc:
            raise Invalid(f"no shop {ref!r}", field="shop") from exc
        await web_sessions.pick_shop(pool, request.cookies.get(SESSION_COOKIE) or "", shop_id)
        return back_to(request, "/admin/queue")
