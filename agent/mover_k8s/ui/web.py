"""The dashboard's web application (Starlette): server-rendered pages, JSON endpoints for the
same data, and the one script that refreshes live progress by polling them.

Security, in both modes:

- **Who**: local mode accepts a request only with the per-run secret that `mover ui` prints
  in its URL (`/?secret=...`, then an HttpOnly cookie), as Jupyter does: 127.0.0.1 is shared
  by every local user and process, and the dashboard acts with the kubeconfig's credentials.
  In-cluster mode takes the user's bearer token from the `Authorization` header (an
  authenticating proxy in front) or from the HttpOnly cookie the sign-in form sets.
- **Host**: local mode answers only requests whose Host is 127.0.0.1, localhost or [::1]
  with its port: a web page cannot rebind a name of its own to the loopback address.
- **CSRF**: every POST carries the per-browser token of the `mover_csrf` cookie in a hidden
  field and must match it (double submit; the cookie is SameSite=Strict, so another site's
  page can neither send nor read it), and a POST whose Origin header names another origin is
  refused. GETs change nothing.
- **Headers**: a Content-Security-Policy of 'self' only (no inline script or style), no
  framing, referrers only within the dashboard (the secret is in the first URL only, which
  redirects at once).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mover.errors import MoverError, UsageError
from mover_k8s.errors import Conflict, KubeError
from mover_k8s.ui import views, wizard
from mover_k8s.ui.access import (
    Access,
    ClusterAccess,
    Forbidden,
    Session,
    Unauthenticated,
)
from mover_k8s.ui.pages import Pages

log = logging.getLogger(__name__)

CSRF_COOKIE = "mover_csrf"
SECRET_COOKIE = "mover_secret"
TOKEN_COOKIE = "mover_token"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send Origin: null
    "Cache-Control": "no-store",
}


class Dashboard:
    """The application's state: how requests are authorized, mover's namespace, and (local
    mode) the per-run secret."""

    def __init__(
        self,
        access: Access,
        mover_namespace: str,
        secret: str | None = None,
        secure_cookies: bool = False,
        desired_root: Path | None = None,
    ) -> None:
        self.access = access
        self.namespace = mover_namespace
        self.local = not isinstance(access, ClusterAccess)
        self.secret = secret if secret is not None else secrets.token_urlsafe(24)
        self.secure_cookies = secure_cookies
        # Drift against git reads a directory on this machine: locally any of yours; in the
        # cluster only under this root (a git checkout mounted into the pod), else none.
        self.desired_root = desired_root.resolve() if desired_root else None
        folder = resources.files("mover_k8s.ui")
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder / "templates")),
            autoescape=True,
        )
        self.static = str(folder / "static")

    # -- who asks ------------------------------------------------------------------------

    def session(self, request: Request) -> Session:
        if self.local:
            return self.access.session(None)
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        return self.access.session(token or request.cookies.get(TOKEN_COOKIE) or None)

    def local_check(self, request: Request) -> Response | None:
        """Local mode's Host and secret checks; a response when the request is refused."""
        host = (request.headers.get("host") or "").rsplit(":", 1)[0]
        if host not in LOCAL_HOSTS:
            return HTMLResponse("mover ui answers on 127.0.0.1 only", status_code=421)
        given = request.query_params.get("secret")
        if given is not None and hmac.compare_digest(given, self.secret):
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(
                SECRET_COOKIE, self.secret, httponly=True, samesite="strict", path="/"
            )
            return response
        cookie = request.cookies.get(SECRET_COOKIE, "")
        if not hmac.compare_digest(cookie, self.secret):
            return HTMLResponse(self.render("signin.html", request, message=""), status_code=401)
        return None

    # -- pages -----------------------------------------------------------------------------

    def render(self, template: str, request: Request, **context: Any) -> str:
        return self.templates.get_template(template).render(
            csrf=getattr(request.state, "csrf", ""),
            local=self.local,
            path=request.url.path,
            user=getattr(request.state, "user", ""),
            namespace=self.namespace,
            now=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            **context,
        )

    def page(self, template: str, request: Request, code: int = 200, **context: Any) -> Response:
        return HTMLResponse(self.render(template, request, **context), status_code=code)


