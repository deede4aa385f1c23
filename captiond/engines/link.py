"""The WebSocket side of both OpenAI engines: one connection driver.  [I/O shell]

Transcription (:mod:`captiond.engines.openai`) and translation (:mod:`captiond.engines.translate`)
talk to the same kind of service: a realtime WebSocket with bearer auth, one service session
per connection, several connections at a time during a rotation. Everything that is about the
sockets and not about the protocol lives here, once:

* **connect** (:func:`open_socket`: bounded handshake, keepalive pings, bounded messages, no
  compression) and read the server's clock off the upgrade's HTTP ``Date``
  (:func:`server_time`), which the protocol cores read ``expires_at`` against;
* **classify failures** in one function (:func:`classify_connect_error`): fatal (401/403, a bad
  URL), rate limited (429) or retryable;
* **back off with jitter** (:func:`retry_delay`), also after a link that died young
  (:data:`STABLE_LINK_S`), so a service that accepts and drops at once is not hammered; the
  attempt counter resets only when a link has lived that long;
* per link a **reader task** and a **writer task**, and a **bounded send queue**
  (:data:`MAX_PENDING_EVENTS`; a link that cannot drain it is closed as stalled and its
  unanswered audio goes to the next one);
* **close**: queued events go out first (bounded), then the closing handshake (bounded);
  :meth:`LinkDriver.close_all` ends every link and awaits its tasks.

The protocol cores decide *when* to connect (``wants_connection(now)``); the engine's
:meth:`LinkDriver.manage` loop asks them every :data:`TICK_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from captiond.tasks import spawn

log = logging.getLogger("captiond.openai.link")

#: Reconnect backoff: first delay, growth, ceiling (full jitter: 50-100 % of the delay).
BACKOFF_BASE_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 30.0
#: Least wait after HTTP 429 or a rate_limit_exceeded error.
RATE_LIMIT_BACKOFF_S = 5.0
#: TCP + TLS + HTTP upgrade must finish within this.
OPEN_TIMEOUT_S = 10.0
#: A connection must answer with a session within this, or it is closed and retried.
READY_TIMEOUT_S = 10.0
#: Keepalive: a ping every interval; no pong within the timeout closes the link (stall).
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 10.0
#: Closing handshake bound.
CLOSE_TIMEOUT_S = 2.0
#: Queued events get this long to go out before a link is closed on purpose.
CLOSE_DRAIN_S = 0.5
#: Largest server message accepted.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: How often the manager asks the protocol what to do (timeouts, rotation, reconnects).
TICK_S = 0.2
#: Client events queued on one link at most; beyond it the link is stalled and is closed.
MAX_PENDING_EVENTS = 2_000
#: A link that ends younger than this (not closed by us) counts as a failed attempt: the next
#: connection waits a backoff. A link that has lived this long resets the attempt counter.
STABLE_LINK_S = 1.0
#: A client clock within this of the server's HTTP ``Date`` (whole seconds, plus transit) is
#: taken as the server's time: it has sub-second precision. Further off, the ``Date`` is.
CLOCK_AGREE_S = 2.0

AUTH_STATUSES = (401, 403)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``attempt`` 0 is the first retry."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * BACKOFF_FACTOR**attempt)
    return ceiling * rng.uniform(0.5, 1.0)


def retry_delay(
    kind: str, attempt: int, rng: random.Random, rate_limit_s: float = RATE_LIMIT_BACKOFF_S
) -> float:
    """How long to wait before reconnecting after a failure of this ``kind``."""
    delay = backoff_delay(attempt, rng)
    return max(delay, rate_limit_s) if kind == "rate_limited" else delay


async def open_socket(
    url: str,
    key: str,
    *,
    ping_interval_s: float = PING_INTERVAL_S,
    ping_timeout_s: float = PING_TIMEOUT_S,
    open_timeout_s: float = OPEN_TIMEOUT_S,
) -> ClientConnection:
    """Open a realtime WebSocket the way every OpenAI engine does: bearer auth, bounded
    handshake, keepalive pings, bounded messages, no compression (audio does not compress)."""
    return await connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        open_timeout=open_timeout_s,
        ping_interval=ping_interval_s,
        ping_timeout=ping_timeout_s,
        close_timeout=CLOSE_TIMEOUT_S,
        max_size=MAX_MESSAGE_BYTES,
        compression=None,
    )


def server_time(ws: ClientConnection, wall: float | None = None) -> float | None:
    """The server's clock (epoch seconds) now, from the upgrade response's HTTP ``Date``; None
    when there is none. Session lifetimes are read against it, so a skewed client clock cannot
    make a fresh session look expired. The ``Date`` names whole seconds: when the client's
    clock (``wall``) agrees with it to within :data:`CLOCK_AGREE_S`, the client's reading is
    used for its sub-second precision."""
    response = getattr(ws, "response", None)
    header = response.headers.get("Date") if response is not None else None
    if not header:
        return None
    try:
        date = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    wall = time.time() if wall is None else wall
    return wall if abs(wall - date) <= CLOCK_AGREE_S else date


def classify_connect_error(exc: BaseException, url_setting: str = "openai.url") -> tuple[str, str]:
    """One place decides: ``("fatal"|"rate_limited"|"retry", message)``."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in AUTH_STATUSES:
            return "fatal", (
                f"openai refused the connection: HTTP {status} "
                "(check OPENAI_API_KEY or openai.api_key_file)"
            )
        if status == 429:
            return "rate_limited", "openai is rate limiting: HTTP 429 (backing off)"
        return "retry", f"openai refused the connection: HTTP {status}"
    if isinstance(exc, InvalidURI):
        return "fatal", f"{url_setting} is not a WebSocket URL ({exc}); fix {url_setting}"
    if isinstance(exc, (OSError, TimeoutError, InvalidHandshake, EOFError)):
        return "retry", f"openai unreachable: {type(exc).__name__}: {exc}"
    return "retry", f"openai connection failed: {type(exc).__name__}: {exc}"


