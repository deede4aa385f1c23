"""The OpenAI realtime engine: gpt-realtime-whisper over WebSocket.  [thin I/O shell]

All protocol state lives in :class:`captiond.realtime.protocol.TranscriptionProtocol`; this
module only moves bytes and time: it connects (``websockets``), feeds the protocol what the
socket and the audio bring, and performs what the protocol returns. The commit policy is the
shared one: :class:`~captiond.audio.vad.StreamingVad` + :class:`~captiond.audio.segmenter.Segmenter`
(the local engine's), so both engines cut the same utterances.

Audio path: 24 kHz blocks in -> (16 kHz copy for the VAD) -> speech only goes on the wire, as it
is captured; silence between utterances is never sent (it would be billed and transcribed as
nothing). A pause commits the utterance. A forced cut during long continuous speech commits at
the segmenter's quietest point: for the last :data:`~captiond.audio.segmenter.FORCED_CUT_SEARCH_S`
before the maximum length the audio is held back locally, so the cut can fall there (the
service only starts transcribing at the commit, so holding it back costs no caption latency).

Faults: reconnect with exponential backoff and full jitter; keepalive pings detect a server
that stopped answering; audio is buffered (``openai.buffer_s``) while the link is down and
utterances the dropped session had not answered are sent again; 401/403 is fatal
(:class:`OpenAIAuthError`, naming OPENAI_API_KEY); 429 backs off longer; sessions are rotated
``openai.rotate_before_s`` before ``expires_at``, at a pause.

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
import email.utils
import json
import logging
import os
import random
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from captiond.audio.block import AudioBlock, float_to_pcm16
from captiond.audio.resample import Resampler
from captiond.audio.segmenter import (
    FORCED_CUT_SEARCH_S,
    ONSET_BACKTRACK_S,
    WINDOW,
    Params,
    Segmenter,
    SpeechStarted,
    UtteranceEnded,
)
from captiond.audio.vad import SAMPLE_RATE as VAD_RATE
from captiond.audio.vad import StreamingVad
from captiond.config import Config
from captiond.engines.base import Emit
from captiond.errors import ConfigError, EngineError, EngineFatal
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
from captiond.tasks import spawn

log = logging.getLogger("captiond.engine.openai")

#: Reconnect backoff: first delay, growth, ceiling (full jitter: 50-100 % of the delay).
BACKOFF_BASE_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 30.0
#: Least wait after HTTP 429 or a rate_limit_exceeded error.
RATE_LIMIT_BACKOFF_S = 5.0
#: TCP + TLS + HTTP upgrade must finish within this.
OPEN_TIMEOUT_S = 10.0
#: A connection must answer session.update within this, or it is closed and retried.
READY_TIMEOUT_S = 10.0
#: Keepalive: a ping every interval; no pong within the timeout closes the link (stall).
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 10.0
#: Closing handshake bound.
CLOSE_TIMEOUT_S = 2.0
#: Largest server message accepted.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: How often timeouts, rotation and reconnects are checked.
TICK_S = 0.2
#: At the end of the input: how long to wait for the last completions beyond item_timeout_s.
END_EXTRA_WAIT_S = 5.0
#: Audio kept beyond what the segmenter may reach back for an utterance's start (onset
#: walk-back + pad): the VAD's own lag (one batch) and a margin.
KEEP_MARGIN_S = 0.25
#: Start holding audio back this long before the forced-cut search window opens.
HOLD_MARGIN_S = 0.1
#: Audio handed to the VAD per call (16 kHz samples). Each ONNX call costs ~0.4 ms of CPU
#: at real-time pace (cold caches), so two 32 ms windows per call halve the cost; decisions
#: come at most one block later (the pre-speech pad is taken from the ring, nothing is lost).
VAD_BATCH_SAMPLES = 2 * WINDOW
#: How often the engine logs its state and running cost (``openai.status``).
STATUS_LOG_S = 60.0
#: Latency samples kept for figures.
LATENCY_SAMPLES = 20_000

AUTH_STATUSES = (401, 403)


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

    @classmethod
    def from_config(cls, cfg: Config) -> OpenAIOptions:
        from captiond.pipeline import segmenter_params

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
        )


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


def server_time(ws: ClientConnection) -> float | None:
    """The server's clock (epoch seconds) from the upgrade response's HTTP ``Date``; None when
    there is none. Session lifetimes are read against it, so a skewed client clock cannot make
    a fresh session look expired."""
    response = getattr(ws, "response", None)
    header = response.headers.get("Date") if response is not None else None
    if header:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            return email.utils.parsedate_to_datetime(header).timestamp()
    return None


def connect_failure(exc: BaseException, refused: dict[int, int]) -> tuple[str, str]:
    """:func:`classify_connect_error`, counting a refused upgrade by HTTP status in ``refused``."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        refused[status] = refused.get(status, 0) + 1
    return classify_connect_error(exc)


