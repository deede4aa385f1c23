"""The overlay server: caption pages for OBS over HTTP and the live caption feed over WebSocket.

One ``websockets`` server answers everything on one port. Plain HTTP requests are answered in
``process_request`` (websockets hands us the parsed request before the WebSocket handshake)::

    /                 index: the overlay URLs to paste into OBS, a live preview, the status
    /overlay          the caption page (transparent background), styled by config and URL query
    /static/NAME      the page's script and stylesheet (a fixed list, no secrets, no token)
    /status           the status as JSON
    /ws               the live feed (WebSocket): hello, the snapshot, then every update
    PREFIX...         routes the daemon mounts (``http_handlers``, e.g. the JSON API on /api/)

Fan-out never blocks the pipeline: :meth:`Feed.publish` only offers each message to one
subscription of this server, and one task fans it out. Viewers that are caught up get it
written straight into their socket; a viewer that is behind gets it in its own bounded queue,
coalesced per line, which its handler drains. A viewer that stops reading is dropped when its
queue holds :data:`~captiond.feed.MAX_PENDING_KEYS` lines or its socket has not drained for
:data:`SEND_STALL_S`; the others never wait for it. Viewers have nothing to say: their messages
are read, size-limited and dropped.

Feed messages, as JSON text frames (the line/session/status schema is :mod:`captiond.feed`'s)::

    {"type": "hello", "protocol": 1}   first on every connection: forget what you showed,
                                       the snapshot follows
    {"type": "line", ..., "age_ms": 5300}   snapshot lines carry how long ago they last changed
    {"type": "reload"}                 the page's template changed: reload the page
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import os
import secrets
import socket
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import watchfiles
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from captiond import __version__
from captiond.config import Config
from captiond.errors import CaptiondError
from captiond.feed import Feed, Subscription
from captiond.logs import register_secret
from captiond.overlay import access, style
from captiond.overlay.pages import Pages

log = logging.getLogger("captiond.overlay")
# websockets logs every HTTP request at info; keep only its problems.
_ws_log = logging.getLogger("captiond.overlay.websockets")
_ws_log.setLevel(logging.WARNING)

#: Feed protocol version announced in the hello message.
PROTOCOL = 1
#: Largest message a viewer may send (bytes); viewers have nothing to say.
MAX_INPUT_BYTES = 1024
#: Incoming frames buffered per viewer before reading pauses.
INPUT_QUEUE_FRAMES = 4
#: Messages a viewer may send in one connection before it is closed (1008).
INPUT_MESSAGES_MAX = 100
#: Bytes buffered for a viewer's socket before a send waits for it to drain.
WRITE_LIMIT_BYTES = 64 * 1024
#: Kernel send buffer per viewer socket (bytes; Linux doubles it). Autotuning would let each
#: stalled viewer pin megabytes of kernel memory; captions need a few kB per second.
SOCKET_SNDBUF_BYTES = 128 * 1024
#: A viewer whose socket has not drained below WRITE_LIMIT_BYTES for this long is dropped.
SEND_STALL_S = 10.0
#: How often the stall watchdog looks at every viewer's write buffer.
STALL_CHECK_S = 1.0
#: Keepalive: a viewer that does not answer a ping within PING_TIMEOUT_S is dropped.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
#: Time allowed for a WebSocket opening handshake and for a closing handshake.
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
#: How long close() waits for viewer handlers after closing the server (the daemon allows
#: each service 5 s to close).
SHUTDOWN_WAIT_S = 3.0
#: Most query parameters parsed from a URL.
QUERY_FIELDS_MAX = 40
#: An API handler that takes longer than this gets a 504.
HTTP_HANDLER_TIMEOUT_S = 10.0
#: Encoded messages kept so N viewers cost one json.dumps per message.
ENCODE_CACHE_ENTRIES = 512
#: Lines whose last-change time is remembered (for ``age_ms`` in snapshots).
AGE_KEYS_MAX = 1_000
#: Quiet period before a template edit is applied (ms).
WATCH_DEBOUNCE_MS = 200
#: Random bytes in a generated token (URL-safe base64: 32 characters).
TOKEN_BYTES = 24
#: File in the data directory that keeps a generated token across restarts.
TOKEN_FILE = "overlay-token"
#: Close codes: the viewer fell too far behind (reconnect), the viewer talks too much.
CLOSE_TOO_SLOW = 1013
CLOSE_POLICY = 1008

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

_HELLO: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL}
_RELOAD: dict[str, Any] = {"type": "reload"}
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


class OverlayError(CaptiondError):
    """The overlay server cannot start (port taken, bad template directory, ...)."""


@dataclass(eq=False)
class _Viewer:
    """One connected viewer: its socket, its backlog, and whether its handler is sending."""

    ws: ServerConnection
    queue: Subscription
    #: True while the handler sends (the snapshot, or a backlog): the fan-out must queue.
    busy: bool = True


def _line_key(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message.get("track"), message.get("channel"), message.get("item_id"))


class OverlayServer:
    """Serves the caption overlay and the live feed of ``feed`` until :meth:`close`.

    ``status`` returns the daemon's current status; only :data:`STATUS_KEYS` reach a page.
    ``http_handlers`` maps a path prefix (``"/api/"``) to ``async (path, query) -> (status,
    json_body)``; those routes need the token when one is set, like the pages.
    """

    def __init__(
        self,
        cfg: Config,
        feed: Feed,
        status: StatusFn,
        http_handlers: dict[str, HttpHandler] | None = None,
    ) -> None:
        self._cfg = cfg
        self._feed = feed
        self._status = status
        handlers = dict(http_handlers or {})
        for prefix in handlers:
            if not prefix.startswith("/") or prefix in OWN_PATHS or prefix.startswith(STATIC_PREFIX):
                raise ValueError(f"http handler prefix {prefix!r} must start with / and not be "
                                 "one of the overlay's own routes")
        # Longest prefix first, so /api/v2/ wins over /api/.
        self._handlers = sorted(handlers.items(), key=lambda kv: -len(kv[0]))
        self._host: str = cfg["overlay.host"]
        self._bind_loopback = access.is_loopback(self._host)
        self._max_viewers: int = cfg["overlay.max_viewers"]
        self._server: Server | None = None
        self._pages: Pages | None = None
        self._token: str | None = None
        self._viewers: dict[ServerConnection, _Viewer] = {}
        self._admitted: set[ServerConnection] = set()
        self._seen: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        self._encoded: OrderedDict[int, tuple[dict[str, Any], bytes]] = OrderedDict()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._fanout: Subscription | None = None
        self._closed = False
        #: True if start() generated a new token (it was shown once).
        self.token_generated = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load templates, settle the token, listen. Raises :class:`OverlayError` or ConfigError."""
        if self._server is not None:
            return
        if self._closed:
            raise OverlayError("this overlay server was closed; create a new one")
        user_dir = self._cfg["overlay.templates"]
        self._pages = Pages(Path(user_dir).expanduser() if user_dir else None)
        self._token = self._settle_token()
        try:
            self._server = await serve(
                self._serve_viewer,
                self._host,
                self._cfg["overlay.port"],
                process_request=self._process_request,
                compression=None,  # small messages; deflate would cost CPU and ~100 KiB per viewer
                server_header=None,
                open_timeout=OPEN_TIMEOUT_S,
                ping_interval=PING_INTERVAL_S,
                ping_timeout=PING_TIMEOUT_S,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_INPUT_BYTES,
                max_queue=INPUT_QUEUE_FRAMES,
                write_limit=WRITE_LIMIT_BYTES,
                logger=_ws_log,
            )
        except OSError as exc:
            raise OverlayError(
                f"overlay cannot listen on {self._host}:{self._cfg['overlay.port']}: "
                f"{exc.strerror or exc} (stop the program using it, or set overlay.port)"
            ) from exc
        # Subscribed here, not in the task, so lines published right after start() are seen.
        self._fanout = self._feed.subscribe("overlay:fanout")
        self._tasks.append(asyncio.create_task(self._fan_out(), name="overlay-fanout"))
        self._tasks.append(asyncio.create_task(self._watch_stalls(), name="overlay-stalls"))
        if self._pages.user_dir is not None:
            self._tasks.append(asyncio.create_task(self._watch_templates(), name="overlay-watch"))
        log.info(
            "overlay.started url=%s auth=%s max_viewers=%d templates=%s",
            self.url, "token" if self._token else "loopback", self._max_viewers,
            "user" if self._pages.user_dir else "shipped",
        )

    async def close(self) -> None:
        """Stop listening and close every viewer with 1001 (going away). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._server is not None:
            # Viewers that stopped reading cannot take a close frame: drop them now rather
            # than wait out the closing handshake.
            for ws in list(self._viewers):
                if ws.transport.get_write_buffer_size() >= WRITE_LIMIT_BYTES:
                    ws.transport.abort()
            self._server.close()  # viewers get 1001; handlers end when their reader sees it
            try:
                await asyncio.wait_for(self._server.wait_closed(), SHUTDOWN_WAIT_S)
            except TimeoutError:
                log.warning("overlay.close_timeout viewers=%d", len(self._viewers))
                for connection in list(self._viewers):
                    connection.transport.abort()
        for viewer in list(self._viewers.values()):
            viewer.queue.close()
        if self._fanout is not None:
            self._fanout.close()  # the feed stops offering to this server
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results):
            if isinstance(result, Exception):
                log.error("overlay.task_failed task=%s error=%r", task.get_name(), str(result))
        self._tasks.clear()
        log.info("overlay.stopped")

    def reconfigure(self, cfg: Config) -> None:
        """Apply a reloaded config: styling takes effect at once (open pages reload).

        Host, port, token, viewer limit and template directory need a restart; a change to
        them is logged and ignored until then.
        """
        style_names = {f"overlay.{key}" for key in style.STYLE_KEYS}
        changed = cfg.changed(self._cfg)
        needs_restart = sorted(n for n in changed if n.startswith("overlay.") and n not in style_names)
        if needs_restart:
            log.warning("overlay.restart_needed settings=%s", ",".join(needs_restart))
            cfg = cfg.replace(**{n.replace(".", "__"): self._cfg[n] for n in needs_restart})
        restyled = changed & style_names
        self._cfg = cfg
        if restyled:
            log.info("overlay.restyled settings=%s viewers=%d", ",".join(sorted(restyled)),
                     len(self._viewers))
            for viewer in list(self._viewers.values()):
                viewer.queue.offer(_RELOAD)

    @property
    def port(self) -> int:
        if self._server is None:
            raise OverlayError("the overlay server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL to open (a wildcard bind address is shown as 127.0.0.1)."""
        host = self._host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def token_required(self) -> bool:
        return bool(self._token)

    def viewers(self) -> int:
        return len(self._viewers)

    def backlogs(self) -> list[int]:
        """Lines waiting for each connected viewer (0 for viewers that keep up)."""
        return [viewer.queue.pending() for viewer in self._viewers.values()]

    # -- token --------------------------------------------------------------------------------

    def _settle_token(self) -> str | None:
        """The configured token; on a non-loopback bind without one, the kept or a new one."""
        configured = self._cfg["overlay.token"]
        if configured:
            register_secret(configured)
            return str(configured)
        if self._bind_loopback:
            return None
        path = self._cfg.data_dir() / TOKEN_FILE
        try:
            token = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            token = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise OverlayError(f"cannot read the overlay token file {path}: {exc} "
                               "(fix its permissions, or set overlay.token)") from exc
        if token:
            register_secret(token)
            return token
        token = secrets.token_urlsafe(TOKEN_BYTES)
        register_secret(token)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(token + "\n")
        except OSError as exc:
            raise OverlayError(f"cannot write the overlay token file {path}: {exc} "
                               "(fix the data directory, or set overlay.token)") from exc
        self.token_generated = True
        # Shown once, on a terminal only: a journal or log file must not keep it.
        if sys.stderr.isatty():
            print(
                f"captiond: overlay token (shown once, kept in {path}): {token}\n"
                f"captiond: OBS Browser Source URL: {self.url_placeholder()}overlay?token={token}",
                file=sys.stderr,
            )
        log.warning(
            "overlay.token_generated file=%s hint='the overlay is reachable beyond this machine; "
            "pages need ?token=... from that file'", path,
        )
        return token

    def url_placeholder(self) -> str:
        host = self._host if self._host not in ("", "0.0.0.0", "::") else "THIS-MACHINE"
        return f"http://{host}:{self._cfg['overlay.port']}/"

    # -- HTTP ---------------------------------------------------------------------------------

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

    # -- the feed ----------------------------------------------------------------------------
    #
    # One fan-out task reads the feed once and writes each message straight into the socket of
    # every viewer that is caught up (websockets' broadcast: no task switch per viewer). A
    # viewer that is busy (sending its snapshot), has a backlog, or whose socket buffer is full
    # gets the message in its own bounded queue instead (a Subscription: coalesced per line),
    # which its handler drains in order; once drained it is caught up again.

    async def _serve_viewer(self, ws: ServerConnection) -> None:
        viewer = _Viewer(ws, Subscription(self._feed, f"overlay:{ws.id}"))
        # Register and snapshot in one synchronous step: every later message reaches it.
        snapshot = self._snapshot()
        self._viewers[ws] = viewer
        reader = asyncio.create_task(self._read_input(viewer), name="overlay-viewer-input")
        log.debug("overlay.viewer_joined viewers=%d", len(self._viewers))
        try:
            await self._send(ws, _HELLO)
            for message in snapshot:
                await self._send(ws, message)
            while True:
                if viewer.queue.pending() == 0:
                    viewer.busy = False  # caught up: the fan-out may write directly
                try:
                    message = await viewer.queue.get()
                except EOFError:
                    break
                viewer.busy = True
                await self._send(ws, message)
            if viewer.queue.overflowed:
                log.warning("overlay.viewer_dropped reason=behind")
                await ws.close(CLOSE_TOO_SLOW, "too far behind; reconnect")
        except ConnectionClosed:
            pass
        finally:
            viewer.queue.close()
            self._viewers.pop(ws, None)
            self._admitted.discard(ws)
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass

    async def _send(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        # No per-send timeout: one timer per send and viewer costs more than the send itself
        # at 200 viewers. _watch_stalls() drops viewers whose socket stopped draining.
        await ws.send(self._encode(message), text=True)

    async def _fan_out(self) -> None:
        """Deliver every feed message to every viewer; remember when lines last changed."""
        loop = asyncio.get_running_loop()
        while True:
            assert self._fanout is not None
            try:
                message = await self._fanout.get()
            except EOFError:
                if self._closed:
                    return
                # Only if this loop was starved for MAX_PENDING_KEYS lines: viewers may have
                # missed updates, so they reconnect and start again from a snapshot.
                log.error("overlay.fanout_overflow viewers=%d", len(self._viewers))
                for viewer in list(self._viewers.values()):
                    viewer.queue.close()
                self._fanout = self._feed.subscribe("overlay:fanout")
                continue
            kind = message.get("type")
            if kind == "line":
                key = _line_key(message)
                self._seen[key] = loop.time()
                self._seen.move_to_end(key)
                if len(self._seen) > AGE_KEYS_MAX:
                    self._seen.popitem(last=False)
            elif kind == "session" and message.get("event") == "started":
                self._seen.clear()
            direct: list[ServerConnection] = []
            for ws, viewer in self._viewers.items():
                if (
                    not viewer.busy
                    and viewer.queue.pending() == 0
                    and ws.transport.get_write_buffer_size() < WRITE_LIMIT_BYTES
                ):
                    direct.append(ws)
                else:
                    viewer.queue.offer(message)
            if direct:
                broadcast(direct, self._encode(message), text=True)

    async def _watch_stalls(self) -> None:
        """Drop viewers whose write buffer stayed full for SEND_STALL_S (a frozen client)."""
        loop = asyncio.get_running_loop()
        full_since: dict[ServerConnection, float] = {}
        while True:
            await asyncio.sleep(STALL_CHECK_S)
            now = loop.time()
            for ws, viewer in list(self._viewers.items()):
                transport = ws.transport
                if viewer.queue.overflowed:
                    # Its queue was cut off, but its handler may sit in a send that never drains.
                    log.warning("overlay.viewer_dropped reason=behind")
                    transport.abort()
                    continue
                if transport.is_closing() or transport.get_write_buffer_size() < WRITE_LIMIT_BYTES:
                    full_since.pop(ws, None)
                    continue
                since = full_since.setdefault(ws, now)
                if now - since >= SEND_STALL_S:
                    log.warning("overlay.viewer_dropped reason=stalled stalled_s=%.0f", now - since)
                    full_since.pop(ws, None)
                    transport.abort()
            for ws in [w for w in full_since if w not in self._viewers]:
                del full_since[ws]

    async def _read_input(self, viewer: _Viewer) -> None:
        """Drain what a viewer sends (so pings are answered); close chatty viewers."""
        received = 0
        try:
            async for _ in viewer.ws:
                received += 1
                if received > INPUT_MESSAGES_MAX:
                    await viewer.ws.close(CLOSE_POLICY, "viewers do not send messages")
                    break
        except ConnectionClosed:
            pass
        finally:
            viewer.queue.close()  # wakes the handler, which ends

    def _encode(self, message: dict[str, Any]) -> bytes:
        # A message goes to many viewers: encode each dict once, to UTF-8 bytes sent as text
        # frames (send(str) would encode again per viewer).
        entry = self._encoded.get(id(message))
        if entry is not None and entry[0] is message:
            return entry[1]
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        self._encoded[id(message)] = (message, text)
        if len(self._encoded) > ENCODE_CACHE_ENTRIES:
            self._encoded.popitem(last=False)
        return text

    def _snapshot(self) -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        out = []
        for message in self._feed.snapshot():
            if message.get("type") == "line":
                seen = self._seen.get(_line_key(message))
                if seen is not None:
                    message = {**message, "age_ms": int((now - seen) * 1000)}
            out.append(message)
        return out

    async def _watch_templates(self) -> None:
        """Apply template edits live: recompile, then tell open pages to reload."""
        assert self._pages is not None and self._pages.user_dir is not None
        try:
            async for changes in watchfiles.awatch(
                self._pages.user_dir, stop_event=self._stop, debounce=WATCH_DEBOUNCE_MS,
                step=50, recursive=False,
            ):
                names = sorted({Path(p).name for _, p in changes})
                problems = self._pages.reload()
                if problems:
                    continue  # reported by reload(); the pages keep the previous version
                log.info("overlay.templates_reloaded files=%s viewers=%d",
                         ",".join(names), len(self._viewers))
                for viewer in list(self._viewers.values()):
                    viewer.queue.offer(_RELOAD)
        except FileNotFoundError:
            log.error("overlay.templates_gone dir=%s (live template edits stopped)",
                      self._pages.user_dir)


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
