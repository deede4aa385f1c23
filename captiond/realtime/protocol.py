"""The gpt-realtime-whisper transcription protocol as a state machine.  [pure: no I/O, no clock]

:class:`TranscriptionProtocol` takes plain values in -- decoded server messages, speech audio as
PCM16 bytes on the stream clock, "commit now", ``now`` -- and returns an :class:`Output`: the
shared transcript events (:mod:`captiond.events`) to emit, the client events to send on which
connection, connections to close, gaps to record. The I/O shell (:mod:`captiond.engines.openai`)
performs them. Nothing here raises on server input: malformed JSON, unknown event types and
missing fields are counted (:attr:`TranscriptionProtocol.counters`) and logged.

How it keeps nothing lost and everything in order
-------------------------------------------------

*   **captiond owns the chain.** Every utterance gets captiond's own item id (``oa-1``,
    ``oa-2``, ...) and ``previous_item_id`` when it is cut, in cut order. The server's ids are
    bound to ours when ``input_audio_buffer.committed`` arrives: ``committed`` comes in commit
    order on a connection, so it belongs to the oldest commit still waiting on that connection.
    A commit the server refuses echoes our commit's ``event_id`` in ``error.event_id`` and is
    taken off that queue, so later bindings stay right. Server events for an id that is not
    bound yet (deltas sent before ``committed``) wait, bounded, and are replayed when it is.
*   **Audio is kept until its item is settled** (completed, failed or timed out). When a
    connection drops, the utterances it had not settled -- its pending completions never
    arrive -- are sent again, each as one append + commit, on the next ready session, and keep
    their captiond ids. The utterance being spoken is re-appended too.
*   **Commits at utterance boundaries only**, never with less than :data:`MIN_COMMIT_MS` of
    audio (the service answers ``input_audio_buffer_commit_empty``); shorter utterances are
    cleared. The stream offset of every commit is recorded, so each item has audio_start/end.
*   **Bounded:** unsettled audio is capped at ``buffer_bytes``. Speech past the cap (a long
    outage) is not buffered; it is reported in :attr:`Output.gaps` so the store records a gap.
*   **Session rotation:** a second connection may be opened while one is active. It becomes
    active only at a pause (no utterance in progress); the old one drains its pending
    completions and is then closed. Audio is never appended to two sessions. *When* to open
    the standby and when it must take over without a pause is decided here too
    (:meth:`TranscriptionProtocol.wants_connection`, :meth:`TranscriptionProtocol.tick`), on
    the caller's monotonic ``now`` and a lifetime judged by :mod:`captiond.realtime.session`
    -- never by comparing ``expires_at`` with a clock.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from captiond.events import (
    Gap,
    ItemCommitted,
    ItemCompleted,
    ItemFailed,
    ItemPartial,
    TranscriptEvent,
)
from captiond.realtime.session import ServerClock, SessionClock

log = logging.getLogger("captiond.openai.protocol")

#: The service's input format: PCM16 little-endian mono at this rate.
SAMPLE_RATE = 24_000
BYTES_PER_SAMPLE = 2
#: The service refuses commits of less audio than this.
MIN_COMMIT_MS = 100
#: Audio per append event when sending buffered audio again (one live block is sent as is).
RESEND_CHUNK_BYTES = SAMPLE_RATE * BYTES_PER_SAMPLE  # 1 s
#: Server events kept per connection for server ids not bound yet (deltas before committed).
MAX_EARLY_EVENTS = 2_000
#: Settled server ids remembered per connection, so late duplicates are ignored quietly.
MAX_SETTLED_IDS = 4_096
#: Longest server message accepted for parsing (a transcript of 30 s is a few kB).
MAX_MESSAGE_CHARS = 1_000_000

#: Error codes with a meaning for the protocol.
ERR_COMMIT_EMPTY = "input_audio_buffer_commit_empty"
ERR_SESSION_EXPIRED = "session_expired"
ERR_RATE_LIMIT = "rate_limit_exceeded"

_KNOWN_IGNORED = frozenset(
    {
        "input_audio_buffer.cleared",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "rate_limits.updated",
        "conversation.created",
        "conversation.item.input_audio_transcription.segment",
    }
)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What ``session.update`` configures (GA transcription session)."""

    model: str = "gpt-realtime-whisper"
    language: str | None = "en"
    delay: str | None = "low"
    #: ``near_field``, ``far_field`` or None (off).
    noise_reduction: str | None = "near_field"
    include_logprobs: bool = False
    #: Vocabulary and spelling hints (the glossary of local.hotwords/local.initial_prompt).
    prompt: str | None = None

    def session_update(self) -> dict[str, Any]:
        transcription: dict[str, Any] = {"model": self.model}
        if self.language:
            transcription["language"] = self.language
        if self.prompt:
            transcription["prompt"] = self.prompt
        if self.delay and self.model == "gpt-realtime-whisper":
            transcription["delay"] = self.delay  # only this model accepts it
        audio_input: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
            "transcription": transcription,
            "noise_reduction": (
                {"type": self.noise_reduction} if self.noise_reduction else None
            ),
            # gpt-realtime-whisper has no server VAD: captiond decides where turns end.
            "turn_detection": None,
        }
        session: dict[str, Any] = {"type": "transcription", "audio": {"input": audio_input}}
        if self.include_logprobs:
            session["include"] = ["item.input_audio_transcription.logprobs"]
        return {"type": "session.update", "session": session}