def connect_failure(exc: BaseException, refused: dict[int, int],
                    url_setting: str = "openai.url") -> tuple[str, str]:
    """:func:`classify_connect_error`, counting a refused upgrade by HTTP status in ``refused``."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        refused[status] = refused.get(status, 0) + 1
    return classify_connect_error(exc, url_setting)


@dataclass
class Link:
    """One WebSocket. Client events queue in ``pending`` (one ordered queue per link) and are
    written by whoever holds ``lock``: the audio path right after each block (no task hop per
    block, :meth:`LinkDriver.send_now`), or the link's writer task for everything else."""

    handle: int
    ws: ClientConnection
    opened: float
    pending: deque[tuple[dict[str, Any], float | None]] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closing: bool = False  # closed on purpose (drained, stalled, not ready, the end)


@dataclass
class LinkHooks:
    """What the driver tells its engine. Each runs on the event loop and must not block.

    ``opened(now, server_time) -> handle``: a socket is up; register it with the protocol and
    queue what must be sent first. ``received(handle, message, now)``: one server message.
    ``attached(handle)``: the link is registered: events queued for it now are sent.
    ``lost(handle, now)``: the link is gone (any reason). ``closing(handle)``: the driver closes
    this link on purpose."""

    opened: Callable[[float, float | None], int]
    received: Callable[[int, str | bytes, float], None]
    lost: Callable[[int, float], None]
    closing: Callable[[int], None]
    attached: Callable[[int], None] = lambda _handle: None


