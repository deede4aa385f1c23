"""The overlay server: caption pages for OBS over HTTP and the live caption feed over WebSocket.

One ``websockets`` server answers everything on one port. This module holds its lifecycle
(listen, close, reconfigure, the token, live template edits); the HTTP routing lives in
:mod:`captiond.overlay.routes` and the fan-out to viewers in :mod:`captiond.overlay.fanout`.
Plain HTTP requests are answered in ``process_request`` (websockets hands us the parsed
request before the WebSocket handshake)::

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
import logging
import os
import secrets
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import watchfiles
from websockets.asyncio.server import Server, ServerConnection, serve

from captiond.config import Config
from captiond.errors import CaptiondError
from captiond.feed import Feed, Subscription
from captiond.logs import register_secret
from captiond.overlay import access, style
from captiond.overlay.fanout import _RELOAD, WRITE_LIMIT_BYTES, FanOut, _Viewer
from captiond.overlay.pages import Pages
from captiond.overlay.routes import OWN_PATHS, STATIC_PREFIX, HttpHandler, HttpRoutes, StatusFn

log = logging.getLogger("captiond.overlay")
# websockets logs every HTTP request at info; keep only its problems.
_ws_log = logging.getLogger("captiond.overlay.websockets")
_ws_log.setLevel(logging.WARNING)

#: Largest message a viewer may send (bytes); viewers have nothing to say.
MAX_INPUT_BYTES = 1024
#: Incoming frames buffered per viewer before reading pauses.
INPUT_QUEUE_FRAMES = 4
#: Keepalive: a viewer that does not answer a ping within PING_TIMEOUT_S is dropped.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
#: Time allowed for a WebSocket opening handshake and for a closing handshake.
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
#: How long close() waits for viewer handlers after closing the server (the daemon allows
#: each service 5 s to close).
SHUTDOWN_WAIT_S = 3.0
#: Quiet period before a template edit is applied (ms).
WATCH_DEBOUNCE_MS = 200
#: Random bytes in a generated token (URL-safe base64: 32 characters).
TOKEN_BYTES = 24
#: File in the data directory that keeps a generated token across restarts.
TOKEN_FILE = "overlay-token"




class OverlayError(CaptiondError):
    """The overlay server cannot start (port taken, bad template directory, ...)."""


class OverlayServer(HttpRoutes, FanOut):
    """Serves the caption overlay and the live feed of ``feed`` until :meth:`close`.

    ``status`` returns the daemon's current status; only :data:`~captiond.overlay.routes.STATUS_KEYS` reach a page.
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