def classify_connect_error(exc: BaseException) -> tuple[str, str]:
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
        return "fatal", f"openai.url is not a WebSocket URL ({exc}); fix openai.url"
    if isinstance(exc, (OSError, TimeoutError, InvalidHandshake, EOFError)):
        return "retry", f"openai unreachable: {type(exc).__name__}: {exc}"
    return "retry", f"openai connection failed: {type(exc).__name__}: {exc}"


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


class _Ring:
    """Recent 24 kHz PCM16 with stream positions, for the pre-speech pad and held-back audio."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[int, bytes]] = deque()
        self.end = 0

    def append(self, start: int, pcm: bytes) -> None:
        self._chunks.append((start, pcm))
        self.end = start + len(pcm) // BYTES_PER_SAMPLE

    def slice(self, a: int, b: int) -> bytes:
        parts = []
        for start, pcm in self._chunks:
            end = start + len(pcm) // BYTES_PER_SAMPLE
            if end <= a or start >= b:
                continue
            lo, hi = max(a, start) - start, min(b, end) - start
            parts.append(pcm[lo * BYTES_PER_SAMPLE : hi * BYTES_PER_SAMPLE])
        return b"".join(parts)

    def trim_before(self, position: int) -> None:
        while self._chunks:
            start, pcm = self._chunks[0]
            if start + len(pcm) // BYTES_PER_SAMPLE > position:
                return
            self._chunks.popleft()

    def clear(self) -> None:
        self._chunks.clear()


@dataclass
class _Link:
    """One WebSocket. Client events queue in ``pending`` (one ordered queue per link) and are
    written by whoever holds ``lock``: the audio path right after each block (no task hop per
    32 ms block), or the link's writer task when the reader or the manager queued them."""

    handle: int
    ws: ClientConnection
    opened: float
    pending: deque[tuple[dict[str, Any], float | None]] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


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
                model=o.model, language=o.language, delay=o.delay, noise_reduction=o.noise_reduction
            ),
            item_prefix=id_prefix,
            buffer_bytes=int(o.buffer_s * SAMPLE_RATE * BYTES_PER_SAMPLE),
            item_timeout_s=o.item_timeout_s,
            rotate_before_s=o.rotate_before_s,
        )
        self.on_gap = on_gap
        self._rng = rng or random.Random()
        self._emit: Emit = lambda _e: None
        self._links: dict[int, _Link] = {}
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._stopping = False
        self._detached = False
        self._utt_start: int | None = None
        self._sent_to = 0
        self.fatal: EngineFatal | None = None
        self.state = "starting"
        self._down_since: float | None = time.monotonic()
        self._backoff_until = 0.0
        self._attempt = 0
        self._last_error: str | None = None
        # Figures.
        self.audio_s = 0.0
        self.speech_samples = 0
        self.connects = 0
        self.reconnects = 0
        self.rotations = 0
        self.refused: dict[int, int] = {}
        self.append_latency_s: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.last_receive_t = 0.0

    # -- status ------------------------------------------------------------------------------

    def set_gap_sink(self, fn: Callable[[Gap], None]) -> None:
        self.on_gap = fn

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
            "last_error": self._last_error,
        }

    # -- run ---------------------------------------------------------------------------------

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        """Stream until ``audio`` ends; then commit, wait (bounded) for the last completions
        and close. Raises :class:`OpenAIAuthError` when the key is refused."""
        self._emit = emit
        manager = asyncio.create_task(self._manage(), name="openai-connections")
        try:
            await self._feed(audio, manager)
            await self._finish()
        finally:
            self._stopping = True
            self._wake.set()
            manager.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await manager
            await self._close_all()
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
        params = replace(self.options.segmenter, rate=VAD_RATE)
        vad = StreamingVad()
        seg = Segmenter(params)
        to16 = Resampler(VAD_RATE)
        ring = _Ring()
        keep_before = int(
            (ONSET_BACKTRACK_S + params.pad_ms / 1000 + KEEP_MARGIN_S) * SAMPLE_RATE
        )
        hold_after = int(
            max(0.0, params.max_utterance_s - FORCED_CUT_SEARCH_S - HOLD_MARGIN_S) * SAMPLE_RATE
        )
        expected: int | None = None
        vad_next = 0
        vad_in: list[np.ndarray] = []
        vad_pending = 0
        self._sent_to = 0
        self._utt_start = None
        async for block in audio:
            t0 = time.perf_counter()
            if self.fatal is not None and not self._detached:
                raise self.fatal
            if manager.done() and not self._detached:
                manager.result()  # surface a crash of the connection manager
            if block.rate != SAMPLE_RATE:
                raise EngineError(f"openai engine needs {SAMPLE_RATE} Hz audio, got {block.rate}")
            self.audio_s += block.duration_s
            if expected is None or block.start != expected:
                if expected is not None:
                    # A gap in the stream (device lost): close the utterance, start over.
                    if vad_pending:
                        self._decide(seg.push(vad(np.concatenate(vad_in)), vad_next), ring, t0)
                    self._decide(seg.finish(), ring, t0)
                    vad.reset()
                    to16 = Resampler(VAD_RATE)
                vad_in, vad_pending = [], 0
                start16 = block.start * VAD_RATE // SAMPLE_RATE
                seg.reset(start16)
                vad_next = start16
                ring.clear()
                self._sent_to = block.start
            expected = block.end
            ring.append(block.start, float_to_pcm16(block.samples))
            vad_in.append(to16(block).samples)
            vad_pending += len(vad_in[-1])
            if vad_pending >= VAD_BATCH_SAMPLES:
                probs = vad(np.concatenate(vad_in) if len(vad_in) > 1 else vad_in[0])
                vad_in, vad_pending = [], 0
                decisions = seg.push(probs, vad_next)
                vad_next += len(probs) * WINDOW
                self._decide(decisions, ring, t0)
            if self._utt_start is not None:
                if block.end - self._utt_start < hold_after:
                    self._push(ring, block.end, t0)
                ring.trim_before(self._sent_to)  # only audio not yet handed on is needed
            else:
                self._perform(self.protocol.idle(time.monotonic()))
                ring.trim_before(block.end - keep_before)
            await self._send_now()
        t_end = time.perf_counter()
        if vad_pending:  # the last audio, shorter than a VAD batch
            self._decide(seg.push(vad(np.concatenate(vad_in)), vad_next), ring, t_end)
        self._decide(seg.finish(), ring, t_end)
        await self._send_now()

    def _decide(self, decisions: list[Any], ring: _Ring, t0: float) -> None:
        for d in decisions:
            if isinstance(d, SpeechStarted):
                start = max(d.start * SAMPLE_RATE // VAD_RATE, self._sent_to)
                self._utt_start = start
                self._sent_to = start  # audio before it is silence: never sent
            elif isinstance(d, UtteranceEnded):
                if self._utt_start is None:
                    continue
                end = d.end * SAMPLE_RATE // VAD_RATE
                if d.forced or end > self._sent_to:
                    self._push(ring, end, t0)
                self._utt_start = None
                self._perform(self.protocol.commit(time.monotonic(), discard=d.noise))

    def _push(self, ring: _Ring, until: int, t0: float) -> None:
        """Hand the utterance's audio from ``_sent_to`` to ``until`` to the protocol."""
        if until <= self._sent_to:
            return
        pcm = ring.slice(self._sent_to, until)
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
            link = self._links.get(handle)
            if link is not None:
                live = client_event["type"] == "input_audio_buffer.append"
                link.pending.append((client_event, t0 if live else None))
                if t0 is None:
                    link.wake.set()  # not on the audio path: the writer task sends it
        for handle, code in out.close:
            link = self._links.get(handle)
            if link is not None:
                log.info("openai.session_drained handle=%d", handle)
                spawn(self._close_link(link, code), f"openai-close{handle}")
        for gap in out.gaps:
            if self.on_gap is not None:
                self.on_gap(gap)
        if out.backoff_s:
            self._backoff_until = max(
                self._backoff_until, time.monotonic() + self.options.rate_limit_backoff_s
            )
        if not self.protocol.unsettled_count():
            self._settled.set()
        live = self.protocol.live()
        if live and self._down_since is not None:
            self._down_since = None
            self.state = "connected"
            self._attempt = 0
        elif not live and self._down_since is None:
            self._down_since = time.monotonic()
            self.state = "reconnecting"

    # -- connections -----------------------------------------------------------------------------

    async def _manage(self) -> None:
        """Keeps one session ready: connects, reconnects with backoff, rotates before expiry,
        checks timeouts."""
        next_status = time.monotonic() + STATUS_LOG_S
        while not self._stopping:
            now = time.monotonic()
            self._perform(self.protocol.tick(now))
            if now >= next_status:
                next_status = now + STATUS_LOG_S
                st = self.stats()
                log.info(
                    "openai.status state=%s sent_s=%.0f cost_usd=%.4f pending=%d buffered_s=%.1f "
                    "reconnects=%d rotations=%d", st["state"], st["sent_s"], st["cost_usd"],
                    st["pending"], st["buffered_s"], st["reconnects"], st["rotations"],
                )
            for link in list(self._links.values()):
                if self.protocol.is_connecting(link.handle) \
                        and now - link.opened > READY_TIMEOUT_S:
                    log.warning("openai.session_not_ready handle=%d", link.handle)
                    await self._close_link(link, 1000)
            if self._detached:
                return
            if self.fatal is None and now >= self._backoff_until \
                    and self.protocol.wants_connection(now):
                await self._connect()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)

    async def _connect(self) -> None:
        rotating = self.protocol.live()
        try:
            ws = await open_socket(
                self.options.url,
                self._key,
                ping_interval_s=self.options.ping_interval_s,
                ping_timeout_s=self.options.ping_timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified in one place below
            kind, message = connect_failure(exc, self.refused)
            self._last_error = message
            if kind == "fatal":
                log.error("openai.fatal %s", message)
                self.fatal = OpenAIAuthError(message)
                self.state = "failed"
                return
            delay = retry_delay(kind, self._attempt, self._rng, self.options.rate_limit_backoff_s)
            self._attempt += 1
            self._backoff_until = time.monotonic() + delay
            log.warning("openai.connect_failed attempt=%d retry_in_s=%.2f reason=%r",
                        self._attempt, delay, message)
            return
        now = time.monotonic()
        handle, out = self.protocol.connection_opened(now, server_time(ws))
        link = _Link(handle, ws, now)
        self._links[handle] = link
        self.connects += 1
        if rotating:
            self.rotations += 1
        elif self.connects > 1:
            self.reconnects += 1
        log.info("openai.connected handle=%d rotating=%s", handle, rotating)
        link.tasks = [
            asyncio.get_running_loop().create_task(self._write(link), name=f"openai-w{handle}"),
            asyncio.get_running_loop().create_task(self._read(link), name=f"openai-r{handle}"),
        ]
        self._perform(out)

    async def _read(self, link: _Link) -> None:
        code: int | None = None
        try:
            async for message in link.ws:
                self.last_receive_t = time.perf_counter()
                self._perform(self.protocol.receive(link.handle, message, time.monotonic()))
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - any failure of the link ends that link only
            log.warning("openai.read_failed handle=%d error=%s", link.handle, type(exc).__name__)
        finally:
            code = link.ws.close_code
            reason = link.ws.close_reason
            self._links.pop(link.handle, None)
            for task in link.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            if not self._stopping:
                log.info("openai.disconnected handle=%d code=%s reason=%r",
                         link.handle, code, (reason or "")[:100])
            self._perform(self.protocol.connection_lost(link.handle, time.monotonic()))
            self._wake.set()

    async def _write(self, link: _Link) -> None:
        try:
            while True:
                await link.wake.wait()
                link.wake.clear()
                await self._drain(link)
        except ConnectionClosed:
            pass

    async def _drain(self, link: _Link) -> None:
        """Write the link's queued events in order (one writer at a time)."""
        async with link.lock:
            while link.pending:
                event, stamp = link.pending.popleft()
                await link.ws.send(json.dumps(event))
                if stamp is not None:
                    self.append_latency_s.append(time.perf_counter() - stamp)

    async def _send_now(self) -> None:
        """The audio path writes what it queued itself (saves a task switch per block)."""
        for link in list(self._links.values()):
            if link.pending and not link.lock.locked():
                try:
                    await self._drain(link)
                except ConnectionClosed:
                    pass  # the reader sees the close and reports it

    async def _close_link(self, link: _Link, code: int) -> None:
        self.protocol.close_requested(link.handle)
        with contextlib.suppress(Exception):
            # Let queued events (the last commit) go out first.
            for _ in range(50):
                if not link.pending:
                    break
                await asyncio.sleep(0.01)
            await asyncio.wait_for(link.ws.close(code), CLOSE_TIMEOUT_S + 1)

    async def _close_all(self) -> None:
        links = list(self._links.values())
        if links:
            await asyncio.gather(*(self._close_link(link, 1000) for link in links),
                                 return_exceptions=True)
        for link in links:
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)

