"""Live translation with gpt-realtime-translate: one session per target language.  [I/O shell]

All protocol state lives in :class:`captiond.realtime.translate.TranslationProtocol`; this module
moves bytes and time. A :class:`TranslationEngine` runs next to the transcription engine on the
same stream (the pipeline hands it the same 24 kHz audio) and emits the shared events on the
track of its target language.

Unlike transcription, translation audio is sent continuously, silence included: the service
works in 200 ms frames and treats resumed audio as contiguous with what came before, so holding
silence back would squash pauses out of its timeline (and ``elapsed_ms`` would drift from the
stream clock).

Faults, as the transcription engine survives them (the same connection driver,
:class:`~captiond.engines.link.LinkDriver`): reconnect with exponential backoff and full
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

from captiond.audio.block import AudioBlock, float_to_pcm16
from captiond.config import Config
from captiond.engines.base import Emit
from captiond.engines.link import PING_INTERVAL_S, PING_TIMEOUT_S, LinkDriver, LinkHooks
from captiond.errors import ConfigError, EngineError
from captiond.events import Gap
from captiond.logs import register_secret
from captiond.realtime.protocol import BYTES_PER_SAMPLE, SAMPLE_RATE
from captiond.realtime.translate import (
    SUPPORTED_TARGETS,
    AudioOut,
    Output,
    SegmentParams,
    TranslateSettings,
    TranslationProtocol,
)

log = logging.getLogger("captiond.engine.translate")

#: After the input ends: how long the sessions get to flush (``session.close`` -> closed).
END_WAIT_S = 10.0
#: Audio kept per session to send again if it drops before translating it.
RESEND_S = 10.0
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
        self._emit: Emit = lambda _e: None
        self.driver = LinkDriver(
            "translate", o.url, api_key,
            LinkHooks(opened=self._opened, received=self._received, lost=self._lost,
                      closing=self.protocol.close_requested),
            url_setting="openai.translate_url", log_fields=f"lang={self.target}",
            ping_interval_s=o.ping_interval_s,
            ping_timeout_s=o.ping_timeout_s, rng=rng,
        )
        self.state = "starting"
        self.audio_s = 0.0
        self.audio_out_s = 0.0

    @property
    def failed(self) -> str | None:
        """Why this translation stopped (a refused key, a bad URL), or None."""
        if self.driver.fatal is None:
            return None
        return f"translation to {self.target} stopped: {self.driver.fatal}"

    @property
    def connects(self) -> int:
        return self.driver.connects

    @property
    def refused(self) -> dict[int, int]:
        return self.driver.refused

    # -- status ------------------------------------------------------------------------------

    def set_gap_sink(self, fn: Any) -> None:
        self.on_gap = fn

    def set_drop_sink(self, fn: Any) -> None:
        """Translation discards nothing of its own."""

    def update_settings(self, params: Any, partial_interval_s: float,
                        word_timestamps: bool) -> None:
        """Nothing to change: translation streams all audio, with no VAD of its own."""

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
        manager = asyncio.get_running_loop().create_task(
            self.driver.manage(self._step, self.protocol.wants_connection,
                               self.protocol.is_connecting),
            name=f"translate-{self.target}-connections")
        try:
            async for block in audio:
                if block.rate != SAMPLE_RATE:
                    raise EngineError(
                        f"translation needs {SAMPLE_RATE} Hz audio, got {block.rate}")
                self.audio_s += block.duration_s
                if manager.done() and not manager.cancelled() and manager.exception():
                    # The connection manager crashed: say so once, stop this language only.
                    exc = manager.exception()
                    log.error("translate.manager_failed lang=%s error=%s: %s", self.target,
                              type(exc).__name__, exc)
                    self.driver.fatal = self.driver.fatal or f"internal error: {exc!r}"[:200]
                if self.failed is not None:
                    self.state = "failed"
                    continue  # keep consuming so the source side never waits on us
                pcm = float_to_pcm16(block.samples)
                self._perform(self.protocol.audio(pcm, block.start, time.monotonic()))
                await self.driver.send_now()
            if self.failed is None:
                await self._finish()
        finally:
            self.driver.stopping = True
            manager.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await manager
            await self.driver.close_all()
            self._perform_events(self.protocol.finish())
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            if self.failed is not None:
                self.state = "failed"
            if self.state != "failed":
                self.state = "stopped"

    async def _finish(self) -> None:
        """End of input: every session gets ``session.close`` (it flushes what it holds and
        answers ``session.closed``); audio still buffered gets a session that is closed as soon
        as it has it. Bounded by :data:`END_WAIT_S`."""
        deadline = time.monotonic() + END_WAIT_S
        self._perform(self.protocol.close_all())
        await self.driver.send_now()
        while (self.driver.links or self.protocol.buffered_s() > 0) and self.failed is None \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await self.driver.send_now()

    # -- performing protocol output ------------------------------------------------------------

    def _perform_events(self, events: list[Any]) -> None:
        for event in events:
            self._emit(event)

    def _perform(self, out: Output) -> None:
        self._perform_events(out.events)
        for handle, event in out.send:
            # Audio is written by the audio path itself (send_now); the rest wakes the writer.
            self.driver.queue(handle, event,
                              urgent=event["type"] != "session.input_audio_buffer.append")
        for handle, code in out.close:
            self.driver.close(handle, code)
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
            self.driver.back_off(out.backoff_s)
        if self.failed is None:
            self.state = "connected" if self.protocol.live() else "reconnecting"

    # -- the connection driver's hooks ---------------------------------------------------------

    def _step(self, now: float) -> bool:
        self._perform(self.protocol.tick(now, time.time()))
        if self.failed is not None and self.state != "failed":
            self.state = "failed"
            log.error("translate.fatal lang=%s %s", self.target, self.driver.fatal)
        return True

    def _opened(self, now: float, server_time: float | None) -> int:
        handle = self.protocol.connection_opened(now, server_time)
        log.info("translate.connected lang=%s handle=%d", self.target, handle)
        return handle

    def _received(self, handle: int, message: str | bytes, now: float) -> None:
        self._perform(self.protocol.receive(handle, message, now, time.time()))

    def _lost(self, handle: int, now: float) -> None:
        self._perform(self.protocol.connection_lost(handle, now))


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
