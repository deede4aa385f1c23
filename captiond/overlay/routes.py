"""The overlay's HTTP routing: which request gets which page, and who may ask.

A part of :class:`~captiond.overlay.server.OverlayServer` (a mixin: the attributes are the
server's). websockets hands every request to ``process_request`` before the WebSocket
handshake; this answers the pages, the static files, ``/status`` and the routes the daemon
mounts, checks the token, Host and Origin (:mod:`captiond.overlay.access`), and admits
``/ws`` viewers up to ``overlay.max_viewers``. Only GET and HEAD are answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State

from captiond import __version__
from captiond.config import Config
from captiond.overlay import access, style
from captiond.overlay.fanout import SOCKET_SNDBUF_BYTES, _Viewer
from captiond.overlay.pages import Pages

log = logging.getLogger("captiond.overlay")

#: Most query parameters parsed from a URL.
QUERY_FIELDS_MAX = 40
#: An API handler that takes longer than this gets a 504.
HTTP_HANDLER_TIMEOUT_S = 10.0
#: Status fields shown on pages and /status (the daemon's status may hold more; it stays in).
STATUS_KEYS: tuple[str, ...] = (
    "state", "engine", "session", "title", "uptime_s", "audio_s", "finals", "lag_s",
    "outputs_summary",
)

WS_PATH = "/ws"
STATIC_PREFIX = "/static/"
OWN_PATHS = frozenset({"/", "/overlay", "/status", WS_PATH})

#: Example overlay URLs on the index page: (what it shows, query string).
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Default style (from your config)", ""),
    ("Only text that will not change", "mode=stable"),
    ("Three rows of large yellow text at the top", "max_lines=3&font_size=56&color=ffdd00&position=top"),
    ("No background box, left aligned", "background_opacity=0&align=left"),
    ("Speaker names", "speakers=true"),
    ("Original and translation", "lang=both"),
)

HttpHandler = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]
StatusFn = Callable[[], dict[str, Any]]
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; font-src 'self' data:; frame-src 'self'; "
    "base-uri 'none'; form-action 'none'; "
    # OBS's browser source loads the page top-level, so this does not touch it; only the
    # index page's own preview may frame a page, no other site (clickjacking).
    "frame-ancestors 'self'"
)
#: HTTP methods the server answers; everything here is read-only.
ALLOWED_METHODS = ("GET", "HEAD")


class HttpRoutes:
    """The HTTP side of the overlay server."""

    _cfg: Config
    _status: StatusFn
    _handlers: list[tuple[str, HttpHandler]]
    _bind_loopback: bool
    _max_viewers: int
    _pages: Pages | None
    _token: str | None
    _viewers: dict[ServerConnection, _Viewer]
    _admitted: set[ServerConnection]
    _closed: bool

    @property
    def token_required(self) -> bool:
        return bool(self._token)

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.method not in ALLOWED_METHODS:
            refused = _text(405, f"{request.method[:20]} is not allowed here: this server "
                                 f"only reads (use {' or '.join(ALLOWED_METHODS)})\n")
            refused.headers["Allow"] = ", ".join(ALLOWED_METHODS)
            return refused
        response = await self._answer(connection, request)
        if request.method == "HEAD" and response is None:
            # A feed client must GET: a HEAD never upgrades.
            response = _text(426, "this is the live caption feed: connect with a WebSocket client\n")
        if request.method == "HEAD" and response is not None:
            # The headers GET would send (Content-Length included), without the body.
            response = dataclasses.replace(response, body=b"")
        return response

    async def _answer(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path or "/"
        try:
            query = dict(parse_qsl(parts.query, keep_blank_values=True,
                                   max_num_fields=QUERY_FIELDS_MAX))
        except ValueError:
            return _text(400, f"too many URL parameters (at most {QUERY_FIELDS_MAX})\n")
        handler = next(((p, h) for p, h in self._handlers if path.startswith(p)), None)
        is_static = path.startswith(STATIC_PREFIX)
        denied = access.decide(
            bind_loopback=self._bind_loopback,
            token=self._token,
            host_headers=request.headers.get_all("Host"),
            origin_headers=request.headers.get_all("Origin"),
            given_token=query.get("token") or _bearer(request.headers),
            needs_token=not is_static,
            check_origin=path == WS_PATH or handler is not None,
        )
        if denied is not None:
            log.info("overlay.refused path=%r status=%d", path[:100], denied.status)
            return _text(denied.status, denied.message)
        if path == WS_PATH:
            return self._admit_viewer(connection, request)
        if is_static:
            return self._static(path[len(STATIC_PREFIX):])
        if path == "/overlay":
            return self._overlay_page(query)
        if path == "/":
            return self._index_page(request)
        if path == "/status":
            return _json(200, self._public_status())
        if handler is not None:
            return await self._call_handler(handler[1], path, query)
        return _text(404, "not found (the caption page is /overlay, the feed is /ws)\n")

    def _admit_viewer(self, connection: ServerConnection, request: Request) -> Response | None:
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return _text(426, "this is the live caption feed: connect with a WebSocket client\n")
        if self._closed:
            return _text(503, "the overlay server is shutting down\n")
        # Admitted connections hold a slot until their handler ends (or the handshake failed).
        self._admitted = {c for c in self._admitted if c.state is not State.CLOSED}
        if len(self._admitted) >= self._max_viewers:
            log.warning("overlay.viewer_refused reason=full max_viewers=%d", self._max_viewers)
            return _text(503, f"too many viewers (at most {self._max_viewers}; "
                              "raise overlay.max_viewers)\n")
        self._admitted.add(connection)
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF_BYTES)
        return None

    def _static(self, name: str) -> Response:
        assert self._pages is not None
        found = self._pages.static(name)
        if found is None:
            return _text(404, "not found\n")
        body, content_type = found
        return _response(200, body, content_type)

    def _overlay_page(self, query: dict[str, str]) -> Response:
        assert self._pages is not None
        try:
            resolved = style.resolve(self._cfg, query)
        except style.StyleError as exc:
            return _text(400, f"{exc} (fix the overlay URL)\n")
        return self._render("overlay.html", {
            "css_vars": style.css_variables(resolved),
            "options": style.client_options(resolved),
            "position": resolved["position"],
            "version": __version__,
        })

    def _index_page(self, request: Request) -> Response:
        host = request.headers.get_all("Host")[0]
        base = f"http://{host}/"
        resolved = style.resolve(self._cfg, {})
        return self._render("index.html", {
            "overlay_url": base + "overlay",
            "feed_url": f"ws://{host}{WS_PATH}",
            "examples": EXAMPLES,
            "needs_token": self.token_required,
            "status": self._public_status(),
            "style": resolved,
            "version": __version__,
        })

    def _render(self, name: str, context: dict[str, Any]) -> Response:
        assert self._pages is not None
        try:
            html = self._pages.render(name, **context)
        except Exception as exc:  # noqa: BLE001 - a user template's mistake must not kill the server
            log.error("overlay.render_error template=%s error=%r", name, str(exc))
            return _text(500, f"the {name} template failed to render (see the captiond log)\n")
        return _response(200, html.encode(), "text/html; charset=utf-8",
                         [("Content-Security-Policy", _PAGE_CSP)])

    async def _call_handler(self, handler: HttpHandler, path: str, query: dict[str, str]) -> Response:
        query = {k: v for k, v in query.items() if k != "token"}
        try:
            async with asyncio.timeout(HTTP_HANDLER_TIMEOUT_S):
                status, body = await handler(path, query)
        except TimeoutError:
            log.error("overlay.handler_timeout path=%s", path)
            return _json(504, {"error": "the request took too long"})
        except Exception:
            log.exception("overlay.handler_error path=%s", path)
            return _json(500, {"error": "internal error (see the captiond log)"})
        return _json(status, body)

    def _public_status(self) -> dict[str, Any]:
        try:
            daemon = self._status() or {}
        except Exception:
            log.exception("overlay.status_error")
            daemon = {}
        out: dict[str, Any] = {}
        for key in STATUS_KEYS:
            # Plain values only: nested structures could carry anything (paths, settings).
            if key in daemon and (daemon[key] is None or isinstance(daemon[key], (str, int, float))):
                out[key] = daemon[key]
        out["viewers"] = len(self._viewers)
        out["max_viewers"] = self._max_viewers
        return out


def _bearer(headers: Headers) -> str | None:
    values = headers.get_all("Authorization")
    if len(values) == 1 and values[0].lower().startswith("bearer "):
        return values[0][7:].strip()
    return None


def _response(
    status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        # For browsers older than CSP frame-ancestors: only this server may frame a page.
        ("X-Frame-Options", "SAMEORIGIN"),
    ])
    for name, value in extra or ():
        headers[name] = value
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _text(status: int, message: str) -> Response:
    return _response(status, message.encode(), "text/plain; charset=utf-8")


def _json(status: int, body: Any) -> Response:
    data = json.dumps(body, ensure_ascii=False, default=str).encode()
    return _response(status, data, "application/json; charset=utf-8")
