"""A protocol-faithful fake of OpenAI's realtime transcription WebSocket, on 127.0.0.1:0.

It speaks OpenAI's GA realtime transcription protocol (the events of ``openai.types.realtime``) on a real
socket (websockets): checks ``Authorization: Bearer <key>`` at the upgrade, answers
``session.created`` then ``session.updated``, buffers appended PCM16 24 kHz audio, answers each
commit with ``input_audio_buffer.committed`` (~150 ms later, in commit order),
``conversation.item.added``, transcription deltas, ``...completed`` 0.5-0.8 s after the commit
and ``conversation.item.done``. Every client event it receives and every event it emits is
validated against the ``openai.types.realtime`` pydantic models, strictly (no unknown fields);
problems are collected in :attr:`FakeRealtimeServer.violations` for tests to assert empty.

Faults (:class:`Faults`, changeable while it runs) make it: reorder completions, send deltas
before ``committed``, fail items, never complete items, drop the TCP connection (the client sees
1006), close with a code, stall (stop reading: keepalive pings go unanswered), refuse the
handshake with an HTTP status (401, 403, 429), cap sessions at a few seconds (``session_expired``
then close 1001), use the older event names, and mix in junk (malformed JSON, unknown types).

Transcripts come from a ``transcriber(pcm16_24k: bytes) -> str``: :func:`whisper_transcriber`
runs faster-whisper tiny.en so end-to-end tests get real text; :func:`length_transcriber`
answers ``"<ms> ms"`` (cheap, and lets a test check each item got its own audio).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import itertools
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

import numpy as np
import pydantic
from openai.types.realtime import RealtimeTranscriptionSessionCreateResponse
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

RATE = 24_000
MIN_COMMIT_SAMPLES = RATE // 10  # 100 ms
PATH = "/v1/realtime"

Transcriber = Callable[[bytes], str]

_CLIENT = pydantic.TypeAdapter(RealtimeClientEvent)
_SERVER = pydantic.TypeAdapter(RealtimeServerEvent)


def length_transcriber(pcm: bytes) -> str:
    """The audio's length: ``"1234 ms"``."""
    return f"{len(pcm) // 2 * 1000 // RATE} ms"


_WHISPER: Any = None


def whisper_transcriber(pcm: bytes) -> str:
    """The local engine's Whisper backend (tiny.en, final-quality decode) on 24 kHz PCM16."""
    global _WHISPER
    import soxr

    from captiond.engines.whisper import WhisperBackend

    if _WHISPER is None:
        _WHISPER = WhisperBackend(None, threads=1)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return _WHISPER.decode(soxr.resample(audio, RATE, 16_000)).text.strip()


# -- validation against the openai models -----------------------------------------------------


