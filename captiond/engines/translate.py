"""Live translation with gpt-realtime-translate: one session per target language.  [I/O shell]

All protocol state lives in :class:`captiond.realtime.translate.TranslationProtocol`; this module
moves bytes and time. A :class:`TranslationEngine` runs next to the transcription engine on the
same stream (the pipeline hands it the same 24 kHz audio) and emits the shared events on the
track of its target language.

Unlike transcription, translation audio is sent continuously, silence included: the service
works in 200 ms frames and treats resumed audio as contiguous with what came before, so holding
silence back would squash pauses out of its timeline (and ``elapsed_ms`` would drift from the
stream clock).

Faults, as the transcription engine survives them: reconnect with exponential backoff and full
jitter; audio buffered while no session is live (``openai.buffer_s``; beyond it a gap); the audio
a dropped session had not translated yet is sent again; sessions are rotated
``openai.rotate_before_s`` before ``expires_at`` (the old one is closed with ``session.close``, so
it flushes, and its tail is shown before the new session's text). A refused key (401/403) stops
*this* engine only: it logs the error, keeps consuming its audio and emits nothing, so the source
captions go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import threading
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from captiond.audio.block import AudioBlock, float_to_pcm16
from captiond.config import Config
from captiond.engines.base import Emit
from captiond.engines.openai import (
    CLOSE_TIMEOUT_S,
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
    READY_TIMEOUT_S,
    TICK_S,
    connect_failure,
    open_socket,
    retry_delay,
    server_time,
)
from captiond.errors import ConfigError, EngineError
from captiond.logs import register_secret
from captiond.realtime.protocol import BYTES_PER_SAMPLE, SAMPLE_RATE, Gap
from captiond.realtime.translate import (
    SUPPORTED_TARGETS,
    AudioOut,
    Output,
    SegmentParams,
    TranslateSettings,
    TranslationProtocol,
)
from captiond.tasks import spawn

log = logging.getLogger("captiond.engine.translate")

#: After the input ends: how long the sessions get to flush (``session.close`` -> closed).
END_WAIT_S = 10.0
#: Audio kept per session to send again if it drops before translating it.
RESEND_S = 10.0
#: Client events queued on one link at most; beyond it the link is stalled and is closed.
MAX_PENDING_EVENTS = 2_000
#: Translated audio chunks queued for the output device at most (~0.2 s each); beyond: dropped.
PLAY_QUEUE_CHUNKS = 150


def parse_targets(values: list[str]) -> list[str]:
    """The target list, checked: unknown codes are an error naming the supported ones."""
    out: list[str] = []
    for v in values:
        code = v.strip().lower()
        if code not in SUPPORTED_TARGETS:
            raise ConfigError(
                f"translate: {v!r} is not a supported target language; "
                f"use some of {', '.join(SUPPORTED_TARGETS)}"
            )
        if code not in out:
            out.append(code)
    return out


@dataclass(frozen=True)
class TranslateOptions:
    url: str = "wss://api.openai.com/v1/realtime/translations?model=gpt-realtime-translate"
    transcription_model: str | None = "gpt-realtime-whisper"
    noise_reduction: str | None = "near_field"
    buffer_s: float = 300.0
    rotate_before_s: float = 300.0
    price_per_min: float = 0.034
    ping_interval_s: float = PING_INTERVAL_S
    ping_timeout_s: float = PING_TIMEOUT_S
    segment: SegmentParams = SegmentParams()

    @classmethod
    def from_config(cls, cfg: Config) -> TranslateOptions:
        nr = cfg["openai.noise_reduction"]
        return cls(
            url=cfg["openai.translate_url"],
            transcription_model=cfg["openai.model"] or None,
            noise_reduction=None if nr == "off" else nr,
            buffer_s=cfg["openai.buffer_s"],
            rotate_before_s=cfg["openai.rotate_before_s"],
            price_per_min=cfg["translate.price_per_min"],
        )


class AudioSink(Protocol):
    def write(self, chunk: AudioOut) -> None: ...
    def close(self) -> None: ...


class WavSink:
    """Translated speech appended to a 16-bit mono WAV as it arrives."""

    def __init__(self, path: Path, rate: int = SAMPLE_RATE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._wav = wave.open(str(path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(BYTES_PER_SAMPLE)
        self._wav.setframerate(rate)

    def write(self, chunk: AudioOut) -> None:
        self._wav.writeframes(chunk.pcm)

    def close(self) -> None:
        self._wav.close()


class DevicePlayer:
    """Translated speech to an output device (sounddevice), written by a thread so the event
    loop never blocks on the device; a bounded queue drops audio the device cannot keep up
    with."""

    def __init__(self, device: str | int | None, rate: int = SAMPLE_RATE) -> None:
        import sounddevice as sd

        self._q: queue.Queue[bytes | None] = queue.Queue(PLAY_QUEUE_CHUNKS)
        self.dropped = 0
        try:
            self._stream = sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16",
                                              device=device)
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudio raises several kinds
            raise ConfigError(
                f"translate.play: cannot open output device {device!r}: {exc} "
                "(list devices with `python -m sounddevice`, or unset translate.play)"
            ) from None
        self._thread = threading.Thread(target=self._run, name="translate-play", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (pcm := self._q.get()) is not None:
            with contextlib.suppress(Exception):
                self._stream.write(pcm)

    def write(self, chunk: AudioOut) -> None:
        try:
            self._q.put_nowait(chunk.pcm)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(None)
        self._thread.join(timeout=2.0)
        with contextlib.suppress(Exception):
            self._stream.stop()
            self._stream.close()


class TranslationEngine:
    """Streams the stream's audio to one translation session; emits lines on ``track``."""

    name = "openai-translate"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        api_key: str,
        target: str,
        options: TranslateOptions | None = None,
        *,
        id_prefix: str | None = None,
        audio_sinks: list[AudioSink] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("translation needs the OpenAI API key: set OPENAI_API_KEY "
                              "or openai.api_key_file")
        self.target = parse_targets([target])[0]
        self.track = self.target
        register_secret(api_key)
        self._key = api_key
        self.options = options or TranslateOptions()
        o = self.options
        self.protocol = TranslationProtocol(
            TranslateSettings(self.target, o.transcription_model, o.noise_reduction),
            item_prefix=id_prefix or f"tr-{self.target}-",
            buffer_bytes=int(o.buffer_s * SAMPLE_RATE * BYTES_PER_SAMPLE),
            resend_bytes=int(RESEND_S * SAMPLE_RATE * BYTES_PER_SAMPLE),
            rotate_before_s=o.rotate_before_s,
            segment=o.segment,
        )
        self.sinks = list(audio_sinks or [])
        self.on_gap: Any = None
        self._rng = rng or random.Random()
        self._emit: Emit = lambda _e: None
        self._links: dict[int, _Link] = {}
        self._stopping = False
        self._backoff_until = 0.0
        self._attempt = 0
        self.failed: str | None = None
        self.state = "starting"
        self.audio_s = 0.0
        self.connects = 0
        self.refused: dict[int, int] = {}
        self.audio_out_s = 0.0

    # -- status ------------------------------------------------------------------------------

    def set_gap_sink(self, fn: Any) -> None:
        self.on_gap = fn

    def cost_usd(self) -> float:
        sent = self.protocol.counters["samples_sent"] / SAMPLE_RATE
        return sent / 60.0 * self.options.price_per_min

    def stats(self) -> dict[str, Any]:
        c = self.protocol.counters
        return {
            "engine": self.name,
            "track": self.track,
            "state": self.state,
            "sent_s": round(c["samples_sent"] / SAMPLE_RATE, 1),
            "buffered_s": round(self.protocol.buffered_s(), 1),
            "lines": self.protocol.segmenter.lines,
            "sessions": c["sessions"],
            "drops": c["drops"],
            "rotations": c["rotations"],
            "errors": c["errors"],
            "audio_out_s": round(self.audio_out_s, 1),
            "cost_usd": round(self.cost_usd(), 5),
            "last_error": self.failed or self.protocol.last_error,
        }

    # -- run -----------------------------------------------------------------------------------

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        """Translate until the audio ends; never raises for service trouble (see module doc)."""
        self._emit = emit
        manager = asyncio.get_running_loop().create_task(self._manage(), name="translate-mgr")
        try:
            async for block in audio:
                if block.rate != SAMPLE_RATE:
                    raise EngineError(
                        f"translation needs {SAMPLE_RATE} Hz audio, got {block.rate}")
                self.audio_s += block.duration_s
                if self.failed is not None:
                    continue  # keep consuming so the source side never waits on us
                pcm = float_to_pcm16(block.samples)
                self._perform(self.protocol.audio(pcm, block.start, time.monotonic()))
                await self._send_now()
            if self.failed is None:
                await self._finish()
        finally:
            self._stopping = True
            manager.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await manager
            await self._close_all()
            self._perform_events(self.protocol.finish())
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            if self.state != "failed":
                self.state = "stopped"

    async def _finish(self) -> None:
        """End of input: every session gets ``session.close`` (it flushes what it holds and
        answers ``session.closed``); audio still buffered gets a session that is closed as soon
        as it has it. Bounded by :data:`END_WAIT_S`."""
        deadline = time.monotonic() + END_WAIT_S
        self._perform(self.protocol.close_all())
        await self._send_now()
        while (self._links or self.protocol.buffered_s() > 0) and self.failed is None \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await self._send_now()

    # -- performing protocol output ------------------------------------------------------------

    def _perform_events(self, events: list[Any]) -> None:
        for event in events:
            self._emit(event)

    def _perform(self, out: Output) -> None:
        self._perform_events(out.events)
        for handle, event in out.send:
            link = self._links.get(handle)
            if link is None:
                continue
            if len(link.pending) >= MAX_PENDING_EVENTS:
                log.warning("translate.link_stalled lang=%s handle=%d", self.target, handle)
                spawn(self._close_link(link, 1011), f"translate-close{handle}")
                continue
            link.pending.append(event)
            if event["type"] != "session.input_audio_buffer.append":
                link.wake.set()
        for handle, code in out.close:
            link = self._links.get(handle)
            if link is not None:
                spawn(self._close_link(link, code), f"translate-close{handle}")
        for gap in out.gaps:
            log.warning("translate.gap lang=%s start_ms=%d end_ms=%d",
                        self.target, gap.start_ms, gap.end_ms)
            if self.on_gap is not None:
                self.on_gap(Gap(gap.start_ms, gap.end_ms, f"[{self.target}] {gap.reason}"))
        for chunk in out.audio:
            self.audio_out_s += len(chunk.pcm) / BYTES_PER_SAMPLE / chunk.rate
            for sink in self.sinks:
                sink.write(chunk)
        if out.backoff_s:
            self._backoff_until = max(self._backoff_until, time.monotonic() + out.backoff_s)
        if self.failed is None:
            self.state = "connected" if self.protocol.live() else "reconnecting"

    # -- connections ---------------------------------------------------------------------------

    async def _manage(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            self._perform(self.protocol.tick(now, time.time()))
            for link in list(self._links.values()):
                if self.protocol.is_connecting(link.handle) \
                        and now - link.opened > READY_TIMEOUT_S:
                    log.warning("translate.session_not_ready lang=%s handle=%d",
                                self.target, link.handle)
                    await self._close_link(link, 1000)
            if self.failed is None and now >= self._backoff_until \
                    and self.protocol.wants_connection(now):
                await self._connect()
            await asyncio.sleep(TICK_S)

    async def _connect(self) -> None:
        try:
            ws = await open_socket(
                self.options.url,
                self._key,
                ping_interval_s=self.options.ping_interval_s,
                ping_timeout_s=self.options.ping_timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified in one place
            kind, message = connect_failure(exc, self.refused)
            message = message.replace("openai.url", "openai.translate_url")
            if kind == "fatal":
                # Translation only: the source captions go on without it.
                self.failed = f"translation to {self.target} stopped: {message}"
                self.state = "failed"
                log.error("translate.fatal lang=%s %s", self.target, message)
                return
            delay = retry_delay(kind, self._attempt, self._rng)
            self._attempt += 1
            self._backoff_until = time.monotonic() + delay
            log.warning("translate.connect_failed lang=%s attempt=%d retry_in_s=%.2f reason=%r",
                        self.target, self._attempt, delay, message)
            return
        now = time.monotonic()
        handle = self.protocol.connection_opened(now, server_time(ws))
        link = _Link(handle, ws, now)
        self._links[handle] = link
        self.connects += 1
        self._attempt = 0
        log.info("translate.connected lang=%s handle=%d", self.target, handle)
        loop = asyncio.get_running_loop()
        link.tasks = [loop.create_task(self._write(link)), loop.create_task(self._read(link))]

    async def _read(self, link: _Link) -> None:
        try:
            async for message in link.ws:
                self._perform(self.protocol.receive(link.handle, message, time.monotonic(),
                                                    time.time()))
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - a failure of the link ends that link only
            log.warning("translate.read_failed lang=%s error=%s", self.target,
                        type(exc).__name__)
        finally:
            self._links.pop(link.handle, None)
            for task in link.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            if not self._stopping:
                log.info("translate.disconnected lang=%s handle=%d code=%s", self.target,
                         link.handle, link.ws.close_code)
            self._perform(self.protocol.connection_lost(link.handle, time.monotonic()))

    async def _write(self, link: _Link) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await link.wake.wait()
                link.wake.clear()
                await self._drain(link)

    async def _drain(self, link: _Link) -> None:
        async with link.lock:
            while link.pending:
                event = link.pending.popleft()
                await link.ws.send(json.dumps(event))

    async def _send_now(self) -> None:
        for link in list(self._links.values()):
            if link.pending and not link.lock.locked():
                with contextlib.suppress(ConnectionClosed):
                    await self._drain(link)

    async def _close_link(self, link: _Link, code: int) -> None:
        self.protocol.close_requested(link.handle)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.ws.close(code), CLOSE_TIMEOUT_S + 1)

    async def _close_all(self) -> None:
        links = list(self._links.values())
        await asyncio.gather(*(self._close_link(lk, 1000) for lk in links), return_exceptions=True)
        for lk in links:
            for task in lk.tasks:
                task.cancel()
            await asyncio.gather(*lk.tasks, return_exceptions=True)


@dataclass
class _Link:
    handle: int
    ws: ClientConnection
    opened: float

    def __post_init__(self) -> None:
        from collections import deque

        self.pending: deque[dict[str, Any]] = deque()
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []


def build_translators(cfg: Config, *, channel: str = "", api_key: str | None = None,
                      realtime: bool = True) -> list[TranslationEngine]:
    """One engine per ``translate.targets`` language (empty list: translation is off).

    Raises :class:`ConfigError` for an unsupported code (naming the 13 supported ones) or a
    missing API key (naming OPENAI_API_KEY)."""
    targets = parse_targets(list(cfg["translate.targets"]))
    if not targets:
        return []
    if api_key is None:
        from captiond.engines.openai import resolve_api_key

        api_key = resolve_api_key(cfg)
    if not api_key:
        raise ConfigError(
            "--translate needs the OpenAI API key: set OPENAI_API_KEY or openai.api_key_file "
            "(translation runs only on the OpenAI service)"
        )
    options = TranslateOptions.from_config(cfg)
    play = cfg["translate.play"]
    play_lang, _, play_device = play.partition(":")
    if play and play_lang not in targets:
        raise ConfigError(f"translate.play: {play_lang} is not among the translation targets "
                          f"({', '.join(targets)}); add it to --translate")
    audio_dir = cfg["translate.audio_dir"]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = f"{channel}-" if channel else ""
    engines = []
    for lang in targets:
        sinks: list[AudioSink] = []
        if audio_dir:
            name = f"translation-{stamp}-{base}{lang}.wav"
            sinks.append(WavSink(Path(audio_dir).expanduser() / name))
        if play and play_lang == lang and realtime:
            device: str | int | None = play_device or None
            if isinstance(device, str) and device.isdigit():
                device = int(device)
            sinks.append(DevicePlayer(device))
        engines.append(TranslationEngine(api_key, lang, options, id_prefix=f"{base}tr-{lang}-",
                                         audio_sinks=sinks))
    return engines
