"""What every review page shares: the signed-in session, CSRF, errors as pages, headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.response import Redirect, Template

from app.auth import runtime_of, shop_cache_of
from app.problems import as_problem
from knowledge.access import Role
from knowledge.errors import Forbidden, Invalid, Unauthorized
from knowledge.store import shops, web_sessions
from knowledge.store.shops import Shop
from knowledge.store.web_sessions import WebSession

SESSION_COOKIE = "learnkb_session"
# Before sign-in there is no session to hold a CSRF token: the sign-in form's token is
# checked against this cookie instead (double submit), so no other site can sign a browser in.
SIGN_IN_COOKIE = "learnkb_sign_in"
COOKIE_PATH = "/admin"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"

# No inline script or style anywhere, nothing from another origin, never framed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Limits on what a form may carry, beyond what the knowledge layer checks itself.
MAX_FIELD = 20_000
MAX_IDS = 500


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def secure_cookies(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https" or bool(runtime_of(request.app.state)
                                                  .settings.secure_cookies)


async def csrf_sent(request: Request[Any, Any, Any]) -> str | None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent


async def provide_session(request: Request[Any, Any, Any]) -> WebSession:
    """The signed-in session; a form or htmx request must also carry its CSRF token."""
    rt = runtime_of(request.app.state)
    session = await web_sessions.lookup(rt.pool, request.cookies.get(SESSION_COOKIE),
                                        rt.settings.session_idle_minutes)
    if request.method not in {"GET", "HEAD"} and not session.csrf_ok(
            await csrf_sent(request)):
        raise Forbidden("the form's CSRF token is missing or out of date: reload the page "
                        "and try again")
    return session


@dataclass(frozen=True, slots=True)
class Page:
    """The session and the shop the pages act on (None: an admin looking at all shops)."""

    session: WebSession
    shop: Shop | None
    shops: list[Shop]
    path: str

    @property
    def is_admin(self) -> bool:
        return self.session.principal.role is Role.ADMIN

    def need_shop(self) -> Shop:
        if self.shop is None:
            raise Invalid("pick a shop first (the menu at the top): this page shows one shop",
                          field="shop")
        return self.shop


async def provide_page(request: Request[Any, Any, Any],
                       session: NamedDependency[WebSession]) -> Page:
    state = request.app.state
    pool = runtime_of(state).pool
    shop = (await shop_cache_of(state).get(pool, session.shop_id)
            if session.shop_id is not None else None)
    picker = await shops.list_shops(pool, limit=500) if \
        session.principal.role is Role.ADMIN else []
    return Page(session, shop, picker, request.url.path)


# The page context, as a handler parameter.
PageOf = NamedDependency[Page]


def render(page: Page, template: str, status: int = 200, **context: Any) -> Template:
    return Template(template, status_code=status,
                    context={"page": page, "csrf": page.session.csrf_token, **context})


def back_to(request: Request[Any, Any, Any], fallback: str) -> Redirect:
    """Where a form without htmx returns to: the page it was sent from, if one of ours."""
    referer = request.headers.get("referer", "")
    origin = f"{request.url.scheme}://{request.url.netloc}"
    target = referer[len(origin):] if referer.startswith(origin + COOKIE_PATH) else fallback
    return Redirect(target, status_code=303)


def text_field(form: FormMultiDict, name: str, *, required: bool = False,
               limit: int = MAX_FIELD) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{name} is a text field", field=name)
    value = (value or "").strip()
    if len(value) > limit:
        raise Invalid(f"{name} is longer than {limit} characters", field=name, limit=limit)
    if not value:
        if required:
            raise Invalid(f"{name} is required", field=name)
        return None
    if "\x00" in value:
        raise Invalid(f"{name} contains a NUL character", field=name)
    return value


def add_security_headers(response: Response[Any]) -> Response[Any]:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page_headers(response: Response[Any]) -> Response[Any]:
    """A page shows one shop's data to one session: never kept by a cache."""
    response.headers.setdefault("Cache-Control", "no-store")
    return add_security_headers(response)


def _error_page(request: Request[Any, Any, Any], status: int, title: str,
                detail: str) -> Response[Any]:
    if is_htmx(request):
        # htmx swaps only successful responses: the message goes to the page's alert region.
        response: Response[Any] = Template(
            "_flash.html", context={"level": "error", "message": detail},
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    else:
        response = Template("error.html", status_code=status,
                            context={"status": status, "title": title, "detail": detail})
    return page_headers(response)


def page_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Errors on pages are pages (or an alert in place), never problem JSON; a lost or
    missing session goes back to sign-in."""
    if isinstance(exc, Unauthorized):
        target = "/admin/sign-in"
        if request.method == "GET" and not is_htmx(request):
            target += "?next=" + quote(request.url.path + (
                "?" + request.url.query if request.url.query else ""), safe="")
        if is_htmx(request):
            return page_headers(Response(b"", status_code=200, headers={"HX-Redirect": target}))
        return page_headers(Redirect(target, status_code=303))
    # The same verdict, status, detail and Retry-After as the API gives, shown as a page.
    verdict = as_problem(request, exc)
    body = verdict.content if isinstance(verdict.content, dict) else {}
    response = _error_page(request, verdict.status_code or 500, str(body.get("title", "Error")),
                           str(body.get("detail", "error")))
    retry = verdict.headers.get("Retry-After")
    if retry is not None:
        response.headers["Retry-After"] = retry
    return response