def _extras(obj: Any, path: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """Fields the model does not declare (openai models allow extras; we do not)."""
    found: list[str] = []
    if isinstance(obj, pydantic.BaseModel):
        extra = getattr(obj, "__pydantic_extra__", None) or {}
        found += [f"{path}.{k}" for k in extra if k not in skip]
        for name in type(obj).model_fields:
            if name in skip:
                continue
            found += _extras(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += _extras(v, f"{path}[{i}]")
    return found


def validate_strictly(adapter: pydantic.TypeAdapter[Any], event: dict[str, Any], side: str) -> list[str]:
    """Problems with an event by one of the openai models, unknown fields included (empty: valid)."""
    try:
        model = adapter.validate_python(event)
    except pydantic.ValidationError as exc:
        return [f"{side} {event.get('type')}: {exc.errors()[:3]}"]
    return [f"{side} {event.get('type')}: unknown field {p}" for p in _extras(model, "")]


def validate_client_event(event: dict[str, Any]) -> list[str]:
    """Problems with a client event by the openai models (empty: valid)."""
    return validate_strictly(_CLIENT, event, "client")


def validate_server_event(event: dict[str, Any]) -> list[str]:
    """Problems with a server event by the openai models (empty: valid)."""
    kind = event.get("type")
    problems: list[str] = []
    if kind in ("transcription_session.created", "transcription_session.updated"):
        # The older names have no model of their own: same shape as the GA events.
        event = {**event, "type": kind.replace("transcription_session", "session")}
        kind = event["type"]
    if kind == "conversation.item.created":
        pass  # still in the models
    try:
        model = _SERVER.validate_python(event)
    except pydantic.ValidationError as exc:
        return [f"server {kind}: {exc.errors()[:3]}"]
    skip = frozenset({"session"}) if kind in ("session.created", "session.updated") else frozenset()
    problems += [f"server {kind}: unknown field {p}" for p in _extras(model, "", skip)]
    if skip:
        try:
            session = RealtimeTranscriptionSessionCreateResponse.model_validate(event["session"])
            problems += [f"server {kind}: unknown field session{p}" for p in _extras(session, "")]
        except pydantic.ValidationError as exc:
            problems.append(f"server {kind} session: {exc.errors()[:3]}")
    return problems


# -- configuration and records ------------------------------------------------------------------


@dataclass
class Faults:
    """What the fake does wrong. Fields may be changed while it runs."""

    #: Random extra delay (s) before each completion, so completions arrive out of order.
    reorder_s: float = 0.0
    #: Send the transcript deltas before ``committed``.
    deltas_before_commit: bool = False
    #: Global item numbers (1-based, across sessions) that get ``...failed``.
    fail_items: set[int] = field(default_factory=set)
    #: Global item numbers that never get a completion.
    never_complete: set[int] = field(default_factory=set)
    #: Abort the TCP connection (client sees 1006) this long after each handshake.
    drop_after_s: float | None = None
    #: Close with ``close_code`` this long after each handshake.
    close_after_s: float | None = None
    close_code: int = 1011
    #: Stop reading and sending (pings unanswered) this long after each handshake.
    stall_after_s: float | None = None
    #: Refuse the handshake with this HTTP status (401, 403, 429, 503) while set.
    refuse_status: int | None = None
    #: Session cap: ``session_expired`` + close 1001 this long after the handshake.
    session_cap_s: float = 3600.0
    #: Old event names: ``transcription_session.created``, ``conversation.item.created``.
    legacy_names: bool = False
    #: Send a malformed message and an unknown event type after each session.created.
    junk: bool = False
    #: Abort every open connection every this many seconds (server-wide, whatever their age).
    drop_every_s: float | None = None
    #: Refuse commits with an error of this code, by global commit number (1-based).
    commit_errors: dict[int, str] = field(default_factory=dict)
    #: Seconds from commit to ``committed``; completion window after the commit.
    committed_delay_s: float = 0.15
    completion_delay_s: tuple[float, float] = (0.5, 0.8)
    #: The server's clock minus the client's (s): ``expires_at`` and the HTTP ``Date`` are read
    #: on it. -7200 is a client clock two hours fast.
    clock_skew_s: float = 0.0
    #: Send the HTTP ``Date`` header with the upgrade (False: the client has only its own clock).
    date_header: bool = True


@dataclass
class FakeItem:
    number: int  # global, 1-based
    item_id: str
    previous_item_id: str | None
    samples: int
    transcript: str | None = None
    outcome: str = "pending"  # pending | completed | failed | lost


@dataclass
class FakeSession:
    session_id: str
    started: float
    audio: bytearray = field(default_factory=bytearray)  # the uncommitted buffer
    appended_samples: int = 0
    items: list[FakeItem] = field(default_factory=list)
    client_events: int = 0
    updated: bool = False
    close_code: int | None = None


class SkewedClock:
    """The fakes' clock: the client's wall clock plus ``faults.clock_skew_s``, sent as the
    upgrade's HTTP ``Date`` (or no ``Date`` at all, with ``faults.date_header`` off)."""

    faults: Any

    def _process_response(self, connection: ServerConnection, request: Request,
                          response: Response) -> Response:
        """The upgrade's HTTP ``Date`` on the fake's (possibly skewed) clock, or none."""
        del response.headers["Date"]
        if self.faults.date_header:
            response.headers["Date"] = email.utils.formatdate(self.clock(), usegmt=True)
        return response

    def clock(self) -> float:
        """The fake server's wall clock (the client's plus ``faults.clock_skew_s``)."""
        return time.time() + self.faults.clock_skew_s


class FakeRealtimeServer(SkewedClock):
    """``async with FakeRealtimeServer(api_key) as server: server.url ...``"""

    def __init__(
        self,
        api_key: str,
        *,
        transcriber: Transcriber = length_transcriber,
        faults: Faults | None = None,
        seed: int = 1,
    ) -> None:
        self.api_key = api_key
        self.transcriber = transcriber
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.sessions: list[FakeSession] = []
        self.violations: list[str] = []
        self.handshakes: list[int] = []  # HTTP status of each upgrade attempt
        self.handshake_times: list[float] = []  # loop time of each upgrade attempt
        self._commits = itertools.count(1)
        self._open: set[ServerConnection] = set()
        self.request_headers: list[dict[str, str]] = []
        self.emitted: list[dict[str, Any]] = []
        self._items = itertools.count(1)
        self._server: Server | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-asr")
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request,
            process_response=self._process_response,
            max_size=16 * 1024 * 1024, close_timeout=1.0,
        )
        if self.faults.drop_every_s:
            self._spawn(self._drop_every(self.faults.drop_every_s))
        return self

    async def _drop_every(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for ws in list(self._open):
                ws.transport.abort()

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}?intent=transcription"

    def drop_all(self) -> None:
        """Abort every open connection now (the client sees 1006)."""
        for ws in list(self._open):
            ws.transport.abort()

    def items(self) -> list[FakeItem]:
        return [item for s in self.sessions for item in s.items]

    # -- handshake -----------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.request_headers.append(headers)
        self.handshake_times.append(time.monotonic())
        if not request.path.startswith(PATH):
            self.handshakes.append(404)
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if "openai-beta" in headers:
            self.violations.append("client sent OpenAI-Beta (the beta interface is gone)")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            self.handshakes.append(401)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided\n")
        status = self.faults.refuse_status
        if status is not None:
            self.handshakes.append(status)
            return connection.respond(HTTPStatus(status), f"refused with {status}\n")
        self.handshakes.append(101)
        return None

    # -- one connection --------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        faults = self.faults
        now = self.clock()
        session = FakeSession(f"sess_{len(self.sessions) + 1:04d}", now)
        self.sessions.append(session)
        self._open.add(ws)
        state = {"stalled": False, "last_committed": None, "order": asyncio.Event()}
        state["order"].set()
        created = "transcription_session.created" if faults.legacy_names else "session.created"
        await self._emit(ws, state, {
            "type": created,
            "session": {
                "type": "transcription",
                "id": session.session_id,
                "object": "realtime.transcription_session",
                "expires_at": int(now + faults.session_cap_s),
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}}},
            },
        })
        if faults.junk:
            await self._raw(ws, state, "{not json")
            await self._raw(ws, state, json.dumps({"type": "totally.new_event", "event_id": "x"}))
            await self._raw(ws, state, json.dumps({"event_id": "no type"}))
        timers = [self._spawn(self._cap(ws, state, session, faults.session_cap_s))]
        if faults.drop_after_s is not None:
            timers.append(self._spawn(self._later(faults.drop_after_s, self._drop, ws)))
        if faults.close_after_s is not None:
            timers.append(self._spawn(self._later(
                faults.close_after_s, ws.close, faults.close_code, "fake closes")))
        if faults.stall_after_s is not None:
            timers.append(self._spawn(self._later(faults.stall_after_s, self._stall, ws, state)))
        try:
            async for raw in ws:
                if state["stalled"]:
                    continue
                await self._on_client(ws, state, session, raw)
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(ws)
            session.close_code = ws.close_code
            for t in timers:
                t.cancel()
            for item in session.items:
                if item.outcome == "pending":
                    item.outcome = "lost"

    async def _on_client(self, ws: ServerConnection, state: dict[str, Any],
                         session: FakeSession, raw: str | bytes) -> None:
        session.client_events += 1
        try:
            event = json.loads(raw)
        except ValueError:
            self.violations.append(f"client sent non-JSON: {raw[:60]!r}")
            return
        problems = validate_client_event(event) if isinstance(event, dict) else ["not an object"]
        if problems:
            self.violations.extend(problems)
            await self._error(ws, state, "invalid_request_error", "invalid_event",
                              "; ".join(problems)[:300], event.get("event_id"))
            return
        kind = event["type"]
        event_id = event.get("event_id")
        if kind == "session.update":
            s = event["session"]
            audio_in = (s.get("audio") or {}).get("input") or {}
            transcription = audio_in.get("transcription") or {}
            if s.get("type") != "transcription":
                self.violations.append("session.update without session.type=transcription")
            if transcription.get("model") == "gpt-realtime-whisper":
                if audio_in.get("turn_detection", "absent") is not None:
                    self.violations.append("gpt-realtime-whisper needs turn_detection: null")
                if "prompt" in transcription:
                    self.violations.append("gpt-realtime-whisper does not take a prompt")
            if (audio_in.get("format") or {}).get("rate") != RATE:
                self.violations.append("audio format must be audio/pcm at 24000")
            session.updated = True
            await self._emit(ws, state, {"type": "session.updated", "session": {
                "type": "transcription", "id": session.session_id,
                "object": "realtime.transcription_session",
                "expires_at": int(session.started + self.faults.session_cap_s),
                "audio": {"input": {k: v for k, v in audio_in.items()}},
                **({"include": s["include"]} if s.get("include") else {}),
            }})
        elif kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(event["audio"], validate=True)
            except (binascii.Error, ValueError):
                self.violations.append("append with invalid base64")
                return
            if len(pcm) % 2:
                self.violations.append("append with an odd number of bytes (not PCM16)")
            session.audio += pcm
            session.appended_samples += len(pcm) // 2
        elif kind == "input_audio_buffer.clear":
            session.audio.clear()
            await self._emit(ws, state, {"type": "input_audio_buffer.cleared"})
        elif kind == "input_audio_buffer.commit":
            if len(session.audio) // 2 < MIN_COMMIT_SAMPLES:
                self.violations.append(
                    f"commit of {len(session.audio) // 2} samples (< 100 ms)")
                await self._error(
                    ws, state, "invalid_request_error", "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small. Expected at least "
                    "100ms of audio, but buffer only has "
                    f"{len(session.audio) // 48:.2f}ms of audio.", event_id)
                return
            code = self.faults.commit_errors.get(next(self._commits))
            if code is not None:
                session.audio.clear()
                await self._error(ws, state, "invalid_request_error", code,
                                  "refused by the fake", event_id)
                return
            pcm = bytes(session.audio)
            session.audio.clear()
            number = next(self._items)
            prev = session.items[-1].item_id if session.items else None
            item = FakeItem(number, f"item_{number:04d}", prev, len(pcm) // 2)
            session.items.append(item)
            self._spawn(self._process(ws, state, item, pcm))
        else:
            self.violations.append(f"transcription client sent {kind}")

    async def _process(self, ws: ServerConnection, state: dict[str, Any], item: FakeItem,
                       pcm: bytes) -> None:
        """committed (in commit order), added, deltas, completed/failed, done."""
        faults = self.faults
        t0 = asyncio.get_running_loop().time()
        # Serialise committed events in commit order, whatever each item waits for.
        previous_done: asyncio.Event = state["order"]
        mine = asyncio.Event()
        state["order"] = mine
        text_future = asyncio.get_running_loop().run_in_executor(
            self._executor, self.transcriber, pcm)
        text: str | None = None
        if faults.deltas_before_commit:
            text = await text_future
            await self._deltas(ws, state, item, text)
        await previous_done.wait()
        await asyncio.sleep(max(0.0, t0 + faults.committed_delay_s - _loop_time()))
        await self._emit(ws, state, {"type": "input_audio_buffer.committed",
                                     "item_id": item.item_id,
                                     "previous_item_id": item.previous_item_id})
        mine.set()
        added = "conversation.item.created" if faults.legacy_names else "conversation.item.added"
        await self._emit(ws, state, {"type": added, "previous_item_id": item.previous_item_id,
                                     "item": _user_item(item.item_id, None, "in_progress")})
        if text is None:
            text = await text_future
            await self._deltas(ws, state, item, text)
        lo, hi = faults.completion_delay_s
        due = t0 + self.random.uniform(lo, hi) + self.random.uniform(0, faults.reorder_s)
        await asyncio.sleep(max(0.0, due - _loop_time()))
        if item.number in faults.never_complete:
            return
        if item.number in faults.fail_items:
            item.outcome = "failed"
            await self._emit(ws, state, {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item.item_id, "content_index": 0,
                "error": {"type": "transcription_error", "code": "audio_unintelligible",
                          "message": "The audio could not be transcribed.", "param": None}})
            return
        item.transcript = text
        item.outcome = "completed"
        await self._emit(ws, state, {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item.item_id, "content_index": 0, "transcript": text,
            "usage": {"type": "duration", "seconds": round(item.samples / RATE, 3)}})
        await self._emit(ws, state, {"type": "conversation.item.done",
                                     "previous_item_id": item.previous_item_id,
                                     "item": _user_item(item.item_id, text, "completed")})

    async def _deltas(self, ws: ServerConnection, state: dict[str, Any], item: FakeItem,
                      text: str) -> None:
        words = text.split(" ")
        for i, word in enumerate(words):
            await self._emit(ws, state, {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item.item_id, "content_index": 0,
                "delta": word if i == 0 else " " + word})

    # -- faults --------------------------------------------------------------------------------

    async def _cap(self, ws: ServerConnection, state: dict[str, Any], session: FakeSession,
                   cap_s: float) -> None:
        await asyncio.sleep(cap_s)
        await self._error(ws, state, "invalid_request_error", "session_expired",
                          "Your session hit the maximum duration of 60 minutes.", None)
        await ws.close(1001, "session expired")

    @staticmethod
    async def _later(delay: float, fn: Callable[..., Any], *args: Any) -> None:
        await asyncio.sleep(delay)
        result = fn(*args)
        if asyncio.iscoroutine(result):
            await result

    @staticmethod
    def _drop(ws: ServerConnection) -> None:
        ws.transport.abort()

    @staticmethod
    def _stall(ws: ServerConnection, state: dict[str, Any]) -> None:
        state["stalled"] = True
        ws.transport.pause_reading()  # pings are not read, so never answered

    # -- sending -------------------------------------------------------------------------------

    async def _emit(self, ws: ServerConnection, state: dict[str, Any],
                    event: dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(_EVENT_IDS)}", **event}
        problems = validate_server_event(event)
        if problems:
            self.violations.extend(f"fake emitted invalid event: {p}" for p in problems)
        self.emitted.append(event)
        await self._raw(ws, state, json.dumps(event))

    async def _raw(self, ws: ServerConnection, state: dict[str, Any], text: str) -> None:
        if state["stalled"]:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    async def _error(self, ws: ServerConnection, state: dict[str, Any], type_: str, code: str,
                     message: str, event_id: str | None) -> None:
        await self._emit(ws, state, {"type": "error", "error": {
            "type": type_, "code": code, "message": message, "param": None,
            "event_id": event_id}})

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


_EVENT_IDS = itertools.count(1)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _user_item(item_id: str, transcript: str | None, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "status": status,
            "object": "realtime.item",
            "content": [{"type": "input_audio", "transcript": transcript}]}
