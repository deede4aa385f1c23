"""A protocol-faithful fake of gpt-realtime-translate's WebSocket, on 127.0.0.1:0.

It speaks OpenAI's realtime translation protocol on a real socket: checks ``Authorization:
Bearer <key>`` at the upgrade, sends ``session.created`` (type ``translation``), answers
``session.update`` with ``session.updated``, consumes ``session.input_audio_buffer.append`` audio
in 200 ms frames and answers ``session.close`` with the flushed rest and ``session.closed``.
Every client event it receives and every event it emits is validated against the
``openai.types.realtime`` translation models (``RealtimeTranslationClientEvent`` /
``RealtimeTranslationServerEvent``), strictly (no unknown fields); problems are collected in
:attr:`FakeTranslateServer.violations`.

"Translation": a frame is speech when its RMS is above :data:`SPEECH_RMS`; an utterance ends
after :data:`UTTERANCE_END_FRAMES` quiet frames. Each utterance is given the next text of the
``script`` (cycled); its words come out as ``session.output_transcript.delta`` (`` word``, no
id, ``elapsed_ms`` of the frame being processed) :data:`LAG_FRAMES` frames after the speech
started, one every :data:`WORD_EVERY_FRAMES` frames while it lasts and one a frame after it, each
with 200 ms of translated audio (``session.output_audio.delta``). The server knows
``source_language``: when the target is that language it stays silent, and utterances listed in
``Faults.silent_utterances`` get no output either. Utterances are numbered per target
language, so every language's sessions walk the script alike.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

import numpy as np
import pydantic
from openai.types.realtime.realtime_translation_client_event import RealtimeTranslationClientEvent
from openai.types.realtime.realtime_translation_server_event import RealtimeTranslationServerEvent
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fakes.openai_realtime import SkewedClock, validate_strictly

RATE = 24_000
FRAME_MS = 200
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
PATH = "/v1/realtime/translations"
#: Frame RMS (of float samples) above which the fake hears speech.
SPEECH_RMS = 0.02
#: Quiet frames that end an utterance (1.2 s: longer than the pauses inside a FLEURS clip).
UTTERANCE_END_FRAMES = 6
#: Output starts this many frames after speech starts (600 ms), like a simultaneous interpreter.
LAG_FRAMES = 3
#: One word every this many frames while the speaker talks.
WORD_EVERY_FRAMES = 2

_CLIENT = pydantic.TypeAdapter(RealtimeTranslationClientEvent)
_SERVER = pydantic.TypeAdapter(RealtimeTranslationServerEvent)
_EVENT_IDS = itertools.count(1)


def validate_client_event(event: dict[str, Any]) -> list[str]:
    """Problems with a translation client event by the openai models (empty: valid)."""
    return validate_strictly(_CLIENT, event, "client")


def validate_server_event(event: dict[str, Any]) -> list[str]:
    """Problems with a translation server event by the openai models (empty: valid)."""
    return validate_strictly(_SERVER, event, "server")


@dataclass
class Faults:
    refuse_status: int | None = None
    drop_after_s: float | None = None
    session_cap_s: float = 3600.0
    junk: bool = False
    #: Utterance numbers (1-based, per target) that get no output (source already in target).
    silent_utterances: set[int] = field(default_factory=set)
    #: The server's clock minus the client's (s): ``expires_at`` and the HTTP ``Date`` are read
    #: on it. -7200 is a client clock two hours fast.
    clock_skew_s: float = 0.0
    #: Send the HTTP ``Date`` header with the upgrade (False: the client has only its own clock).
    date_header: bool = True


@dataclass
class FakeTranslateSession:
    session_id: str
    target: str | None = None
    transcription: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    elapsed_ms: int = 0
    appended_bytes: int = 0
    updated: bool = False
    closed: bool = False
    # The utterance in progress.
    speech: bool = False
    quiet: int = 0
    frame_in_utt: int = 0
    words: list[str] = field(default_factory=list)
    silent: bool = False
    deltas: list[tuple[int, str]] = field(default_factory=list)  # (elapsed_ms, text) sent


class FakeTranslateServer(SkewedClock):
    """``async with FakeTranslateServer(key, script=[...]) as server: server.url ...``"""

    def __init__(self, api_key: str, *, script: list[str], source_language: str = "de",
                 faults: Faults | None = None) -> None:
        self.api_key = api_key
        self.script = script
        self.source_language = source_language
        self.faults = faults or Faults()
        self.sessions: list[FakeTranslateSession] = []
        self.violations: list[str] = []
        self.handshakes: list[int] = []
        self.emitted: list[dict[str, Any]] = []
        self.utterances = 0
        #: Utterances heard per target language (each language has its own script position).
        self.utterances_by_target: dict[str | None, int] = {}
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._open: set[ServerConnection] = set()

    async def __aenter__(self) -> Self:
        self._server = await serve(self._handler, "127.0.0.1", 0,
                                   process_request=self._process_request,
            process_response=self._process_response,
                                   max_size=16 * 1024 * 1024, close_timeout=1.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._tasks):
            t.cancel()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}{PATH}?model=gpt-realtime-translate"

    def drop_all(self) -> int:
        """Abort every open connection now (the client sees 1006); how many there were."""
        for ws in list(self._open):
            ws.transport.abort()
        return len(self._open)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        if not request.path.startswith(PATH):
            self.handshakes.append(404)
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            self.handshakes.append(401)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided\n")
        if self.faults.refuse_status is not None:
            self.handshakes.append(self.faults.refuse_status)
            return connection.respond(HTTPStatus(self.faults.refuse_status), "refused\n")
        self.handshakes.append(101)
        return None

    # -- one connection --------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        session = FakeTranslateSession(f"sess_t{len(self.sessions) + 1:04d}")
        self.sessions.append(session)
        self._open.add(ws)
        await self._emit(ws, {"type": "session.created", "session": self._session_body(session)})
        if self.faults.junk:
            with contextlib.suppress(ConnectionClosed):
                await ws.send("{not json")
                await ws.send(json.dumps({"type": "session.brand_new", "event_id": "x"}))
        timers = [self._spawn(self._cap(ws, self.faults.session_cap_s))]
        if self.faults.drop_after_s is not None:
            timers.append(self._spawn(self._later(self.faults.drop_after_s,
                                                  lambda: ws.transport.abort())))
        try:
            async for raw in ws:
                await self._on_client(ws, session, raw)
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(ws)
            for t in timers:
                t.cancel()

    def _session_body(self, session: FakeTranslateSession) -> dict[str, Any]:
        audio_in: dict[str, Any] = {"noise_reduction": {"type": "near_field"}}
        if session.transcription:
            audio_in["transcription"] = {"model": "gpt-realtime-whisper"}
        return {
            "id": session.session_id, "type": "translation", "model": "gpt-realtime-translate",
            "expires_at": int(self.clock() + self.faults.session_cap_s),
            "audio": {"input": audio_in, "output": {"language": session.target}},
        }

    async def _on_client(self, ws: ServerConnection, session: FakeTranslateSession,
                         raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            self.violations.append("client sent malformed JSON")
            return
        problems = validate_client_event(event)
        if problems:
            self.violations.extend(problems)
            await self._error(ws, "invalid_request_error", "invalid_event", problems[0])
            return
        kind = event["type"]
        if kind == "session.update":
            audio = event["session"].get("audio") or {}
            session.target = (audio.get("output") or {}).get("language") or session.target
            session.transcription = bool((audio.get("input") or {}).get("transcription"))
            session.updated = True
            await self._emit(ws, {"type": "session.updated",
                                  "session": self._session_body(session)})
        elif kind == "session.input_audio_buffer.append":
            if not session.updated:
                self.violations.append("audio appended before session.update")
            try:
                pcm = base64.b64decode(event["audio"], validate=True)
            except (binascii.Error, ValueError):
                self.violations.append("append with invalid base64")
                return
            if len(pcm) % 2:
                self.violations.append("append with an odd number of bytes (not PCM16)")
            session.buffer += pcm
            session.appended_bytes += len(pcm)
            while len(session.buffer) >= FRAME_BYTES:
                frame = bytes(session.buffer[:FRAME_BYTES])
                del session.buffer[:FRAME_BYTES]
                await self._frame(ws, session, frame)
        elif kind == "session.close":
            if session.buffer:
                await self._frame(ws, session, bytes(session.buffer).ljust(FRAME_BYTES, b"\0"))
                session.buffer.clear()
            while session.words:
                await self._word(ws, session)
            session.closed = True
            await self._emit(ws, {"type": "session.closed"})
            await ws.close(1000, "session closed")

    async def _frame(self, ws: ServerConnection, session: FakeTranslateSession,
                     frame: bytes) -> None:
        """One 200 ms frame of model time."""
        session.elapsed_ms += FRAME_MS
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        loud = float(np.sqrt(np.mean(x * x))) > SPEECH_RMS
        if loud and not session.speech:
            session.speech, session.quiet, session.frame_in_utt = True, 0, 0
            self.utterances += 1
            n = self.utterances_by_target.get(session.target, 0) + 1
            self.utterances_by_target[session.target] = n
            text = self.script[(n - 1) % len(self.script)]
            session.silent = (session.target == self.source_language
                              or n in self.faults.silent_utterances)
            session.words = [] if session.silent else text.split()
        if session.speech:
            session.frame_in_utt += 1
            session.quiet = 0 if loud else session.quiet + 1
            if session.quiet >= UTTERANCE_END_FRAMES:
                session.speech = False
            k = session.frame_in_utt - LAG_FRAMES
            if session.words and k >= 0 and (k % WORD_EVERY_FRAMES == 0 or not session.speech):
                await self._word(ws, session)
        elif session.words:
            await self._word(ws, session)  # the tail of the utterance, one word a frame

    async def _word(self, ws: ServerConnection, session: FakeTranslateSession) -> None:
        word = session.words.pop(0)
        # The first word of a line carries the space too: deltas are concatenated as sent.
        text = " " + word
        session.deltas.append((session.elapsed_ms, text))
        await self._emit(ws, {"type": "session.output_transcript.delta", "delta": text,
                              "elapsed_ms": session.elapsed_ms})
        if session.transcription:
            await self._emit(ws, {"type": "session.input_transcript.delta", "delta": " …",
                                  "elapsed_ms": session.elapsed_ms})
        n = RATE * FRAME_MS // 1000
        tone = (0.2 * np.sin(2 * math.pi * 440 * np.arange(n) / RATE) * 32767).astype("<i2")
        await self._emit(ws, {"type": "session.output_audio.delta",
                              "delta": base64.b64encode(tone.tobytes()).decode(),
                              "sample_rate": RATE, "channels": 1, "format": "pcm16",
                              "elapsed_ms": session.elapsed_ms})

    async def _cap(self, ws: ServerConnection, cap_s: float) -> None:
        await asyncio.sleep(cap_s)
        await self._error(ws, "invalid_request_error", "session_expired",
                          "Your session hit the maximum duration.")
        await ws.close(1001, "session expired")

    @staticmethod
    async def _later(delay: float, fn: Any) -> None:
        await asyncio.sleep(delay)
        fn()

    async def _emit(self, ws: ServerConnection, event: dict[str, Any]) -> None:
        event = {"event_id": f"event_t{next(_EVENT_IDS)}", **event}
        problems = validate_server_event(event)
        if problems:
            self.violations.extend(f"fake emitted invalid event: {p}" for p in problems)
        self.emitted.append(event)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(event))

    async def _error(self, ws: ServerConnection, type_: str, code: str, message: str) -> None:
        await self._emit(ws, {"type": "error", "error": {
            "type": type_, "code": code, "message": message, "param": None, "event_id": None}})

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
