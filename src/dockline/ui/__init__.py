"""The dashboard: a static page (ES modules, CSS, SVG; no build step, no CDN) served at ``/ui``.

It reads only the serving app's JSON APIs (``/v1/stations``, ``/v1/monitoring/*``,
``/v1/models``, ``/v1/decisions``, ``/v1/lineage/{id}``; see ``dockline.pipeline.ui_api``),
never a database. The files ship as package data under ``dockline/ui/static``.

>>> app.mount(UI_PATH, ui_files(), name="ui")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "UI_PATH", "static_dir", "ui_files"]

UI_PATH = "/ui"
"""Where the serving app mounts the dashboard."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page may talk to its own origin only: no CDN, no tiles, no third-party beacons."""


def static_dir() -> Path:
    """The directory of the dashboard's files (inside the installed package)."""
    return Path(__file__).resolve().parent / "static"


class _Headers:
    """Adds the content security policy, and asks browsers to revalidate (files change with
    the installed version, not with a hashed name)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-cache"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def ui_files() -> ASGIApp:
    """An ASGI app serving the dashboard (``index.html`` at its root) to mount at ``/ui``."""
    return _Headers(StaticFiles(directory=static_dir(), html=True))
