"""gpt-realtime-translate as a pure state machine.  [sans-I/O: no sockets, no clock, no tasks]

Wire protocol (docs/design/openai-session.md; models:
``openai.types.realtime.RealtimeTranslation*``). The client sends ``session.update`` (output
language, source transcription, noise reduction), then ``session.input_audio_buffer.append``
continuously (silence included: the service runs in 200 ms frames and treats resumed audio as
contiguous), and ``session.close`` to end (the server flushes, then ``session.closed``). The
server sends ``session.output_transcript.delta`` / ``session.input_transcript.delta`` /
``session.output_audio.delta``, each with ``elapsed_ms`` (model time, 200 ms steps, nullable,
shared by several deltas). There are NO item ids and NO completion events.

Two pieces:

- :class:`LineSegmenter` turns the translated delta stream into stable lines (sentence
  punctuation, pauses, bounded length, idle time) and emits the shared events
  (:class:`~captiond.events.ItemCommitted` / ``ItemPartial`` / ``ItemCompleted``) with its own
  item ids in one continuous ``previous_item_id`` chain, across service sessions.
- :class:`TranslationProtocol` holds the connections: which session is live, the audio buffered
  while none is (bounded; the overflow is a :class:`Gap`), the audio to send again after a drop,
  rotation before ``expires_at``, and the map from each session's ``elapsed_ms`` to the captiond
  stream clock. Every method returns an :class:`Output` for the shell to perform; bad input
  (malformed JSON, unknown events, wrong types) is counted, never raised.

Time mapping: a service session's model time starts at 0 with the first audio appended to it and
advances with every sample appended. The protocol records, per session, where each contiguous run
of appended audio sits on the stream clock; ``stream_ms = run.stream_ms + (elapsed_ms -
run.elapsed_ms)``. With no gaps that is "the stream offset when the session started +
elapsed_ms". A delta is taken to describe the 200 ms frame that *ends* at its ``elapsed_ms``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from captiond.config import TRANSLATE_TARGETS
from captiond.events import Gap, ItemCommitted, ItemCompleted, ItemPartial, TranscriptEvent
from captiond.realtime.protocol import BYTES_PER_SAMPLE, SAMPLE_RATE
from captiond.realtime.session import ServerClock, SessionClock

#: The service's frame: ``elapsed_ms`` advances in these steps.
FRAME_MS = 200
#: The output languages gpt-realtime-translate supports (protocol §2; one list, in config).
SUPPORTED_TARGETS = TRANSLATE_TARGETS

#: Sentence-ending punctuation (Latin, CJK, Devanagari danda) and closers that may follow it.
_SENTENCE_END = re.compile(r"[.!?…。！？।][\"'”’»)\]」』]*$")
#: Scripts written without spaces between words: a long line is cut anywhere.
_NO_SPACE_LANGS = frozenset({"ja", "zh"})
#: Unknown/unsupported events remembered for diagnosis (bounded).
MAX_PROBLEMS = 50
#: Client event ids are not needed; samples per millisecond at 24 kHz.
_SPM = SAMPLE_RATE // 1000


def supported_target(code: str) -> bool:
    return code in SUPPORTED_TARGETS


# -- the segmenter ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentParams:
    """Where a translated line ends."""

    #: A gap this long in ``elapsed_ms`` between two deltas ends the line (a pause in speech).
    pause_ms: int = 1200
    #: Lines end at sentence punctuation once they hold at least this many characters.
    min_sentence_chars: int = 12
    #: A line never holds more characters than this (two subtitle rows of 42).
    max_chars: int = 84
    #: A line never spans more stream time than this.
    max_line_ms: int = 10_000
    #: No delta for this long (wall clock) finalises the open line: the speaker stopped.
    idle_s: float = 2.5


@dataclass(slots=True)
class _Open:
    item_id: str
    text: str
    start_ms: int
    end_ms: int
    last_elapsed_end: int  # stream ms of the last delta (for the pause rule)
    touched: float  # wall clock of the last delta
    committed_end: int


class LineSegmenter:
    """Pure: translated text fragments with stream times -> stable caption lines.

    ``push(text, stream_ms, now)`` appends one delta (``stream_ms``: the end of the frame the
    delta belongs to, or None when the service gave no ``elapsed_ms``: the last known time is
    used). Deltas are concatenated exactly as sent (no spaces inserted). A line is *open* while
    text can still be appended; it is emitted as ``ItemCommitted`` (times widen as it grows) and
    ``ItemPartial``, then ``ItemCompleted`` once it ends. Item ids are ``{prefix}{n}``; each
    line's ``previous_item_id`` is the line before it, whatever service session it came from.
    """

    def __init__(self, prefix: str, params: SegmentParams | None = None,
                 language: str | None = None) -> None:
        self.prefix = prefix
        self.params = params or SegmentParams()
        self.language = language
        self._n = 0
        self._prev: str | None = None
        self._open: _Open | None = None
        self._last_ms = 0
        self.lines = 0

    @property
    def open_text(self) -> str:
        return self._open.text if self._open else ""

    def push(self, text: str, stream_ms: int | None, now: float) -> list[TranscriptEvent]:
        if not isinstance(text, str) or not text:
            return []
        at = self._last_ms if stream_ms is None else max(0, int(stream_ms))
        self._last_ms = max(self._last_ms, at)
        out: list[TranscriptEvent] = []
        cur = self._open
        if cur is not None:
            pause = at - cur.last_elapsed_end >= self.params.pause_ms
            sentence_done = (
                len(cur.text.strip()) >= self.params.min_sentence_chars
                and _SENTENCE_END.search(cur.text.rstrip()) is not None
                and (text[0].isspace() or self.language in _NO_SPACE_LANGS)
            )
            too_long = at - cur.start_ms >= self.params.max_line_ms and text[0].isspace()
            if pause or sentence_done or too_long:
                out += self._close()
                cur = None
        if cur is None:
            text = text.lstrip()
            if not text:
                return out
            cur = self._start(at, now)
            out.append(ItemCommitted(cur.item_id, self._prev_of(cur), cur.start_ms, cur.end_ms))
        cur.text += text
        cur.touched = now
        cur.last_elapsed_end = max(cur.last_elapsed_end, at)
        cur.end_ms = max(cur.end_ms, at)
        out += self._split_long(at, now)
        cur = self._open
        assert cur is not None
        if cur.end_ms > cur.committed_end:
            cur.committed_end = cur.end_ms
            out.append(ItemCommitted(cur.item_id, self._prev_of(cur), cur.start_ms, cur.end_ms))
        out.append(ItemPartial(cur.item_id, cur.text.strip()))
        return out

    def tick(self, now: float) -> list[TranscriptEvent]:
        """Finalise the open line once no delta came for ``idle_s``."""
        if self._open is not None and now - self._open.touched >= self.params.idle_s:
            return self._close()
        return []

    def pause(self) -> list[TranscriptEvent]:
        """The text flow broke (session dropped or switched): the open line ends here."""
        return self._close()

    # -- internals -----------------------------------------------------------------------------

    def _prev_of(self, cur: _Open) -> str | None:
        # Lines close in order, so the open line's predecessor is the last closed line.
        return self._prev

    def _start(self, at: int, now: float) -> _Open:
        self._n += 1
        start = max(0, at - FRAME_MS)
        self._open = _Open(f"{self.prefix}{self._n}", "", start, at, at, now, at)
        return self._open

    def _close(self) -> list[TranscriptEvent]:
        cur = self._open
        if cur is None:
            return []
        self._open = None
        text = cur.text.strip()
        self._prev = cur.item_id
        self.lines += 1
        return [ItemCompleted(cur.item_id, text, language=self.language)]

    def _split_long(self, at: int, now: float) -> list[TranscriptEvent]:
        out: list[TranscriptEvent] = []
        limit = self.params.max_chars
        while self._open is not None and len(self._open.text.strip()) > limit:
            cur = self._open
            body = cur.text.strip()
            cut = -1 if self.language in _NO_SPACE_LANGS else body.rfind(" ", 0, limit + 1)
            if cut <= 0:
                cut = limit  # one word longer than a line, or no spaces: cut anywhere
            head, rest = body[:cut], body[cut:].lstrip()
            cur.text = head
            out += self._close()
            if rest:
                nxt = self._start(at, now)
                nxt.text = rest
                out.append(ItemCommitted(nxt.item_id, self._prev, nxt.start_ms, nxt.end_ms))
        return out


# -- the protocol ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TranslateSettings:
    target: str
    #: Source transcription model (its deltas mark source pauses); None: none requested.
    transcription_model: str | None = "gpt-realtime-whisper"
    noise_reduction: str | None = "near_field"

    def session_update(self) -> dict[str, Any]:
        audio_in: dict[str, Any] = {}
        if self.transcription_model:
            audio_in["transcription"] = {"model": self.transcription_model}
        if self.noise_reduction:
            audio_in["noise_reduction"] = {"type": self.noise_reduction}
        audio: dict[str, Any] = {"output": {"language": self.target}}
        if audio_in:
            audio["input"] = audio_in
        return {"type": "session.update", "session": {"audio": audio}}


@dataclass(slots=True)
class AudioOut:
    """Translated speech: PCM16 mono at ``rate``, placed at ``stream_ms`` (None: unknown)."""

    pcm: bytes
    rate: int
    stream_ms: int | None


@dataclass(slots=True)
class Output:
    """What the caller must do, in order: emit ``events``, send ``send`` (handle, client event),
    close ``close`` (handle, code), record ``gaps``, play/save ``audio``; ``backoff_s`` > 0
    asks for no new connection for that long (rate limit)."""

    events: list[TranscriptEvent] = field(default_factory=list)
    send: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    close: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    audio: list[AudioOut] = field(default_factory=list)
    backoff_s: float = 0.0


@dataclass(slots=True)
class _Conn:
    handle: int
    state: str = "connecting"  # connecting | ready | live | draining | closed
    expires_at: float | None = None
    session_id: str | None = None
    server_clock: ServerClock | None = None  # the server's time, read when the link opened
    clock: SessionClock | None = None  # the judged lifetime, from session.created
    sent_samples: int = 0  # model time, in samples appended
    # Contiguous runs of appended audio: (elapsed samples at run start, stream sample).
    runs_elapsed: list[int] = field(default_factory=list)
    runs_stream: list[int] = field(default_factory=list)
    next_stream: int | None = None
    # Appended audio not yet covered by output, for sending again after a drop.
    recent: deque[tuple[int, bytes]] = field(default_factory=deque)
    recent_bytes: int = 0
    last_output_stream: int | None = None
    held: list[tuple[str, int | None]] = field(default_factory=list)  # deltas while a switch drains

    def to_stream_ms(self, elapsed_ms: int) -> int | None:
        if not self.runs_elapsed:
            return None
        el = elapsed_ms * _SPM
        # ``elapsed_ms`` ends a frame: a value on a run boundary belongs to the run before it.
        i = bisect.bisect_right(self.runs_elapsed, el - 1) - 1
        i = max(i, 0)
        return (self.runs_stream[i] + el - self.runs_elapsed[i]) // _SPM


class TranslationProtocol:
    """One target language: connections, buffering, rotation, and the line segmenter."""

    def __init__(
        self,
        settings: TranslateSettings,
        *,
        item_prefix: str,
        buffer_bytes: int,
        resend_bytes: int,
        rotate_before_s: float,
        segment: SegmentParams | None = None,
    ) -> None:
        self.settings = settings
        self.segmenter = LineSegmenter(item_prefix, segment, language=settings.target)
        self.buffer_bytes = buffer_bytes
        self.resend_bytes = resend_bytes
        self.rotate_before_s = rotate_before_s
        self._conns: dict[int, _Conn] = {}
        #: How long a session lived before the server expired it (the shortest seen).
        self.learned_lifetime_s: float | None = None
        self._handles = 0
        self._live: int | None = None
        self._draining: int | None = None
        self._closing = False
        self._buffer: deque[tuple[int, bytes]] = deque()
        self._buffer_size = 0
        self.source_text = ""  # the source transcript, when the service sends it (bounded)
        self.problems: deque[str] = deque(maxlen=MAX_PROBLEMS)
        self.counters: dict[str, int] = {
            "samples_sent": 0, "samples_dropped": 0, "samples_resent": 0, "deltas": 0,
            "audio_deltas": 0, "errors": 0, "bad_messages": 0, "sessions": 0, "drops": 0,
            "rotations": 0,
        }
        self.last_error: str | None = None

    # -- queries -------------------------------------------------------------------------------

    def live(self) -> bool:
        return self._live is not None

    def connections(self) -> int:
        return sum(1 for c in self._conns.values() if c.state != "closed")

    def is_connecting(self, handle: int) -> bool:
        c = self._conns.get(handle)
        return c is not None and c.state == "connecting"

    def wants_connection(self, now: float) -> bool:
        """No session at all, or the live one is old enough to be replaced
        (:class:`~captiond.realtime.session.SessionClock`, on the monotonic ``now``) and no
        replacement is on its way."""
        if any(c.state in ("connecting", "ready") for c in self._conns.values()):
            return False
        if self._closing:
            # Ending: only audio a dropped session left behind still needs a session.
            return self._live is None and bool(self._buffer)
        if self._live is None:
            return True
        clock = self._conns[self._live].clock
        return clock is not None and clock.rotate_due(now)

    def buffered_s(self) -> float:
        return self._buffer_size / BYTES_PER_SAMPLE / SAMPLE_RATE

    # -- connections -------------------------------------------------------------------------

    def connection_opened(self, now: float = 0.0, server_time: float | None = None) -> int:
        """A WebSocket is open; ``server_time``: the server's epoch time read at ``now`` (the
        upgrade's HTTP ``Date``), against which ``expires_at`` is read."""
        self._handles += 1
        self._conns[self._handles] = _Conn(self._handles,
                                           server_clock=ServerClock(now, server_time))
        return self._handles

    def close_requested(self, handle: int) -> None:
        c = self._conns.get(handle)
        if c is not None and c.state not in ("draining", "closed"):
            c.state = "draining"

    def connection_lost(self, handle: int, now: float) -> Output:
        out = Output()
        c = self._conns.pop(handle, None)
        if c is None:
            return out
        c.state = "closed"
        if handle == self._live:
            # The service had audio it never translated: send it again to the next session.
            self._live = None
            self.counters["drops"] += 1
            out.events += self.segmenter.pause()
            self._requeue_recent(c)
        if handle == self._draining:
            # The rotated-out session has flushed: its last line ends, the new one's text follows.
            self._draining = None
            out.events += self.segmenter.pause()
            self._release_held(out, now)
        return out

    def receive(self, handle: int, raw: str | bytes, now: float, wall: float) -> Output:
        out = Output()
        c = self._conns.get(handle)
        if c is None:
            return out
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._bad("malformed JSON")
            return out
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._bad("event without a type")
            return out
        kind = event["type"]
        if kind == "session.created":
            raw_session = event.get("session")
            session: dict[str, Any] = raw_session if isinstance(raw_session, dict) else {}
            exp = session.get("expires_at")
            c.expires_at = float(exp) if isinstance(exp, (int, float)) \
                and not isinstance(exp, bool) else None
            created = session.get("created_at")
            server_now: float | None = None  # the client's wall clock is no reference (skew)
            if isinstance(created, (int, float)) and not isinstance(created, bool):
                server_now = float(created)
            elif c.server_clock is not None:
                server_now = c.server_clock.at(now)
            c.clock = SessionClock.start(now, c.expires_at, server_now, self.rotate_before_s,
                                         self.learned_lifetime_s)
            c.session_id = session.get("id") if isinstance(session.get("id"), str) else None
            out.send.append((handle, self.settings.session_update()))
            if c.state == "connecting":
                # Audio may follow at once: the socket keeps order, so the service applies the
                # update first. Waiting for session.updated (which §2 does not list) would risk
                # never going live against a service that does not send it.
                c.state = "ready"
                self.counters["sessions"] += 1
                self._promote(out, now)
        elif kind == "session.updated":
            pass  # the configuration we asked for; nothing to do
        elif kind == "session.output_transcript.delta":
            self.counters["deltas"] += 1
            text = event.get("delta")
            if not isinstance(text, str):
                self._bad("output_transcript.delta without text")
                return out
            at = self._at(c, event.get("elapsed_ms"))
            if at is not None:
                c.last_output_stream = at
                self._trim_recent(c, at)
            if self._draining is not None and handle != self._draining:
                c.held.append((text, at))  # the old session's tail comes first
            else:
                out.events += self.segmenter.push(text, at, now)
        elif kind == "session.input_transcript.delta":
            text = event.get("delta")
            if isinstance(text, str):
                self.source_text = (self.source_text + text)[-2000:]
        elif kind == "session.output_audio.delta":
            self.counters["audio_deltas"] += 1
            data = event.get("delta")
            try:
                pcm = base64.b64decode(data, validate=True) if isinstance(data, str) else None
            except (binascii.Error, ValueError):
                pcm = None
            if pcm is None:
                self._bad("output_audio.delta without base64 audio")
                return out
            rate = event.get("sample_rate")
            out.audio.append(AudioOut(pcm[: len(pcm) // 2 * 2],
                                      rate if isinstance(rate, int) and rate > 0 else SAMPLE_RATE,
                                      self._at(c, event.get("elapsed_ms"))))
        elif kind == "session.closed":
            out.close.append((handle, 1000))
            c.state = "draining" if c.state != "closed" else c.state
        elif kind == "error":
            raw_err = event.get("error")
            err: dict[str, Any] = raw_err if isinstance(raw_err, dict) else {}
            code = str(err.get("code") or err.get("type") or "unknown")[:80]
            message = str(err.get("message") or "")[:200]
            self.counters["errors"] += 1
            self.last_error = f"{code}: {message}"
            if code in ("rate_limit_exceeded", "rate_limited"):
                out.backoff_s = 5.0
            if code == "session_expired" and c.clock is not None:
                seen = c.clock.age(now)
                if self.learned_lifetime_s is None or seen < self.learned_lifetime_s:
                    self.learned_lifetime_s = seen
            if code == "session_expired" and handle == self._live:
                self._live = None  # the server closes next; audio goes to the buffer
                self._requeue_recent(c)
                out.events += self.segmenter.pause()
                c.state = "draining"
        else:
            self._bad(f"unknown event {kind[:60]}")
        return out

    # -- audio ---------------------------------------------------------------------------------

    def audio(self, pcm: bytes, stream_sample: int, now: float) -> Output:
        """24 kHz PCM16 mono captured at ``stream_sample``: to the live session, or buffered."""
        out = Output()
        if not pcm:
            return out
        if self._live is not None:
            self._send(self._conns[self._live], pcm, stream_sample, out)
        else:
            self._buffer.append((stream_sample, pcm))
            self._buffer_size += len(pcm)
            self._trim_buffer(out)
        return out

    def tick(self, now: float, wall: float) -> Output:
        out = Output()
        out.events += self.segmenter.tick(now)
        return out

    def close_all(self) -> Output:
        """End of input: ask every open session to flush and close."""
        out = Output()
        self._closing = True
        for c in self._conns.values():
            if c.state in ("live", "ready"):
                out.send.append((c.handle, {"type": "session.close"}))
                c.state = "draining"
        self._live = None
        return out

    def finish(self) -> list[TranscriptEvent]:
        """The run is over: the open line is final as it stands."""
        return self.segmenter.pause()

    # -- internals -----------------------------------------------------------------------------

    def _bad(self, why: str) -> None:
        self.counters["bad_messages"] += 1
        self.problems.append(why)

    def _at(self, c: _Conn, elapsed: Any) -> int | None:
        if isinstance(elapsed, bool) or not isinstance(elapsed, int) or elapsed < 0:
            return None
        return c.to_stream_ms(elapsed)

    def _promote(self, out: Output, now: float) -> None:
        """A session is ready: it becomes live now; an old live one is closed (it flushes)."""
        ready = [c for c in self._conns.values() if c.state == "ready"]
        if not ready:
            return
        new = ready[-1]
        old = self._conns.get(self._live) if self._live is not None else None
        if old is not None:
            old.state = "draining"
            self._draining = old.handle
            out.send.append((old.handle, {"type": "session.close"}))
            self.counters["rotations"] += 1
        new.state = "live"
        self._live = new.handle
        while self._buffer:
            start, pcm = self._buffer.popleft()
            self._send(new, pcm, start, out)
        self._buffer_size = 0
        if self._closing:  # the input has ended: this session only flushes what was left
            out.send.append((new.handle, {"type": "session.close"}))
            new.state = "draining"
            self._live = None

    def _release_held(self, out: Output, now: float) -> None:
        for c in self._conns.values():
            for text, at in c.held:
                out.events += self.segmenter.push(text, at, now)
            c.held.clear()

    def _send(self, c: _Conn, pcm: bytes, stream_sample: int, out: Output) -> None:
        n = len(pcm) // BYTES_PER_SAMPLE
        if c.next_stream != stream_sample:
            c.runs_elapsed.append(c.sent_samples)
            c.runs_stream.append(stream_sample)
        c.sent_samples += n
        c.next_stream = stream_sample + n
        c.recent.append((stream_sample, pcm))
        c.recent_bytes += len(pcm)
        while c.recent_bytes > self.resend_bytes and len(c.recent) > 1:
            c.recent_bytes -= len(c.recent.popleft()[1])
        self.counters["samples_sent"] += n
        out.send.append((c.handle, {
            "type": "session.input_audio_buffer.append",
            "audio": base64.b64encode(pcm).decode("ascii"),
        }))

    def _trim_recent(self, c: _Conn, at_ms: int) -> None:
        """Audio up to the output's position has been translated: no need to send it again."""
        limit = at_ms * _SPM
        while c.recent and c.recent[0][0] + len(c.recent[0][1]) // BYTES_PER_SAMPLE <= limit:
            c.recent_bytes -= len(c.recent.popleft()[1])

    def _requeue_recent(self, c: _Conn) -> None:
        if not c.recent:
            return
        n = sum(len(p) for _, p in c.recent) // BYTES_PER_SAMPLE
        self.counters["samples_resent"] += n
        self._buffer.extendleft(reversed(c.recent))
        self._buffer_size += c.recent_bytes
        c.recent.clear()
        c.recent_bytes = 0

    def _trim_buffer(self, out: Output) -> None:
        while self._buffer_size > self.buffer_bytes and self._buffer:
            start, pcm = self._buffer.popleft()
            self._buffer_size -= len(pcm)
            n = len(pcm) // BYTES_PER_SAMPLE
            self.counters["samples_dropped"] += n
            reason = "translation: service unreachable beyond openai.buffer_s"
            gap = Gap(start // _SPM, (start + n) // _SPM, reason)
            if out.gaps and out.gaps[-1].end_ms >= gap.start_ms - 1:
                out.gaps[-1] = Gap(out.gaps[-1].start_ms, gap.end_ms, reason)
            else:
                out.gaps.append(gap)
