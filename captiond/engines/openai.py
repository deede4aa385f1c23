"""The OpenAI realtime engine: gpt-realtime-whisper over WebSocket.  [thin I/O shell]

All protocol state lives in :class:`captiond.realtime.protocol.TranscriptionProtocol`; this
module only moves bytes and time: it connects (``websockets``), feeds the protocol what the
socket and the audio bring, and performs what the protocol returns. The commit policy is the
shared one: the local engine's :class:`~captiond.audio.frontend.FrontEnd` (gaps, VAD,
segmenter, PCM ring), so both engines cut the same utterances.

Audio path: 24 kHz blocks in -> (the front end's 16 kHz copy for the VAD, resampled from the
capture block) -> speech only goes on the wire, as it
is captured; silence between utterances is never sent (it would be billed and transcribed as
nothing). A pause commits the utterance. A forced cut during long continuous speech commits at
the segmenter's quietest point: for the last :data:`~captiond.audio.segmenter.FORCED_CUT_SEARCH_S`
before the maximum length the audio is held back locally, so the cut can fall there (the
service only starts transcribing at the commit, so holding it back costs no caption latency).

Faults: the sockets -- connect, classify failures, backoff with jitter, keepalive, reader and
writer tasks, bounded send queue, close -- are :class:`~captiond.engines.link.LinkDriver`'s (the
translation engine uses the same one). Audio is buffered (``openai.buffer_s``) while no session
is up and utterances a dropped session had not answered are sent again; 401/403 is fatal
(:class:`OpenAIAuthError`, naming OPENAI_API_KEY); 429 backs off longer. When to open a standby
session and when it takes over is the protocol core's decision
(:mod:`captiond.realtime.session`: lifetimes on the monotonic clock, never a storm).

Why websockets directly and not ``AsyncOpenAI().realtime.connect()``: the SDK wraps the same
library but hides what reliability needs -- the HTTP status of a refused upgrade, close codes,
keepalive settings -- and its built-in reconnect silently opens a new service session whose
pending completions are lost, which the protocol here must know about to resend audio. It also
builds the URL from ``base_url + "/realtime"`` (the setting here is the full endpoint), parses
every event into pydantic models on the hot path, and pulls httpx into the daemon. The SDK
stays a dev dependency: its models are the tests' conformance oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captiond.audio.block import AudioBlock, float_to_pcm16
from captiond.audio.frontend import Discontinuity, FrontEnd, PcmRing
from captiond.audio.segmenter import (
    FORCED_CUT_SEARCH_S,
    ONSET_BACKTRACK_S,
    Params,
    SpeechStarted,
    UtteranceEnded,
)
from captiond.config import Config
from captiond.engines.base import Emit
from captiond.engines.link import (
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
    RATE_LIMIT_BACKOFF_S,
    TICK_S,
    LinkDriver,
    LinkHooks,
    classify_connect_error,
    open_socket,
)
from captiond.errors import ConfigError, EngineFatal
from captiond.logs import register_secret
from captiond.realtime.protocol import (
    BYTES_PER_SAMPLE,
    SAMPLE_RATE,
    Gap,
    Output,
    SessionSettings,
    TranscriptionProtocol,
    _Entry,
)

log = logging.getLogger("captiond.engine.openai")

#: At the end of the input: how long to wait for the last completions beyond item_timeout_s.
END_EXTRA_WAIT_S = 5.0
#: Audio kept beyond what the segmenter may reach back for an utterance's start (onset
#: walk-back + pad): the VAD's own lag (one batch) and a margin.
KEEP_MARGIN_S = 0.25
#: Start holding audio back this long before the forced-cut search window opens.
HOLD_MARGIN_S = 0.1
#: How often the engine logs its state and running cost (``openai.status``).
STATUS_LOG_S = 60.0


class OpenAIAuthError(EngineFatal):
    """The service refused the key (HTTP 401/403 at the upgrade)."""


@dataclass(frozen=True)
class OpenAIOptions:
    url: str = "wss://api.openai.com/v1/realtime?intent=transcription"
    model: str = "gpt-realtime-whisper"
    language: str | None = "en"
    delay: str | None = "low"
    noise_reduction: str | None = "near_field"
    buffer_s: float = 300.0
    item_timeout_s: float = 30.0
    rotate_before_s: float = 300.0
    price_per_min: float = 0.017
    ping_interval_s: float = PING_INTERVAL_S
    ping_timeout_s: float = PING_TIMEOUT_S
    rate_limit_backoff_s: float = RATE_LIMIT_BACKOFF_S
    segmenter: Params = field(default_factory=Params)
    #: The transcription prompt: the same glossary the local engine gets.
    prompt: str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> OpenAIOptions:
        from captiond.audio.segmenter import segmenter_params

        nr = cfg["openai.noise_reduction"]
        return cls(
            url=cfg["openai.url"],
            model=cfg["openai.model"],
            language=cfg["engine.language"] or None,
            delay=cfg["openai.delay"],
            noise_reduction=None if nr == "off" else nr,
            buffer_s=cfg["openai.buffer_s"],
            item_timeout_s=cfg["openai.item_timeout_s"],
            rotate_before_s=cfg["openai.rotate_before_s"],
            price_per_min=cfg["openai.price_per_min"],
            segmenter=segmenter_params(cfg),
            prompt=glossary(cfg) or None,
        )


def glossary(cfg: Config) -> str:
    """local.initial_prompt and local.hotwords as one transcription prompt."""
    return " ".join(p for p in (cfg["local.initial_prompt"].strip(), cfg["local.hotwords"].strip()) if p)


def resolve_api_key(cfg: Config, env: Mapping[str, str] | None = None) -> str | None:
    """The API key from ``openai.api_key_file`` or ``OPENAI_API_KEY``; None if neither is set.

    The key is registered with the log redactor at once. Errors name the file, never the key.
    """
    env = os.environ if env is None else env
    path_text = cfg["openai.api_key_file"]
    key: str | None
    if path_text:
        path = Path(path_text).expanduser()
        try:
            mode = path.stat().st_mode
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"openai.api_key_file: cannot read {path}: {exc.strerror} "
                "(point it at a file holding only the key, or unset it and use OPENAI_API_KEY)"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("openai.key_file_readable path=%s fix='chmod 600 %s'", path, path)
        if not key:
            raise ConfigError(f"openai.api_key_file: {path} is empty (put the API key in it)")
    else:
        key = (env.get("OPENAI_API_KEY") or "").strip() or None
    if key:
        register_secret(key)
    return key


async def probe(url: str, api_key: str, timeout_s: float) -> tuple[bool, str]:
    """Can a session be opened now? Connects, waits for ``session.created``, closes."""
    try:
        async with asyncio.timeout(timeout_s):
            async with await open_socket(url, api_key, open_timeout_s=timeout_s) as ws:
                first = json.loads(await ws.recv())
                kind = first.get("type") if isinstance(first, dict) else None
                if kind in ("session.created", "transcription_session.created"):
                    return True, "session created"
                return False, f"unexpected first event {str(kind)[:60]}"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified in one place
        return False, classify_connect_error(exc)[1]


def _reach(params: Params) -> tuple[int, int]:
    """Samples kept before the utterance start (pad, onset walk-back), and how far into an
    utterance audio goes out before it is held back for a forced cut."""
    keep_before = int((ONSET_BACKTRACK_S + params.pad_ms / 1000 + KEEP_MARGIN_S) * SAMPLE_RATE)
    hold_after = int(
        max(0.0, params.max_utterance_s - FORCED_CUT_SEARCH_S - HOLD_MARGIN_S) * SAMPLE_RATE
    )
    return keep_before, hold_after


class OpenAIEngine:
    """Streams speech to the realtime transcription service; emits the shared events."""

    name = "openai"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        api_key: str,
        options: OpenAIOptions | None = None,
        *,
        id_prefix: str = "oa-",
        on_gap: Callable[[Gap], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise EngineFatal("no OpenAI API key (set OPENAI_API_KEY or openai.api_key_file)")
        register_secret(api_key)
        self._key = api_key
        self.options = options or OpenAIOptions()
        o = self.options
        self.protocol = TranscriptionProtocol(
            SessionSettings(
                model=o.model, language=o.language, delay=o.delay, noise_reduction=o.noise_reduction,
                prompt=o.prompt,
            ),
            item_prefix=id_prefix,
            buffer_bytes=int(o.buffer_s * SAMPLE_RATE * BYTES_PER_SAMPLE),
            item_timeout_s=o.item_timeout_s,
            rotate_before_s=o.rotate_before_s,
        )
        self.on_gap = on_gap
        self._emit: Emit = lambda _e: None
        self.driver = LinkDriver(
            "openai", o.url, api_key,
            LinkHooks(opened=self._opened, received=self._received, lost=self._lost,
                      closing=self.protocol.close_requested, attached=self._attached),
            ping_interval_s=o.ping_interval_s, ping_timeout_s=o.ping_timeout_s,
            rate_limit_backoff_s=o.rate_limit_backoff_s, rng=rng,
        )
        self._opening: Output | None = None
        self._settled = asyncio.Event()
        self._detached = False
        self._fatal: EngineFatal | None = None
        self._utt_start: int | None = None
        self._sent_to = 0
        self.frontend = FrontEnd(o.segmenter, SAMPLE_RATE, engine="openai")
        self.state = "starting"
        self._down_since: float | None = time.monotonic()
        # Figures.
        self.audio_s = 0.0
        self.speech_samples = 0
        self.connects = 0
        self.reconnects = 0
        self.rotations = 0

    @property
    def fatal(self) -> EngineFatal | None:
        """Set once the service refused the key (or the URL is unusable): the run ends."""
        if self._fatal is None and self.driver.fatal is not None:
            self._fatal = OpenAIAuthError(self.driver.fatal)
            self.state = "failed"
        return self._fatal

    @property
    def refused(self) -> dict[int, int]:
        """Refused upgrades by HTTP status."""
        return self.driver.refused

    @property
    def append_latency_s(self) -> deque[float]:
        """Audio block received -> its append written to the socket (seconds)."""
        return self.driver.write_latency_s

    @property
    def last_receive_t(self) -> float:
        return self.driver.last_receive_t

    # -- status ------------------------------------------------------------------------------

    def set_gap_sink(self, fn: Callable[[Gap], None]) -> None:
        self.on_gap = fn

    def set_drop_sink(self, fn: Callable[[Any], None]) -> None:
        """The service returns text for every commit; nothing is discarded here."""

    def update_settings(self, params: Params, partial_interval_s: float,
                        word_timestamps: bool) -> None:
        """Live reload: the VAD and segmenter settings apply from the next block (the
        service sends its own partials and no word times: the other two do not apply)."""
        del partial_interval_s, word_timestamps
        self.frontend.params = params

    def unreachable_s(self, now: float | None = None) -> float:
        """How long no session has been ready for audio (0 while one is)."""
        if self._down_since is None:
            return 0.0
        return (now if now is not None else time.monotonic()) - self._down_since

    def cost_usd(self) -> float:
        c = self.protocol.counters
        streamed = (c["samples_sent"] + c["samples_resent"]) / SAMPLE_RATE
        return streamed / 60.0 * self.options.price_per_min

    def stats(self) -> dict[str, Any]:
        c = self.protocol.counters
        return {
            "engine": self.name,
            "state": self.state,
            "audio_s": round(self.audio_s, 1),
            "speech_s": round(self.speech_samples / SAMPLE_RATE, 1),
            "sent_s": round((c["samples_sent"] + c["samples_resent"]) / SAMPLE_RATE, 1),
            "resent_s": round(c["samples_resent"] / SAMPLE_RATE, 1),
            "buffered_s": round(self.protocol.buffered_seconds(), 1),
            "dropped_s": round(c["samples_dropped"] / SAMPLE_RATE, 1),
            "pending": self.protocol.unsettled_count(),
            "unreachable_s": round(self.unreachable_s(), 1),
            "connects": self.connects,
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "completed": c["completed"],
            "failed": c["failed"] + c["timed_out"],
            "server_errors": c["server_errors"],
            "bad_server_events": c["malformed"] + c["unknown_type"] + c["missing_field"],
            "lag_s": round(self.protocol.last_lag_s, 2),
            "cost_usd": round(self.cost_usd(), 4),
            "last_error": self.driver.last_error,
        }

    # -- run ---------------------------------------------------------------------------------

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        """Stream until ``audio`` ends; then commit, wait (bounded) for the last completions
        and close. Raises :class:`OpenAIAuthError` when the key is refused."""
        self._emit = emit
        self._next_status = time.monotonic() + STATUS_LOG_S
        manager = asyncio.create_task(
            self.driver.manage(self._step, self.protocol.wants_connection,
                               self.protocol.is_connecting),
            name="openai-connections")
        try:
            await self._feed(audio, manager)
            await self._finish()
        finally:
            self.driver.stopping = True
            manager.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await manager
            await self.driver.close_all()
            if self.state != "failed":
                self.state = "stopped"
        if self.fatal is not None and not self._detached:
            raise self.fatal

    @property
    def detached(self) -> bool:
        return self._detached

    def detach(self) -> list[_Entry]:
        """Stop using the service (``--engine auto`` falls back): every utterance not settled
        is placed in the chain and returned (with its audio) for the caller to transcribe
        otherwise; nothing is failed. The run then ends as soon as its input does."""
        self._detached = True
        out, entries = self.protocol.abandon(None)
        self._perform(out)
        return entries

    async def _feed(self, audio: AsyncIterator[AudioBlock], manager: asyncio.Task[Any]) -> None:
        fe = self.frontend
        self._sent_to = 0
        self._utt_start = None
        async for block in audio:
            t0 = time.perf_counter()
            if self.fatal is not None and not self._detached:
                raise self.fatal
            if manager.done() and not self._detached:
                manager.result()  # surface a crash of the connection manager
            keep_before, hold_after = _reach(fe.params)
            # The front end closes the open utterance at a gap and starts afresh after it.
            self._decide(fe.push(block), fe.ring, t0)
            self.audio_s += block.duration_s
            if self._utt_start is not None:
                if block.end - self._utt_start < hold_after:
                    self._push(fe.ring, block.end, t0)
                fe.ring.trim_before(self._sent_to)  # only audio not yet handed on is needed
            else:
                self._perform(self.protocol.idle(time.monotonic()))
                fe.ring.trim_before(block.end - keep_before)
            await self.driver.send_now()
        self._decide(fe.finish(), fe.ring, time.perf_counter())
        await self.driver.send_now()

    def _decide(self, decisions: Iterable[Any], ring: PcmRing, t0: float) -> None:
        for d in decisions:
            if isinstance(d, Discontinuity):
                self._sent_to = d.at  # the stream (re)starts: nothing before it is sent
            elif isinstance(d, SpeechStarted):
                start = max(self.frontend.at_rate(d.start), self._sent_to)
                self._utt_start = start
                self._sent_to = start  # audio before it is silence: never sent
            elif isinstance(d, UtteranceEnded):
                if self._utt_start is None:
                    continue
                end = self.frontend.at_rate(d.end)
                if d.forced or end > self._sent_to:
                    self._push(ring, end, t0)
                self._utt_start = None
                self._perform(self.protocol.commit(time.monotonic(), discard=d.noise))

    def _push(self, ring: PcmRing, until: int, t0: float) -> None:
        """Hand the utterance's audio from ``_sent_to`` to ``until`` to the protocol."""
        if until <= self._sent_to:
            return
        pcm = float_to_pcm16(ring.slice(self._sent_to, until))
        if pcm:
            n = len(pcm) // BYTES_PER_SAMPLE
            self.speech_samples += n
            self._perform(self.protocol.audio(pcm, self._sent_to, time.monotonic()), t0)
        self._sent_to = until

    async def _finish(self) -> None:
        """Wait for the last completions (bounded), then give up on what is left."""
        deadline = time.monotonic() + self.options.item_timeout_s + END_EXTRA_WAIT_S
        while self.protocol.unsettled_count() and not self._detached:
            if self.fatal is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), min(remaining, TICK_S))
        if self.protocol.unsettled_count():
            log.warning("openai.abandon pending=%d", self.protocol.unsettled_count())
            out, _ = self.protocol.abandon("openai: no answer before the end of the run")
            self._perform(out)

    # -- performing protocol output --------------------------------------------------------------

    def _perform(self, out: Output, t0: float | None = None) -> None:
        for event in out.events:
            self._emit(event)
        for handle, client_event in out.send:
            live = client_event["type"] == "input_audio_buffer.append"
            # Live audio is written by the audio path itself (send_now); the rest wakes the
            # link's writer task.
            self.driver.queue(handle, client_event, stamp=t0 if live else None,
                              urgent=t0 is None)
        for handle, code in out.close:
            if handle in self.driver.links:
                log.info("openai.session_drained handle=%d", handle)
                self.driver.close(handle, code)
        for gap in out.gaps:
            if self.on_gap is not None:
                self.on_gap(gap)
        if out.backoff_s:
            self.driver.back_off(self.options.rate_limit_backoff_s)
        if not self.protocol.unsettled_count():
            self._settled.set()
        live = self.protocol.live()
        if live and self._down_since is not None:
            self._down_since = None
            self.state = "connected"
        elif not live and self._down_since is None:
            self._down_since = time.monotonic()
            self.state = "reconnecting"

    # -- the connection driver's hooks -------------------------------------------------------------

    def _step(self, now: float) -> bool:
        """One manager tick: timeouts and forced switches (the protocol decides), the status
        log. False ends the manager (the engine was detached)."""
        self._perform(self.protocol.tick(now))
        if now >= self._next_status:
            self._next_status = now + STATUS_LOG_S
            st = self.stats()
            log.info(
                "openai.status state=%s sent_s=%.0f cost_usd=%.4f pending=%d buffered_s=%.1f "
                "reconnects=%d rotations=%d", st["state"], st["sent_s"], st["cost_usd"],
                st["pending"], st["buffered_s"], st["reconnects"], st["rotations"],
            )
        if self.fatal is not None:
            self.state = "failed"
        return not self._detached

    _next_status = 0.0

    def _opened(self, now: float, server_time: float | None) -> int:
        rotating = self.protocol.live()
        handle, self._opening = self.protocol.connection_opened(now, server_time)
        self.connects += 1
        if rotating:
            self.rotations += 1
        elif self.connects > 1:
            self.reconnects += 1
        log.info("openai.connected handle=%d rotating=%s", handle, rotating)
        return handle

    def _attached(self, handle: int) -> None:
        out, self._opening = self._opening, None
        if out is not None:
            self._perform(out)

    def _received(self, handle: int, message: str | bytes, now: float) -> None:
        self._perform(self.protocol.receive(handle, message, now))

    def _lost(self, handle: int, now: float) -> None:
        self._perform(self.protocol.connection_lost(handle, now))