@dataclass(slots=True)
class Output:
    """What the caller must do, in order: emit ``events``, send ``send`` (connection handle,
    client event) in list order, close ``close`` (handle, code), record ``gaps``.
    ``backoff_s`` > 0 asks the caller to pause sending new connections that long (rate limit)."""

    events: list[TranscriptEvent] = field(default_factory=list)
    send: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    close: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    backoff_s: float = 0.0

    def extend(self, other: Output) -> Output:
        self.events.extend(other.events)
        self.send.extend(other.send)
        self.close.extend(other.close)
        self.gaps.extend(other.gaps)
        self.backoff_s = max(self.backoff_s, other.backoff_s)
        return self

    def __bool__(self) -> bool:
        return bool(self.events or self.send or self.close or self.gaps or self.backoff_s)


@dataclass(slots=True)
class _Entry:
    """One utterance, from its cut until it is settled."""

    item_id: str
    previous_item_id: str | None
    start: int  # first sample on the stream clock (SAMPLE_RATE)
    end: int  # one past the last sample
    pcm: bytes
    handle: int | None = None  # connection it was last committed on
    commit_event_id: str | None = None
    server_id: str | None = None
    deadline: float | None = None  # settle by then or fail (set when sent)
    placed: bool = False  # ItemCommitted emitted
    text: str = ""  # deltas so far on the current connection
    sends: int = 0  # how many times it was committed (1 + resends)
    counted: int = 0  # samples already counted as sent once (the rest goes out first time)
    sent_at: float = 0.0  # when its commit was last sent

    @property
    def start_ms(self) -> int:
        return self.start * 1000 // SAMPLE_RATE

    @property
    def end_ms(self) -> int:
        return self.end * 1000 // SAMPLE_RATE


@dataclass(slots=True)
class _Conn:
    handle: int
    ready: bool = False  # session.updated seen: appends may flow
    alive: bool = True
    draining: bool = False  # rotated away from: no new audio, closes when settled
    expired: bool = False  # session_expired seen
    server_session_id: str | None = None
    expires_at: float | None = None  # epoch seconds on the server's clock, as advertised
    server_clock: ServerClock | None = None  # the server's time, read when the link opened
    clock: SessionClock | None = None  # the session's judged lifetime (from session.created)
    # Commits sent on this connection, in order (refused ones removed; settled and bound ones
    # trimmed from the front, remembering the last one's server id as ``base``).
    commits: list[_Entry] = field(default_factory=list)
    base: str | None = None
    held: dict[str, dict[str, Any]] = field(default_factory=dict)  # committed by unknown prev
    bound: dict[str, _Entry] = field(default_factory=dict)  # server id -> entry
    early: OrderedDict[str, list[dict[str, Any]]] = field(default_factory=OrderedDict)
    early_count: int = 0
    settled_ids: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_SETTLED_IDS))
    current_appended: bool = False  # the utterance in progress has been appended here


