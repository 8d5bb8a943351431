"""The web application ``newsletter serve`` runs (Starlette): its routes.

    GET       /healthz                 ok (always)
    GET       /static/site.css         the one stylesheet (always)
    GET POST  /unsubscribe/<token>     unsubscribe.py (always): RFC 8058 one-click
    GET POST  /manage/<token>          manage.py (always): topics, cadence, pause, unsubscribe
    GET       /                        signup.py (signup.enabled): the topics and the form
    POST      /subscribe               signup.py (signup.enabled): "check your inbox"
    GET POST  /confirm/<token>         signup.py (signup.enabled): double opt-in
    GET       /archive/..., /topics/..., /feed.atom    the public archive (publish.py), when on

Every page comes from a template (``pages``); every response gets the security headers
(``protect.Guard``). A request's store work runs in a worker thread on a connection of its
own. A forged, truncated or expired token, a bad form: a 400 page, and nothing changes.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.web import pages, protect
from newsletter.web.manage import Manage
from newsletter.web.publish import archive_routes
from newsletter.web.signup import Signup
from newsletter.web.site import Handlers, Site
from newsletter.web.unsubscribe import MAX_BODY, Unsubscribe

__all__ = ["MAX_BODY", "Site", "make_app"]


class Always(Handlers):
    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def stylesheet(self, request: Request) -> Response:
        css = pages.stylesheet(self.config.templates_path)
        return Response(
            css,
            media_type="text/css; charset=utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.message("Not found", "There is nothing here.", status=404)

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        return self.message(
            "Not allowed", "This address does not take that kind of request.", status=405
        )

    async def no_token(self, request: Request) -> Response:
        """``/unsubscribe/`` and the like: a link cut short."""
        return self.bad_token("emailed")


def make_app(site: Site) -> protect.Guard:
    always, signup = Always(site), Signup(site)
    both = ["GET", "POST"]
    routes = [
        Route("/healthz", always.healthz),
        Route("/static/site.css", always.stylesheet),
        Route("/unsubscribe/{token}", Unsubscribe(site).handle, methods=both),
        Route("/manage/{token}", Manage(site).handle, methods=both),
        Route("/", signup.home),
        Route("/subscribe", signup.subscribe, methods=["POST"]),
        Route("/confirm/{token}", signup.confirm, methods=both),
        *archive_routes(site.config),
        *(
            Route(f"/{p}/", always.no_token, methods=both)
            for p in ("unsubscribe", "manage", "confirm")
        ),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, always.not_found)
    app.add_exception_handler(405, always.not_allowed)
    error = b"<!DOCTYPE html><title>Error</title><h1>Something went wrong</h1>"
    return protect.Guard(app, error)