class LinkDriver:
    """The connections of one engine: connect with backoff, read, write, close."""

    def __init__(
        self,
        name: str,
        url: str,
        key: str,
        hooks: LinkHooks,
        *,
        url_setting: str = "openai.url",
        log_fields: str = "",
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
        rate_limit_backoff_s: float = RATE_LIMIT_BACKOFF_S,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name  # the log events' prefix: "openai", "translate"
        self._fields = f" {log_fields}" if log_fields else ""  # e.g. "lang=es"
        self.url = url
        self._key = key
        self.hooks = hooks
        self.url_setting = url_setting
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.rate_limit_backoff_s = rate_limit_backoff_s
        self._rng = rng or random.Random()
        self.links: dict[int, Link] = {}
        self.wake = asyncio.Event()
        self.stopping = False
        self.backoff_until = 0.0
        self.attempt = 0
        #: Set when a failure is fatal (refused key, bad URL): the message users read.
        self.fatal: str | None = None
        self.last_error: str | None = None
        # Figures.
        self.connects = 0
        self.refused: dict[int, int] = {}
        self.stalled = 0
        self.write_latency_s: deque[float] = deque(maxlen=20_000)
        self.last_receive_t = 0.0

    # -- the manager loop ----------------------------------------------------------------------

    async def manage(self, step: Callable[[float], bool], wants: Callable[[float], bool],
                     is_connecting: Callable[[int], bool]) -> None:
        """Until stopped: ``step(now)`` (timeouts, status; False ends the loop), close links that
        never became ready, and connect when ``wants(now)`` and no backoff runs."""
        while not self.stopping:
            now = time.monotonic()
            if not step(now):
                return
            if self.attempt and any(now - lk.opened >= STABLE_LINK_S
                                    for lk in self.links.values()):
                self.attempt = 0  # a link has held: failures before it no longer count
            for link in list(self.links.values()):
                if is_connecting(link.handle) and now - link.opened > READY_TIMEOUT_S:
                    log.warning("%s.session_not_ready%s handle=%d", self.name, self._fields, link.handle)
                    await self.close_link(link, 1000)
            if self.fatal is None and now >= self.backoff_until and wants(now):
                await self.connect()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), TICK_S)

    def back_off(self, seconds: float) -> None:
        """Open no connection for ``seconds`` (a rate-limit error from the protocol)."""
        self.backoff_until = max(self.backoff_until, time.monotonic() + seconds)

    def _failed_attempt(self, kind: str) -> float:
        delay = retry_delay(kind, self.attempt, self._rng, self.rate_limit_backoff_s)
        self.attempt += 1
        self.backoff_until = max(self.backoff_until, time.monotonic() + delay)
        return delay

    # -- connecting ----------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Open one link (True), or record why not: a backoff, or :attr:`fatal`."""
        try:
            ws = await open_socket(self.url, self._key, ping_interval_s=self.ping_interval_s,
                                   ping_timeout_s=self.ping_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified in one place
            kind, message = connect_failure(exc, self.refused, self.url_setting)
            self.last_error = message
            if kind == "fatal":
                self.fatal = message
                log.error("%s.fatal%s %s", self.name, self._fields, message)
                return False
            delay = self._failed_attempt(kind)
            log.warning("%s.connect_failed%s attempt=%d retry_in_s=%.2f reason=%r",
                        self.name, self._fields, self.attempt, delay, message)
            return False
        now = time.monotonic()
        handle = self.hooks.opened(now, server_time(ws))
        link = Link(handle, ws, now)
        self.links[handle] = link
        self.connects += 1
        loop = asyncio.get_running_loop()
        link.tasks = [
            loop.create_task(self._write(link), name=f"{self.name}-w{handle}"),
            loop.create_task(self._read(link), name=f"{self.name}-r{handle}"),
        ]
        self.hooks.attached(handle)
        return True

    # -- sending -------------------------------------------------------------------------------

    def queue(self, handle: int, event: dict[str, Any], *, stamp: float | None = None,
              urgent: bool = True) -> None:
        """Queue a client event on a link. ``urgent``: wake the writer task (else the audio
        path writes it with :meth:`send_now`). ``stamp``: ``perf_counter`` when the audio was
        received, for the write latency figure. A link whose queue is full is closed."""
        link = self.links.get(handle)
        if link is None or link.closing:
            return
        if len(link.pending) >= MAX_PENDING_EVENTS:
            log.warning("%s.link_stalled%s handle=%d pending=%d", self.name, self._fields, handle,
                        len(link.pending))
            self.stalled += 1
            self.close(handle, 1011)
            return
        link.pending.append((event, stamp))
        if urgent:
            link.wake.set()

    async def send_now(self) -> None:
        """The audio path writes what it queued itself (saves a task switch per block)."""
        for link in list(self.links.values()):
            if link.pending and not link.lock.locked():
                with contextlib.suppress(ConnectionClosed):
                    await self._drain(link)

    async def _drain(self, link: Link) -> None:
        """Write the link's queued events in order (one writer at a time)."""
        async with link.lock:
            while link.pending:
                event, stamp = link.pending.popleft()
                await link.ws.send(json.dumps(event))
                if stamp is not None:
                    self.write_latency_s.append(time.perf_counter() - stamp)

    async def _write(self, link: Link) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await link.wake.wait()
                link.wake.clear()
                await self._drain(link)

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, link: Link) -> None:
        try:
            async for message in link.ws:
                self.last_receive_t = time.perf_counter()
                self.hooks.received(link.handle, message, time.monotonic())
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - any failure of the link ends that link only
            log.warning("%s.read_failed%s handle=%d error=%s", self.name, self._fields, link.handle,
                        type(exc).__name__)
        finally:
            now = time.monotonic()
            self.links.pop(link.handle, None)
            for task in link.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            if not self.stopping:
                log.info("%s.disconnected%s handle=%d code=%s reason=%r", self.name, self._fields, link.handle,
                         link.ws.close_code, (link.ws.close_reason or "")[:100])
                if link.closing or now - link.opened >= STABLE_LINK_S:
                    if not link.closing:
                        self.attempt = 0
                else:
                    # Died young without our asking: wait before the next one.
                    self._failed_attempt("retry")
            self.hooks.lost(link.handle, now)
            self.wake.set()

    # -- closing -------------------------------------------------------------------------------

    def close(self, handle: int, code: int) -> None:
        """Close a link on purpose, in the background (queued events first)."""
        link = self.links.get(handle)
        if link is not None and not link.closing:
            spawn(self.close_link(link, code), f"{self.name}-close{handle}")

    async def close_link(self, link: Link, code: int) -> None:
        if link.closing:
            return
        link.closing = True
        self.hooks.closing(link.handle)
        with contextlib.suppress(Exception):
            deadline = time.monotonic() + CLOSE_DRAIN_S
            while link.pending and time.monotonic() < deadline:
                link.wake.set()
                await asyncio.sleep(0.01)
            await asyncio.wait_for(link.ws.close(code), CLOSE_TIMEOUT_S + 1)

    async def close_all(self) -> None:
        """Close every link (bounded) and await its tasks. Idempotent."""
        self.stopping = True
        self.wake.set()
        links = list(self.links.values())
        await asyncio.gather(*(self.close_link(lk, 1000) for lk in links), return_exceptions=True)
        for lk in links:
            for task in lk.tasks:
                task.cancel()
            await asyncio.gather(*lk.tasks, return_exceptions=True)