class TranscriptionProtocol:
    """State of one captiond chain across any number of connections and sessions.

    ``item_prefix`` makes captiond's item ids unique within a captiond session; every id is
    ``f"{item_prefix}{n}"``. ``buffer_bytes`` bounds the audio kept for resending;
    ``item_timeout_s`` is how long a sent utterance may wait for its completion.
    """

    def __init__(
        self,
        settings: SessionSettings | None = None,
        *,
        item_prefix: str = "oa-",
        buffer_bytes: int = 300 * SAMPLE_RATE * BYTES_PER_SAMPLE,
        item_timeout_s: float = 30.0,
        rotate_before_s: float = 300.0,
    ) -> None:
        self.settings = settings or SessionSettings()
        self.rotate_before_s = rotate_before_s
        self.item_prefix = item_prefix
        self.buffer_bytes = buffer_bytes
        self.item_timeout_s = item_timeout_s
        self._conns: dict[int, _Conn] = {}
        self._active: _Conn | None = None
        self._next_handle = 1
        #: How long a session lived before the server expired it (the shortest seen).
        self.learned_lifetime_s: float | None = None
        self._next_item = 1
        self._next_event = 1
        self._last_item_id: str | None = None
        self._unsettled: OrderedDict[str, _Entry] = OrderedDict()  # in cut (chain) order
        self._resend: list[_Entry] = []  # to commit again on the next ready session
        self._unsent: list[_Entry] = []  # cut while no session was ready
        self._buffered = 0  # bytes held: unsettled entries + utterance in progress
        # The utterance in progress.
        self._cur: list[bytes] = []
        self._cur_bytes = 0
        self._cur_start: int | None = None
        self._cur_end = 0
        self._cur_counted = 0  # samples of it already appended (counted as sent) somewhere
        # Speech dropped by the buffer bound, not reported yet (sample range).
        self._gap: tuple[int, int] | None = None
        #: Seconds from the last completed utterance's commit to its transcription.
        self.last_lag_s = 0.0
        self.counters: dict[str, int] = {
            "malformed": 0,
            "unknown_type": 0,
            "missing_field": 0,
            "unexpected": 0,
            "server_errors": 0,
            "committed_out_of_order": 0,
            "moved_utterances": 0,  # moved whole to a new session as the old one expired
            "rotations": 0,  # standby sessions opened because the active one neared its end
            "untrusted_lifetimes": 0,  # sessions whose advertised expires_at was not believed
            "commits": 0,
            "resent_items": 0,
            "cleared_short": 0,
            "discarded_noise": 0,
            "completed": 0,
            "failed": 0,
            "timed_out": 0,
            "samples_in": 0,  # speech samples handed to the protocol
            "samples_sent": 0,  # of those, appended on the wire (first time)
            "samples_resent": 0,  # appended again after a drop (the two below, summed)
            # ... of utterances committed whose completion had not arrived when their session
            # died (or that the server refused before answering),
            "samples_resent_unanswered": 0,
            # ... of the utterance being spoken, appended to a session that died (or was
            # switched away from) before it could be committed there.
            "samples_resent_in_progress": 0,
            "samples_dropped": 0,  # over the buffer bound: recorded as a gap
            "samples_cleared": 0,  # noise, or utterances shorter than MIN_COMMIT_MS
            "samples_completed": 0,  # speech whose transcription arrived
        }

    # -- queries -------------------------------------------------------------------------

    @property
    def active_handle(self) -> int | None:
        return self._active.handle if self._active is not None else None

    def has_standby(self) -> bool:
        """A ready or connecting session is waiting to take over."""
        return any(
            c.alive and not c.draining and c is not self._active and not c.expired
            for c in self._conns.values()
        )

    def has_ready_standby(self) -> bool:
        """A standby session is ready to take over at the next boundary."""
        return any(
            c.alive and c.ready and not c.draining and c is not self._active and not c.expired
            for c in self._conns.values()
        )

    def live(self) -> bool:
        """An active session is ready for audio."""
        return self._active is not None and self._active.ready and self._active.alive

    def expires_at(self) -> float | None:
        return self._active.expires_at if self._active is not None else None

    def unsettled_count(self) -> int:
        return len(self._unsettled)

    def in_utterance(self) -> bool:
        return self._cur_start is not None

    def buffered_seconds(self) -> float:
        return self._buffered / (SAMPLE_RATE * BYTES_PER_SAMPLE)

    def is_ready(self, handle: int) -> bool:
        """The connection answered session.update."""
        conn = self._conns.get(handle)
        return conn is not None and conn.ready

    def is_connecting(self, handle: int) -> bool:
        """Open but session.update not answered yet."""
        conn = self._conns.get(handle)
        return conn is not None and conn.alive and not conn.ready

    def connections(self) -> list[int]:
        return [h for h, c in self._conns.items() if c.alive]

    def last_item_id(self) -> str | None:
        return self._last_item_id

    # -- connections ---------------------------------------------------------------------

    def wants_connection(self, now: float) -> bool:
        """Should the caller open a connection now? When there is none at all, or when the
        active session is old enough to be replaced (:class:`SessionClock`) and no standby is
        on its way. The caller adds its own backoff after failures."""
        if not self.connections():
            return True
        active = self._active
        if active is None or not self.live() or self.has_standby() or active.clock is None:
            return False
        return active.clock.rotate_due(now)

    def session_clock(self, handle: int | None = None) -> SessionClock | None:
        """The judged lifetime of a session (default: the active one)."""
        conn = self._active if handle is None else self._conns.get(handle)
        return conn.clock if conn is not None else None

    def connection_opened(self, now: float, server_time: float | None = None) -> tuple[int, Output]:
        """A WebSocket is open: its handle, and the ``session.update`` to send on it.
        ``server_time``: the server's epoch time read at ``now`` (the upgrade's HTTP ``Date``;
        None when unknown), against which ``expires_at`` is read."""
        handle = self._next_handle
        self._next_handle += 1
        conn = _Conn(handle, server_clock=ServerClock(now, server_time))
        if self._active is not None and self._active.alive:
            self.counters["rotations"] += 1
        self._conns[handle] = conn
        update = self.settings.session_update()
        update["event_id"] = self._event_id()
        return handle, Output(send=[(handle, update)])

    def connection_lost(self, handle: int, now: float) -> Output:
        """The connection is gone (closed, dropped, timed out). Its unsettled utterances are
        queued to be sent again; the next ready session takes over."""
        out = Output()
        conn = self._conns.pop(handle, None)
        if conn is None or not conn.alive:
            return out
        conn.alive = False
        lost = [e for e in conn.commits if e.item_id in self._unsettled]
        for entry in lost:
            entry.handle = None
            entry.server_id = None
            entry.commit_event_id = None
            entry.deadline = None
            entry.text = ""
            if entry.item_id in self._unsettled and entry not in self._resend:
                self._resend.append(entry)
        self._resend.sort(key=lambda e: e.start)
        if lost:
            log.info("openai.resend_queued handle=%d items=%d", handle, len(lost))
        if conn is self._active:
            self._active = None
            # Promote a ready standby at once: there is no live session to wait for.
            out.extend(self._promote(now))
        elif self.live() and self._active is not None and self._cur_start is None:
            out.extend(self._flush_owed(self._active, now))
        return out

    def close_requested(self, handle: int) -> None:
        """The caller is closing this connection on purpose (after draining)."""
        conn = self._conns.get(handle)
        if conn is not None:
            conn.draining = True

    # -- audio ---------------------------------------------------------------------------

    def audio(self, pcm: bytes, start: int, now: float) -> Output:
        """Speech audio (PCM16 at :data:`SAMPLE_RATE`) starting at stream sample ``start``."""
        out = Output()
        n = len(pcm) // BYTES_PER_SAMPLE
        if n == 0:
            return out
        pcm = pcm[: n * BYTES_PER_SAMPLE]
        self.counters["samples_in"] += n
        if self._buffered + len(pcm) > self.buffer_bytes:
            self.counters["samples_dropped"] += n
            self._gap = (self._gap[0] if self._gap else start, start + n)
            return out
        if self._gap is not None:
            out.gaps.append(self._gap_report())
        if self._cur_start is None:
            self._cur_start = start
        self._cur.append(pcm)
        self._cur_bytes += len(pcm)
        self._cur_end = start + n
        self._buffered += len(pcm)
        active = self._active
        if active is not None and active.ready and active.alive and (
            active.current_appended or self._cur_counted == 0
        ):
            out.send.append((active.handle, _append(pcm)))
            active.current_appended = True
            self.counters["samples_sent"] += n
            self._cur_counted += n
        return out

    def commit(self, now: float, *, discard: bool = False) -> Output:
        """The utterance in progress ends here (a pause, a forced cut or the end of input).
        ``discard``: it was noise, not speech -- clear it instead of committing."""
        out = Output()
        if self._gap is not None:
            out.gaps.append(self._gap_report())
        if self._cur_start is None:
            return out.extend(self._maybe_rotate(now))
        pcm = b"".join(self._cur)
        start, counted = self._cur_start, self._cur_counted
        self._cur, self._cur_bytes, self._cur_start, self._cur_counted = [], 0, None, 0
        active = self._active
        appended_here = active is not None and active.current_appended
        if active is not None:
            active.current_appended = False
        samples = len(pcm) // BYTES_PER_SAMPLE
        if discard or samples * 1000 < MIN_COMMIT_MS * SAMPLE_RATE:
            # Noise, or too short to commit: clear it from the server's buffer, let it go.
            self._buffered -= len(pcm)
            self.counters["cleared_short" if not discard else "discarded_noise"] += 1
            self.counters["samples_cleared"] += samples
            if appended_here and active is not None:
                out.send.append((active.handle, {"type": "input_audio_buffer.clear"}))
            return out.extend(self._maybe_rotate(now))
        entry = _Entry(
            item_id=f"{self.item_prefix}{self._next_item}",
            previous_item_id=self._last_item_id,
            start=start,
            end=start + samples,
            pcm=pcm,
            counted=counted,
        )
        self._next_item += 1
        self._last_item_id = entry.item_id
        self._unsettled[entry.item_id] = entry
        self.counters["commits"] += 1
        if appended_here and active is not None and active.ready and active.alive \
                and counted == samples:
            out.extend(self._send_commit(active, entry, now))
        else:
            self._unsent.append(entry)
        if self.live() and self._active is not None:
            out.extend(self._flush_owed(self._active, now))
        return out.extend(self._maybe_rotate(now))

    def switch_now(self, now: float) -> Output:
        """The active session is about to expire and no pause came: hand over to a ready
        standby at once. The utterance in progress is cleared from the old session's buffer
        and appended whole to the new one (not cut, so its text does not suffer); the old
        session drains what it was committed, then closes."""
        out = Output()
        old = self._active
        standby = [
            c for c in self._conns.values()
            if c.alive and c.ready and not c.draining and not c.expired and c is not old
        ]
        if old is None or not standby:
            return out
        if old.current_appended:
            out.send.append((old.handle, {"type": "input_audio_buffer.clear"}))
            old.current_appended = False
        old.draining = True
        self.counters["moved_utterances"] += 1 if self._cur_start is not None else 0
        log.info("openai.rotate_now from=%d to=%d", old.handle, standby[-1].handle)
        self._active = None
        out.extend(self._promote(now))
        return out.extend(self._close_drained())

    def idle(self, now: float) -> Output:
        """A pause with nothing in progress: owed utterances go out, and a standby session
        may take over now."""
        out = Output()
        if self.live() and self._active is not None and self._cur_start is None:
            out.extend(self._flush_owed(self._active, now))
        return out.extend(self._maybe_rotate(now))

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> Output:
        """Fail utterances whose completion is overdue; close drained sessions; hand over to
        a ready standby at once when the active session is about to end and no pause came."""
        out = Output()
        active = self._active
        if active is not None and active.clock is not None and self.has_ready_standby() \
                and active.clock.force_due(now):
            out.extend(self.switch_now(now))
        for entry in list(self._unsettled.values()):
            if entry.deadline is not None and now >= entry.deadline:
                conn = self._conns.get(entry.handle) if entry.handle is not None else None
                # It stays in conn.commits on purpose: a late committed still binds to it,
                # so the committed events after it bind to the right items.
                if conn is not None and entry.server_id is not None:
                    conn.bound.pop(entry.server_id, None)
                    conn.settled_ids.append(entry.server_id)
                self.counters["timed_out"] += 1
                log.warning(
                    "openai.item_timeout item=%s after_s=%.1f", entry.item_id, self.item_timeout_s
                )
                out.extend(
                    self._settle(entry, ItemFailed(entry.item_id, "no transcription in time"))
                )
        out.extend(self._close_drained())
        return out

    def abandon(self, reason: str | None) -> tuple[Output, list[_Entry]]:
        """Give up on everything not settled (end of run with the service unreachable, or a
        switch to another engine). Every such utterance is placed in the chain and, with a
        ``reason``, failed; with ``reason=None`` it is left open for a caller that transcribes
        the returned entries otherwise (by their ``item_id``, audio in ``pcm``)."""
        out = Output()
        if self._cur_start is not None:
            out.extend(self.commit(0.0))
        if self._gap is not None:
            out.gaps.append(self._gap_report())
        entries = list(self._unsettled.values())
        for entry in entries:
            if reason is not None:
                out.extend(self._settle(entry, ItemFailed(entry.item_id, reason)))
                continue
            pcm = entry.pcm
            if not entry.placed:
                out.extend(self._place(entry))
            self._unsettled.pop(entry.item_id, None)
            self._buffered -= len(pcm)
            entry.pcm = pcm  # handed over with the entry
        self._resend.clear()
        self._unsent.clear()
        for conn in self._conns.values():
            conn.commits.clear()
            conn.bound.clear()
        return out, entries

    # -- server input ----------------------------------------------------------------------

    def receive(self, handle: int, data: str | bytes, now: float) -> Output:
        """One server message. Never raises on bad input: it is counted and logged."""
        if len(data) > MAX_MESSAGE_CHARS:
            return self._bad("malformed", "too_large", size=len(data))
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return self._bad("malformed", "not_json", head=repr(data[:80]))
        if not isinstance(message, dict):
            return self._bad("malformed", "not_object", head=repr(data[:80]))
        conn = self._conns.get(handle)
        if conn is None or not conn.alive:
            return Output()  # a message racing the close of its connection
        return self._dispatch(conn, message, now)

    def _dispatch(self, conn: _Conn, msg: dict[str, Any], now: float) -> Output:
        kind = msg.get("type")
        if not isinstance(kind, str):
            return self._bad("missing_field", "type", event=_brief(msg))
        if kind in ("session.created", "transcription_session.created"):
            session = msg.get("session")
            if isinstance(session, dict):
                sid = session.get("id")
                conn.server_session_id = sid if isinstance(sid, str) else None
                exp = session.get("expires_at")
                if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp > 0:
                    conn.expires_at = float(exp)
                created = session.get("created_at")
                if isinstance(created, (int, float)) and not isinstance(created, bool):
                    server_now: float | None = float(created)
                else:
                    server_now = conn.server_clock.at(now) if conn.server_clock else None
                conn.clock = SessionClock.start(now, conn.expires_at, server_now,
                                                self.rotate_before_s, self.learned_lifetime_s)
                if not conn.clock.trusted:
                    self.counters["untrusted_lifetimes"] += 1
            log.info(
                "openai.session_created handle=%d session=%s expires_at=%s lifetime_s=%.0f "
                "trusted=%s", conn.handle, conn.server_session_id, conn.expires_at,
                conn.clock.lifetime_s if conn.clock else -1, conn.clock.trusted if conn.clock
                else False,
            )
            return Output()
        if kind in ("session.updated", "transcription_session.updated"):
            if conn.ready:
                return Output()
            conn.ready = True
            log.info("openai.session_ready handle=%d", conn.handle)
            if self._active is None or not self._active.alive:
                self._active = None
                return self._promote(now)
            # A rotation: wait for a pause to switch.
            return self._maybe_rotate(now)
        if kind == "input_audio_buffer.committed":
            server_id = msg.get("item_id")
            if not isinstance(server_id, str):
                return self._bad("missing_field", "item_id", event=kind)
            return self._bind(conn, server_id, msg.get("previous_item_id"), now)
        if kind in ("conversation.item.added", "conversation.item.created",
                    "conversation.item.done"):
            item = msg.get("item")
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return self._bad("missing_field", "item.id", event=kind)
            return Output()  # ordering comes from committed; these add nothing we need
        if kind.startswith("conversation.item.input_audio_transcription."):
            server_id = msg.get("item_id")
            if not isinstance(server_id, str):
                return self._bad("missing_field", "item_id", event=kind)
            if server_id in conn.settled_ids:
                return Output()
            entry = conn.bound.get(server_id)
            if entry is None:
                return self._hold(conn, server_id, msg)
            return self._transcription(conn, entry, msg, now)
        if kind == "error":
            return self._error(conn, msg, now)
        if kind in _KNOWN_IGNORED:
            return Output()
        self.counters["unknown_type"] += 1
        log.info("openai.unknown_event type=%s", kind[:80])
        return Output()

    def _transcription(self, conn: _Conn, entry: _Entry, msg: dict[str, Any],
                       now: float) -> Output:
        kind = msg["type"]
        if kind.endswith(".delta"):
            delta = msg.get("delta")
            if delta is None:
                return Output()
            if not isinstance(delta, str):
                return self._bad("missing_field", "delta", event=kind)
            entry.text += delta
            return Output(events=[ItemPartial(entry.item_id, entry.text)])
        if kind.endswith(".completed"):
            transcript = msg.get("transcript")
            if not isinstance(transcript, str):
                return self._bad("missing_field", "transcript", event=kind)
            self._unbind(conn, entry)
            self.counters["completed"] += 1
            self.counters["samples_completed"] += len(entry.pcm) // BYTES_PER_SAMPLE
            self.last_lag_s = max(0.0, now - entry.sent_at)
            return self._settle(
                entry, ItemCompleted(entry.item_id, transcript, language=self.settings.language)
            )
        if kind.endswith(".failed"):
            raw_error = msg.get("error")
            error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
            code = error.get("code") or error.get("type") or "transcription_failed"
            text = error.get("message") or ""
            log.warning("openai.item_failed item=%s code=%s message=%r",
                        entry.item_id, code, str(text)[:200])
            self._unbind(conn, entry)
            self.counters["failed"] += 1
            return self._settle(entry, ItemFailed(entry.item_id, f"openai: {code}"))
        self.counters["unknown_type"] += 1
        log.info("openai.unknown_event type=%s", kind[:80])
        return Output()

    def _error(self, conn: _Conn, msg: dict[str, Any], now: float) -> Output:
        error = msg.get("error")
        if not isinstance(error, dict):
            return self._bad("missing_field", "error", event="error")
        self.counters["server_errors"] += 1
        code = error.get("code")
        event_id = error.get("event_id")
        log.warning(
            "openai.server_error code=%s type=%s event_id=%s message=%r",
            code, error.get("type"), event_id, str(error.get("message"))[:200],
        )
        out = Output()
        if code == ERR_SESSION_EXPIRED:
            # The server closes (1001) next; stop using this session now. Its unsettled
            # items are sent again on a new session when the close arrives.
            conn.expired = True
            if conn.clock is not None:
                seen = conn.clock.age(now)
                if self.learned_lifetime_s is None or seen < self.learned_lifetime_s:
                    self.learned_lifetime_s = seen
            if conn is self._active:
                out.extend(self.connection_lost(conn.handle, now))
            return out
        if code == ERR_RATE_LIMIT:
            out.backoff_s = 1.0
        if isinstance(event_id, str):
            for entry in list(conn.commits):
                if entry.commit_event_id == event_id and entry.server_id is None:
                    # A refused commit gets no committed and no server item: take it out
                    # so the following committed events bind to the right utterances.
                    conn.commits.remove(entry)
                    out.extend(self._settle(entry, ItemFailed(entry.item_id, f"openai: {code}")))
                    break
        return out

    # -- internals -------------------------------------------------------------------------

    def _bind(self, conn: _Conn, server_id: str, server_prev: Any, now: float) -> Output:
        """Bind a server item to the commit it answers, by the server's own chain
        (``previous_item_id``); commit order is the fallback when the server gives none."""
        if server_id in conn.bound or server_id in conn.settled_ids \
                or any(e.server_id == server_id for e in conn.commits):
            return Output()  # a duplicate
        index: int | None = None
        if server_prev is None or server_prev == conn.base:
            if conn.commits and conn.commits[0].server_id is None:
                index = 0
        else:
            for i, e in enumerate(conn.commits):
                if e.server_id == server_prev:
                    index = i + 1
                    break
            else:
                unbound = sum(1 for e in conn.commits if e.server_id is None)
                # Wait for the predecessor only if it can still come (two or more of our
                # commits unanswered); otherwise its predecessor is no commit of ours.
                if isinstance(server_prev, str) and unbound >= 2 \
                        and len(conn.held) < MAX_EARLY_EVENTS:
                    # Its predecessor's committed has not come yet: bind after it.
                    conn.held[server_prev] = {"item_id": server_id, "previous_item_id": server_prev}
                    self.counters["committed_out_of_order"] += 1
                    return Output()
        if index is None or index >= len(conn.commits) or conn.commits[index].server_id is not None:
            index = next((i for i, e in enumerate(conn.commits) if e.server_id is None), None)
        if index is None:
            self.counters["unexpected"] += 1
            log.warning("openai.unexpected_committed handle=%d item=%s", conn.handle, server_id)
            return Output()
        entry = conn.commits[index]
        entry.server_id = server_id
        out = Output()
        if entry.item_id not in self._unsettled:
            # It timed out meanwhile: whatever comes for it now is ignored.
            conn.settled_ids.append(server_id)
            for _ in conn.early.pop(server_id, []):
                conn.early_count -= 1
        else:
            conn.bound[server_id] = entry
            if not entry.placed:
                out.extend(self._place(entry))
            for held in conn.early.pop(server_id, []):
                conn.early_count -= 1
                if server_id not in conn.bound:
                    continue  # settled by an earlier held event
                out.extend(self._transcription(conn, entry, held, now))
        follower = conn.held.pop(server_id, None)
        if follower is not None:
            out.extend(self._bind(conn, follower["item_id"], server_id, now))
        self._trim(conn)
        return out

    def _trim(self, conn: _Conn) -> None:
        while conn.commits and conn.commits[0].server_id is not None \
                and conn.commits[0].item_id not in self._unsettled:
            conn.base = conn.commits.pop(0).server_id

    def _hold(self, conn: _Conn, server_id: str, msg: dict[str, Any]) -> Output:
        if conn.early_count >= MAX_EARLY_EVENTS:
            oldest, events = conn.early.popitem(last=False)
            conn.early_count -= len(events)
            self.counters["unexpected"] += len(events)
            log.warning("openai.early_events_dropped item=%s count=%d", oldest, len(events))
        conn.early.setdefault(server_id, []).append(msg)
        conn.early_count += 1
        return Output()

    def _unbind(self, conn: _Conn, entry: _Entry) -> None:
        """The entry is settled on this connection (its server id stays, for the chain)."""
        if entry.server_id is not None:
            conn.bound.pop(entry.server_id, None)
            conn.settled_ids.append(entry.server_id)

    def _place(self, entry: _Entry) -> Output:
        entry.placed = True
        return Output(
            events=[
                ItemCommitted(entry.item_id, entry.previous_item_id, entry.start_ms, entry.end_ms)
            ]
        )

    def _settle(self, entry: _Entry, event: TranscriptEvent) -> Output:
        out = Output()
        if self._unsettled.pop(entry.item_id, None) is None:
            return out
        self._buffered -= len(entry.pcm)
        entry.pcm = b""
        entry.deadline = None
        if entry in self._resend:
            self._resend.remove(entry)
        if entry in self._unsent:
            self._unsent.remove(entry)
        if not entry.placed:
            out.extend(self._place(entry))
        out.events.append(event)
        conn = self._conns.get(entry.handle) if entry.handle is not None else None
        if conn is not None:
            self._trim(conn)
        out.extend(self._close_drained())
        return out

    def _send_commit(self, conn: _Conn, entry: _Entry, now: float) -> Output:
        entry.handle = conn.handle
        entry.commit_event_id = self._event_id()
        entry.deadline = now + self.item_timeout_s
        entry.sent_at = now
        entry.sends += 1
        conn.commits.append(entry)
        out = Output(
            send=[(conn.handle, {"type": "input_audio_buffer.commit",
                                 "event_id": entry.commit_event_id})]
        )
        if not entry.placed:
            out.extend(self._place(entry))
        return out

    def _send_entry(self, conn: _Conn, entry: _Entry, now: float) -> Output:
        out = Output()
        samples = len(entry.pcm) // BYTES_PER_SAMPLE
        for i in range(0, len(entry.pcm), RESEND_CHUNK_BYTES):
            out.send.append((conn.handle, _append(entry.pcm[i : i + RESEND_CHUNK_BYTES])))
        if entry.sends > 0 or entry.counted > 0:
            self.counters["resent_items"] += 1
        self.counters["samples_resent"] += entry.counted
        # Committed before (its session died before the completion came), or cut while no
        # session was up after its start had gone to a session that died.
        kind = "unanswered" if entry.sends > 0 else "in_progress"
        self.counters[f"samples_resent_{kind}"] += entry.counted
        self.counters["samples_sent"] += samples - entry.counted
        entry.counted = samples
        return out.extend(self._send_commit(conn, entry, now))

    def _promote(self, now: float) -> Output:
        """Make a ready standby the active session and send it everything owed."""
        out = Output()
        candidates = [
            c for c in self._conns.values()
            if c.alive and c.ready and not c.draining and not c.expired
        ]
        if not candidates:
            return out
        conn = max(candidates, key=lambda c: c.handle)
        self._active = conn
        log.info("openai.session_active handle=%d resend=%d unsent=%d",
                 conn.handle, len(self._resend), len(self._unsent))
        return out.extend(self._flush(conn, now))

    def _flush(self, conn: _Conn, now: float) -> Output:
        """Send owed utterances in chain order, then the utterance in progress."""
        out = self._flush_owed(conn, now)
        if self._cur_start is not None and self._cur:
            pcm = b"".join(self._cur)
            self._cur = [pcm]
            for i in range(0, len(pcm), RESEND_CHUNK_BYTES):
                out.send.append((conn.handle, _append(pcm[i : i + RESEND_CHUNK_BYTES])))
            n = len(pcm) // BYTES_PER_SAMPLE
            # Audio appended to a dead session before counts as a resend.
            self.counters["samples_resent"] += self._cur_counted
            self.counters["samples_resent_in_progress"] += self._cur_counted
            self.counters["samples_sent"] += n - self._cur_counted
            self._cur_counted = n
            conn.current_appended = True
        return out

    def _flush_owed(self, conn: _Conn, now: float) -> Output:
        """Commit utterances owed to the service (cut while offline, or lost with a dropped
        connection) on ``conn``, in chain order. Only at a buffer boundary."""
        out = Output()
        if not self._resend and not self._unsent:
            return out
        owed = sorted(self._resend + self._unsent, key=lambda e: e.start)
        self._resend.clear()
        self._unsent.clear()
        for entry in owed:
            out.extend(self._send_entry(conn, entry, now))
        return out

    def _maybe_rotate(self, now: float) -> Output:
        """At a pause, hand over to a ready standby session; drain the old one."""
        out = Output()
        if self._cur_start is not None:
            return out
        old = self._active
        standby = [
            c for c in self._conns.values()
            if c.alive and c.ready and not c.draining and not c.expired and c is not old
        ]
        if old is None or not standby:
            return out
        old.draining = True
        log.info("openai.rotate from=%d to=%d", old.handle, standby[-1].handle)
        self._active = None
        out.extend(self._promote(now))
        return out.extend(self._close_drained())

    def _close_drained(self) -> Output:
        out = Output()
        for conn in self._conns.values():
            if conn.alive and conn.draining and conn is not self._active \
                    and not self._owes(conn):
                conn.alive = False
                out.close.append((conn.handle, 1000))
        for handle, _code in out.close:
            self._conns.pop(handle, None)
        return out

    def _owes(self, conn: _Conn) -> bool:
        """The connection still has utterances whose results captiond waits for."""
        return any(e.item_id in self._unsettled for e in conn.commits)

    def _gap_report(self) -> Gap:
        assert self._gap is not None
        start, end = self._gap
        self._gap = None
        gap = Gap(start * 1000 // SAMPLE_RATE, end * 1000 // SAMPLE_RATE,
                  "openai: speech over the outage buffer (openai.buffer_s)")
        log.warning("openai.gap start_ms=%d end_ms=%d", gap.start_ms, gap.end_ms)
        return gap

    def _event_id(self) -> str:
        eid = f"cap_{self._next_event}"
        self._next_event += 1
        return eid

    def _bad(self, counter: str, what: str, **fields: Any) -> Output:
        self.counters[counter] += 1
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        log.warning("openai.bad_server_event problem=%s what=%s %s", counter, what, extra)
        return Output()


def _append(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


def _brief(msg: dict[str, Any]) -> str:
    return ",".join(sorted(str(k)[:40] for k in list(msg)[:10]))
