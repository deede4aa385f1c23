"""The I/O of the outputs: an obs-websocket v5 client, HTTP requests, and the task per output.

:class:`Output` follows the caption feed (its own bounded subscription, so it never slows the
pipeline), hands every message to its planner (:mod:`captiond.outputs.core`) and performs what
the planner returns: a SendStreamCaption request on a kept-open obs-websocket connection, or an
HTTP request (stdlib ``urllib`` in a worker thread, with a timeout). Failures are retried with
backoff and jitter; the first failure and the recovery are logged once each, never with the
URL or a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from captiond.feed import Feed, Subscription
from captiond.outputs.core import OBS_NOT_RUNNING, Planner, Send, ZoomPlanner, obs_auth, planner_for
from captiond.outputs.spec import OutputSpec, Secrets, safe_url

log = logging.getLogger("captiond.outputs")

#: How long close() lets an output deliver what is pending before it gives up.
CLOSE_FLUSH_S = 3.0
#: Largest response body read (YouTube answers a timestamp, Zoom a number).
MAX_ANSWER_BYTES = 64 * 1024
#: Largest obs-websocket message accepted.
OBS_MAX_MESSAGE_BYTES = 1 << 20
#: obs-websocket close code for a wrong password.
OBS_AUTH_FAILED = 4009
#: obs-websocket's JSON subprotocol.
OBS_SUBPROTOCOL = "obswebsocket.json"


class SendError(Exception):
    """A send failed; the message is safe to log (no URL, no secret)."""


class NotApplicable(Exception):
    """The far end answered that the send cannot apply now (OBS: no stream is live)."""


def _safe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, urllib.error.URLError):
        return _safe_error(exc.reason) if isinstance(exc.reason, BaseException) else "unreachable"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return (exc.strerror or type(exc).__name__).lower()
    return type(exc).__name__


def http_request(url: str, send: Send, timeout_s: float) -> bytes:
    """Perform ``send`` as an HTTP request (blocking; run it in a thread). Returns the body."""
    parts = urlsplit(url)
    query = parts.query
    if send.query:
        query = (query + "&" if query else "") + urlencode(send.query)
    target = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + send.path
                         if send.path else parts.path, query, ""))
    method = "GET" if send.op == "get" else "POST"
    request = urllib.request.Request(target, data=send.body if method == "POST" else None,
                                     method=method)
    if method == "POST":
        request.add_header("Content-Type", send.content_type or "text/plain")
    request.add_header("User-Agent", "captiond")
    for name, value in send.headers:
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return bytes(response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise SendError(f"HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise SendError(_safe_error(exc)) from None


class ObsConnection:
    """One obs-websocket v5 session: Hello -> Identify (with the auth string when OBS asks for
    it) -> Identified, then Request / RequestResponse pairs. Events are not subscribed to."""

    def __init__(self, url: str, password: str, timeout_s: float) -> None:
        self.url = url
        self._password = password
        self.timeout_s = timeout_s
        self._ws: Any = None
        self._ids = itertools.count(1)

    async def _connect(self) -> None:
        import websockets

        try:
            ws = await asyncio.wait_for(websockets.connect(
                self.url, subprotocols=[OBS_SUBPROTOCOL],  # type: ignore[list-item]
                max_size=OBS_MAX_MESSAGE_BYTES, open_timeout=self.timeout_s,
                proxy=None,
            ), self.timeout_s)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise SendError(f"cannot connect to obs-websocket: {_safe_error(exc)}") from None
        try:
            hello = await self._recv(ws, 0)
            identify: dict[str, Any] = {"rpcVersion": 1, "eventSubscriptions": 0}
            auth = hello.get("authentication")
            if isinstance(auth, dict):
                if not self._password:
                    raise SendError("OBS asks for a password (set password_file or password_env)")
                identify["authentication"] = obs_auth(
                    self._password, str(auth.get("salt", "")), str(auth.get("challenge", "")))
            await ws.send(json.dumps({"op": 1, "d": identify}))
            await self._recv(ws, 2)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws

    async def _recv(self, ws: Any, op: int) -> dict[str, Any]:
        import websockets

        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), self.timeout_s)
            except websockets.exceptions.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == OBS_AUTH_FAILED:
                    raise SendError("OBS refused the password (check password_file)") from None
                raise SendError(f"obs-websocket closed the connection (code {code})") from None
            except TimeoutError:
                raise SendError("obs-websocket did not answer (timed out)") from None
            try:
                message = json.loads(raw)
            except ValueError:
                raise SendError("obs-websocket sent something that is not JSON") from None
            if isinstance(message, dict) and message.get("op") == op \
                    and isinstance(message.get("d"), dict):
                return message["d"]
            # Events (op 5) and other messages are not what we wait for: skip them.

    async def caption(self, text: str) -> None:
        """SendStreamCaption; raises :class:`NotApplicable` when OBS is not streaming."""
        if self._ws is None:
            await self._connect()
        request_id = str(next(self._ids))
        try:
            await self._ws.send(json.dumps({"op": 6, "d": {
                "requestType": "SendStreamCaption", "requestId": request_id,
                "requestData": {"captionText": text}}}))
            while True:
                answer = await self._recv(self._ws, 7)
                if answer.get("requestId") == request_id:
                    break
        except SendError:
            await self.close()
            raise
        except OSError as exc:
            await self.close()
            raise SendError(f"obs-websocket: {_safe_error(exc)}") from None
        except Exception as exc:  # websockets' ConnectionClosed on send
            await self.close()
            raise SendError(f"obs-websocket connection lost ({type(exc).__name__})") from None
        status = answer.get("requestStatus") or {}
        if status.get("result") is True:
            return
        code = status.get("code")
        if code == OBS_NOT_RUNNING:
            raise NotApplicable("OBS is not streaming")
        raise SendError(f"OBS refused the caption: code {code}")

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self.timeout_s)


class Output:
    """One configured output: follows the feed, sends, retries, reports its status."""

    def __init__(self, spec: OutputSpec, secrets: Secrets, feed: Feed,
                 planner: Planner | None = None) -> None:
        self.spec = spec
        self._secrets = secrets
        self.feed = feed
        self.planner = planner or planner_for(spec, secrets.password)
        self._sub: Subscription | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._obs = ObsConnection(secrets.url, secrets.password, spec.timeout_s) \
            if spec.kind == "obs" else None
        self.state = "starting"
        self.last_error: str | None = None
        self.failed_since: float | None = None
        self.resubscribed = 0
        self._rand = random.Random()

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        delays = sorted(self.planner.delays)
        p50 = delays[len(delays) // 2] if delays else None
        return {
            # The resolved URL's scheme and host: never a token, a file path or a variable name.
            "name": self.spec.name, "kind": self.spec.kind, "target": safe_url(self._secrets.url),
            "track": self.spec.track, "state": self.state, "error": self.last_error,
            "failures": self.planner.failures,
            "delay_p50_s": None if p50 is None else round(p50, 3),
            **self.planner.status(),
        }

    # -- the task ----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Start taking feed messages (before the session starts, so no line is missed)."""
        if self._sub is None:
            self._sub = self.feed.subscribe(f"output-{self.spec.name}")

    async def run(self) -> None:
        self.subscribe()
        log.info("output.start name=%s kind=%s target=%s track=%s", self.spec.name,
                 self.spec.kind, safe_url(self._secrets.url), self.spec.track)
        reader = asyncio.create_task(self._read(), name=f"output-{self.spec.name}-read")
        try:
            await self._send_loop()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if self._sub is not None:
                self._sub.close()
            if self._obs is not None:
                await self._obs.close()
            self.state = "stopped"
            log.info("output.stop name=%s sent_lines=%d pending=%d dropped=%d", self.spec.name,
                     self.planner.sent_lines, len(self.planner.pending), self.planner.dropped)

    async def _read(self) -> None:
        """Feed messages into the planner as they come (never waits on the far end)."""
        while True:
            assert self._sub is not None
            try:
                message = await self._sub.get()
            except EOFError:
                if self._sub.overflowed and not self._closing:
                    self.resubscribed += 1
                    log.warning("output.resubscribe name=%s reason=overflow", self.spec.name)
                    self._sub = self.feed.subscribe(f"output-{self.spec.name}")
                    continue
                self._closing = True
                self._wake.set()
                return
            self._offer(message)
            while (more := self._sub.get_nowait()) is not None:
                self._offer(more)
            self._wake.set()

    def _offer(self, message: dict[str, Any]) -> None:
        self.planner.offer(message, time.monotonic(), time.time())

    async def _send_loop(self) -> None:
        if self.state == "starting":
            self.state = "idle"
        deadline: float | None = None
        while True:
            now = time.monotonic()
            if self._closing:
                if deadline is None:
                    deadline = now + CLOSE_FLUSH_S
                if not self.planner.pending or now >= deadline:
                    return
            wait = self.planner.due(now)
            if wait is None or wait > 0:
                self._wake.clear()
                timeout = wait
                if self._closing:
                    timeout = min(wait if wait is not None else CLOSE_FLUSH_S,
                                  max(0.0, (deadline or now) - now))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                continue
            send = self.planner.next_send(now, time.time())
            if send is None:
                continue
            await self._perform(send)

    async def _perform(self, send: Send) -> None:
        sent_wall = time.time()
        try:
            answer = b""
            if self._obs is not None:
                await self._obs.caption(send.text)
            else:
                answer = await asyncio.to_thread(
                    http_request, self._secrets.url, send, self.spec.timeout_s)
        except NotApplicable as exc:
            self.planner.skipped(send, time.monotonic())
            self._recovered()
            if self.state != "waiting":
                log.info("output.waiting name=%s reason=%r", self.spec.name, str(exc))
            self.state = "waiting"
            self.last_error = str(exc)
            return
        except SendError as exc:
            if send.purpose == "seq" and isinstance(self.planner, ZoomPlanner) \
                    and str(exc) == "HTTP 404":
                # No sequence to continue (the query is not offered): start from 1.
                self.planner.seq_unknown()
                return
            delay = self.planner.failed(send, time.monotonic(), self._rand.random())
            if self.state != "failing":
                log.warning("output.failed name=%s kind=%s error=%r retry_in_s=%.1f",
                            self.spec.name, self.spec.kind, str(exc), delay)
                self.failed_since = time.monotonic()
            self.state = "failing"
            self.last_error = str(exc)
            return
        self.planner.sent(send, time.monotonic(), time.time(), answer, sent_wall)
        self._recovered()
        self.state = "ok"
        self.last_error = None

    def _recovered(self) -> None:
        if self.state == "failing" and self.failed_since is not None:
            log.info("output.recovered name=%s kind=%s down_s=%.1f pending=%d", self.spec.name,
                     self.spec.kind, time.monotonic() - self.failed_since,
                     len(self.planner.pending))
            self.failed_since = None

    def close(self) -> None:
        """Stop following the feed; run() delivers what is pending (bounded) and returns."""
        self._closing = True
        self._wake.set()
        if self._sub is not None:
            self._sub.close()