def _form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _same_origin(request: Request) -> bool:
    """No Origin (not a browser's cross-site request), or the origin this page was served on."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == (request.headers.get("host") or "")


Handler = Callable[[Request], Awaitable[Response]]


class _Guard:
    """What every route but /static, /healthz and /favicon.ico goes through: the local checks,
    the CSRF token (every POST but the sign-in form's own, checked there), the session, the
    errors as pages or JSON, and the security headers."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard

    async def __call__(self, request: Request, handler: Handler) -> Response:
        d = self.d
        if d.local:
            refused = d.local_check(request)
            if refused is not None:
                return _secure(refused)
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not csrf
        if fresh:
            csrf = secrets.token_urlsafe(24)
        request.state.csrf = csrf
        try:
            await self._read_form(request, fresh, csrf)
            response = await self._handle(request, handler)
        except (Unauthenticated, HTTPException, MoverError) as exc:
            response = self._refusal(request, exc)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                csrf,
                httponly=True,
                samesite="strict",
                secure=d.secure_cookies,
                path="/",
            )
        return _secure(response)

    async def _read_form(self, request: Request, fresh: bool, csrf: str) -> None:
        if request.method != "POST":
            return
        form = _form(await request.body())
        request.state.form = form
        if request.url.path == "/signin":
            return  # checked by the sign-in route, which may be the first page a browser sees
        if (
            fresh
            or not hmac.compare_digest(form.get("csrf", ""), csrf)
            or not _same_origin(request)
        ):
            raise Forbidden("the form is stale or from another site: reload the page")

    async def _handle(self, request: Request, handler: Handler) -> Response:
        if request.url.path not in ("/signin", "/signout"):
            session = await run_in_threadpool(self.d.session, request)
            request.state.session = session
            request.state.user = session.user.name
        try:
            return await handler(request)
        finally:
            if hasattr(request.state, "session"):
                request.state.session.close()

    def _refusal(self, request: Request, exc: Exception) -> Response:
        d = self.d
        if isinstance(exc, Unauthenticated):
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": str(exc)}, status_code=401)
            return d.page("signin.html", request, code=401, message=str(exc))
        if isinstance(exc, HTTPException):
            return _error(d, request, exc.status_code, str(exc.detail))
        if isinstance(exc, KubeError) and not isinstance(exc, Conflict):
            return _error(d, request, 403 if exc.status == 403 else 502, str(exc))
        codes = ((Forbidden, 403), (Conflict, 409), (UsageError, 400))
        code = next((c for kind, c in codes if isinstance(exc, kind)), 502)
        return _error(d, request, code, str(exc))


def _session(request: Request) -> Session:
    session: Session = request.state.session
    return session


class _Handlers:
    """The routes' handlers: each reads its page's data (mover_k8s.ui.pages, in a thread: the
    Kubernetes client blocks) and renders it, or answers it as JSON under /api."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard
        self.pages = Pages(dashboard.namespace, dashboard.local, dashboard.desired_root)

    # -- applications --

    async def apps_page(self, request: Request) -> Response:
        apps = await run_in_threadpool(views.applications, _session(request), self.d.namespace)
        return self.d.page("apps.html", request, apps=apps, title="Applications")

    async def apps_json(self, request: Request) -> Response:
        apps = await run_in_threadpool(views.applications, _session(request), self.d.namespace)
        return JSONResponse({"applications": apps})

    async def app_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        data = await run_in_threadpool(self.pages.application, _session(request), name)
        return self.d.page("app.html", request, title=name, **data)

    async def app_json(self, request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(
            await run_in_threadpool(self.pages.application, _session(request), name)
        )

    async def start_backup(self, request: Request) -> Response:
        repository = request.state.form.get("repository") or "default"
        created = await run_in_threadpool(
            self.pages.back_up_now, _session(request), request.path_params["name"], repository
        )
        return RedirectResponse(f"/backups/{created}", status_code=303)

    # -- restore points --

    async def backup_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        data = await run_in_threadpool(self.pages.restore_point, _session(request), name)
        return self.d.page("backup.html", request, title=name, **data)

    async def backup_json(self, request: Request) -> Response:
        name = request.path_params["name"]
        data = await run_in_threadpool(self.pages.restore_point, _session(request), name)
        return JSONResponse(data)

    async def verify(self, request: Request) -> Response:
        name = request.path_params["name"]
        read_data = request.state.form.get("readData") == "on"
        data = await run_in_threadpool(
            self.pages.restore_point, _session(request), name, True, read_data
        )
        return self.d.page("backup.html", request, title=name, **data)

    async def progress_json(self, request: Request) -> Response:
        kind, name = request.path_params["kind"], request.path_params["name"]
        return JSONResponse(
            await run_in_threadpool(self.pages.progress, _session(request), kind, name)
        )

    async def drift_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        text = request.query_params.get("desired", "").strip()
        data = await run_in_threadpool(self.pages.drift, _session(request), name, text)
        return self.d.page(
            "drift.html", request, title=f"{name}: drift", backup=name, desired=text, **data
        )

    # -- running --

    async def running_page(self, request: Request) -> Response:
        entries = await run_in_threadpool(views.running, _session(request), self.d.namespace, True)
        return self.d.page("running.html", request, title="Backups and restores", entries=entries)

    async def running_json(self, request: Request) -> Response:
        entries = await run_in_threadpool(views.running, _session(request), self.d.namespace, True)
        return JSONResponse({"running": entries})

    # -- restores --

    async def restore_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        data = await run_in_threadpool(self.pages.restore, _session(request), name)
        return self.d.page("restore.html", request, title=name, **data)

    async def wizard_page(self, request: Request) -> Response:
        form = wizard.Form(backup=request.query_params.get("backup", ""))
        context = await run_in_threadpool(self.pages.restore_form, _session(request), form)
        return self.d.page("wizard.html", request, title="Restore", preview=None, **context)

    async def wizard_preview(self, request: Request) -> Response:
        form = wizard.Form.parse(request.state.form)
        context = await run_in_threadpool(self.pages.preview, _session(request), form)
        return self.d.page("wizard.html", request, title="Restore: preview", **context)

    async def wizard_submit(self, request: Request) -> Response:
        form = wizard.Form.parse(request.state.form)
        name = await run_in_threadpool(self.pages.submit_restore, _session(request), form)
        return RedirectResponse(f"/restores/{name}", status_code=303)

    # -- repositories and agents --

    async def repositories_page(self, request: Request) -> Response:
        data = await run_in_threadpool(self.pages.repositories, _session(request))
        return self.d.page("repositories.html", request, title="Repositories and agents", **data)

    async def repositories_json(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.pages.repositories, _session(request)))

    # -- signing in (in the cluster) --

    async def signin(self, request: Request) -> Response:
        d = self.d
        if d.local:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return d.page("signin.html", request, message="")
        form: dict[str, str] = request.state.form
        if not hmac.compare_digest(form.get("csrf", ""), request.state.csrf) or not _same_origin(
            request
        ):
            raise Forbidden("the form is stale or from another site: reload the page")
        token = form.get("token", "").strip()
        await run_in_threadpool(d.access.session, token)  # Unauthenticated when it is not valid
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=d.secure_cookies
        )
        return response

    async def signout(self, request: Request) -> Response:
        response = RedirectResponse("/signin" if not self.d.local else "/", status_code=303)
        response.delete_cookie(TOKEN_COOKIE)
        return response


async def _healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


async def _favicon(request: Request) -> Response:
    return Response(status_code=204)  # none: browsers ask anyway


GET, POST = ("GET",), ("POST",)
# (path, methods, the _Handlers method): every one goes through _Guard.
ROUTES: list[tuple[str, tuple[str, ...], str]] = [
    ("/", GET, "apps_page"),
    ("/api/applications", GET, "apps_json"),
    ("/apps/{name}", GET, "app_page"),
    ("/api/applications/{name}", GET, "app_json"),
    ("/apps/{name}/backup", POST, "start_backup"),
    ("/backups/{name}", GET, "backup_page"),
    ("/api/backups/{name}", GET, "backup_json"),
    ("/backups/{name}/verify", POST, "verify"),
    ("/backups/{name}/drift", GET, "drift_page"),
    ("/api/progress/{kind}/{name}", GET, "progress_json"),
    ("/running", GET, "running_page"),
    ("/api/running", GET, "running_json"),
    ("/restores/{name}", GET, "restore_page"),
    ("/restore", GET, "wizard_page"),
    ("/restore/preview", POST, "wizard_preview"),
    ("/restore", POST, "wizard_submit"),
    ("/repositories", GET, "repositories_page"),
    ("/api/repositories", GET, "repositories_json"),
    ("/signin", ("GET", "POST"), "signin"),
    ("/signout", POST, "signout"),
]


def build(dashboard: Dashboard) -> Starlette:
    """The ASGI application."""
    guard, handlers = _Guard(dashboard), _Handlers(dashboard)

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            return await guard(request, handler)

        return endpoint

    routes: list[Route | Mount] = [
        Route(path, guarded(getattr(handlers, name)), methods=list(methods), name=name)
        for path, methods, name in ROUTES
    ]
    routes += [
        Route("/healthz", _healthz),
        Route("/favicon.ico", _favicon),
        Mount("/static", StaticFiles(directory=dashboard.static), name="static"),
    ]
    return Starlette(routes=routes)


def _error(d: Dashboard, request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return d.page("error.html", request, code=status, title="Error", status=status, message=message)


def _secure(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response
