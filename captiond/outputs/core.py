"""What each output sends, decided from feed messages [pure: no I/O, no clock].

A planner per output kind turns the caption feed's line messages (:mod:`captiond.feed`) into
:class:`Send` values; the driver (:mod:`captiond.outputs.drivers`) performs them and reports
back with :meth:`Planner.sent`, :meth:`Planner.failed` or :meth:`Planner.skipped`. Every
method takes ``now`` (monotonic seconds) and, where a wall clock matters (YouTube), ``wall``
(Unix seconds), so the rules here are tested without sockets or sleeps.

Rules shared by all kinds:

- Only text that will not change is sent: final lines, and (OBS) the *stable* prefix of a
  partial (``stable`` characters, cut back to a whole word). A removed or failed line sends
  nothing.
- Pending sends are bounded (``MAX_PENDING``); past it the oldest are dropped and counted
  (the lines stay in the store). Sends are at least ``min_interval_s`` apart.
- A failed send is retried, unchanged (same ``seq``), after :func:`backoff_s`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from captiond.outputs.spec import OutputSpec

#: CEA-608 caption rows hold 32 characters.
ROW_CHARS = 32
#: Rows a roll-up caption shows (the row being written and the one above it).
ROLLUP_ROWS = 2
#: Retry delays: first, largest (seconds); the jitter scales each by 0.5..1.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
#: Sends one output keeps waiting at most (OBS: caption states; others: lines).
MAX_PENDING = {"obs": 64, "youtube": 2_000, "zoom": 2_000, "webhook": 2_000}
#: Lines per YouTube post, and per Zoom post, when a backlog is sent.
YOUTUBE_MAX_CUES = 20
ZOOM_MAX_LINES = 5
#: YouTube drops captions stamped further than about 60 s from its clock: a backlog's cue times
#: are kept at most this far behind the server's now.
YOUTUBE_MAX_AGE_S = 45.0
#: Lines remembered as sent, so a line seen again (after a resubscription) is not sent twice.
SEEN_LINES = 5_000
#: Delivery delays kept for the status and the benchmark.
DELAYS_KEPT = 2_000
#: Caption states older than this when OBS can take them again are skipped (a live stream
#: shows what is said now; the lines stay in the store).
OBS_MAX_AGE_S = 15.0
#: The obs-websocket status code for "the stream is not live" (OutputNotRunning).
OBS_NOT_RUNNING = 501

_SPEAKER_MARK = ">> "  # broadcast captions mark a change of speaker so


def backoff_s(attempt: int, rand: float) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): doubling from
    :data:`BACKOFF_FIRST_S` up to :data:`BACKOFF_MAX_S`, times 0.5..1 by ``rand`` (0..1)."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, min(attempt - 1, 16)))
    return base * (0.5 + 0.5 * max(0.0, min(1.0, rand)))


@dataclass(frozen=True)
class Send:
    """One request for the driver. ``op``: ``caption`` (OBS SendStreamCaption, ``text``),
    ``post`` (HTTP POST of ``body``) or ``get`` (HTTP GET). ``query`` is appended to the
    output's URL, ``path`` to its path. ``lines`` is how many final lines it delivers."""

    op: str
    text: str = ""
    body: bytes = b""
    content_type: str = ""
    query: tuple[tuple[str, str], ...] = ()
    path: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    lines: int = 0
    #: ``now`` when each final line in it arrived (for the delivery delay).
    arrived: tuple[float, ...] = ()
    purpose: str = "captions"  # or "clock" (YouTube's empty POST), "seq" (Zoom's query)


@dataclass
class Final:
    key: tuple[str, str]
    text: str
    speaker: str | None
    start_ms: int
    end_ms: int
    session: Any
    item_id: str
    channel: str
    track: str
    arrived: float
    first_seen_wall: float


class Planner:
    """The part every kind shares: which messages count, the pending queue, the counters."""

    kind = ""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.max_pending = MAX_PENDING[spec.kind]
        self.pending: deque[Any] = deque()
        self.dropped = 0
        self.sent_lines = 0
        self.sent_requests = 0
        self.failures = 0  # consecutive
        self.last_send = float("-inf")
        self.retry_at = float("-inf")
        self.delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._first_seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    # -- input -------------------------------------------------------------------------

    def offer(self, message: Mapping[str, Any], now: float, wall: float = 0.0) -> None:
        """Take one feed message."""
        if message.get("type") != "line":
            return
        if (message.get("track") or "original") != self.spec.track:
            return
        key = (str(message.get("channel") or ""), str(message.get("item_id")))
        if key not in self._first_seen:
            self._first_seen[key] = wall
            while len(self._first_seen) > SEEN_LINES:
                self._first_seen.popitem(last=False)
        if key in self._seen:
            return
        if message.get("event") == "removed" or message.get("status") == "failed":
            self._first_seen.pop(key, None)
            self.on_gone(key)
            return
        text = " ".join(str(message.get("text") or "").split())
        if message.get("status") == "final":
            self._seen[key] = None
            while len(self._seen) > SEEN_LINES:
                self._seen.popitem(last=False)
            if text:
                self.on_final(Final(
                    key, text, message.get("speaker") if self.spec.speakers else None,
                    int(message.get("start_ms") or 0), int(message.get("end_ms") or 0),
                    message.get("session"), key[1], key[0], self.spec.track, now,
                    self._first_seen.get(key, wall),
                ))
        elif message.get("status") == "partial" and self.spec.partials:
            self.on_stable(key, str(message.get("text") or ""), int(message.get("stable") or 0),
                           message.get("speaker") if self.spec.speakers else None, now)

    def on_final(self, final: Final) -> None:
        self._push(final)

    def on_stable(self, key: tuple[str, str], text: str, stable: int,
                  speaker: str | None, now: float) -> None:
        """Stable partial text (only OBS uses it)."""

    def on_gone(self, key: tuple[str, str]) -> None:
        """A line was removed or failed before its final."""

    def _push(self, item: Any) -> None:
        self.pending.append(item)
        while len(self.pending) > self.max_pending:
            self.pending.popleft()
            self.dropped += 1

    # -- output ------------------------------------------------------------------------

    def due(self, now: float) -> float | None:
        """Seconds until :meth:`next_send` may have something (0: now), None: nothing waits."""
        if not self.has_work():
            return None
        return max(0.0, self.retry_at - now, self.last_send + self.spec.min_interval_s - now)

    def has_work(self) -> bool:
        return bool(self.pending)

    def next_send(self, now: float, wall: float = 0.0) -> Send | None:
        """What to send now (the same value again after a failure), or None."""
        wait = self.due(now)
        if wait is None or wait > 0:
            return None
        return self.build(now, wall)

    def build(self, now: float, wall: float) -> Send | None:
        raise NotImplementedError

    def sent(self, send: Send, now: float, wall: float = 0.0, answer: bytes = b"",
             sent_wall: float | None = None) -> None:
        """``send`` was delivered (``answer``: the response body)."""
        self.failures = 0
        self.retry_at = float("-inf")
        self.last_send = now
        self.sent_requests += 1
        self.sent_lines += send.lines
        self.delays.extend(now - t for t in send.arrived)
        self.done(send, answer, wall, sent_wall if sent_wall is not None else wall)

    def done(self, send: Send, answer: bytes, wall: float, sent_wall: float) -> None:
        for _ in range(min(send.lines, len(self.pending))):
            self.pending.popleft()

    def failed(self, send: Send, now: float, rand: float) -> float:
        """``send`` failed; returns the delay before it is tried again."""
        self.failures += 1
        delay = backoff_s(self.failures, rand)
        self.retry_at = now + delay
        return delay

    def skipped(self, send: Send, now: float) -> None:
        """``send`` was answered but will never apply (OBS: not streaming): drop it."""
        self.failures = 0
        self.retry_at = float("-inf")
        self.last_send = now
        self.done(send, b"", 0.0, 0.0)

    def status(self) -> dict[str, Any]:
        return {"sent_lines": self.sent_lines, "sent_requests": self.sent_requests,
                "pending": len(self.pending), "dropped": self.dropped}

    def _label(self, speaker: str | None, text: str) -> str:
        return f"{speaker}: {text}" if speaker else text


# -- OBS: roll-up captions, CEA-608 rows -----------------------------------------------------


def wrap_words(rows: list[str], words: list[str], width: int = ROW_CHARS) -> None:
    """Append ``words`` to ``rows`` (the last row is the one being written), wrapping at
    ``width`` characters; a word longer than a row is cut."""
    if not rows:
        rows.append("")
    for word in words:
        while len(word) > width:
            if rows[-1]:
                rows.append("")
            rows[-1] = word[:width]
            rows.append("")
            word = word[width:]
        if not word:
            continue
        if not rows[-1]:
            rows[-1] = word
        elif len(rows[-1]) + 1 + len(word) <= width:
            rows[-1] += " " + word
        else:
            rows.append(word)


@dataclass
class _CaptionState:
    first_row: int
    text: str
    created: float
    arrived: list[float] = field(default_factory=list)
    lines: int = 0


class ObsPlanner(Planner):
    """Roll-up captions for OBS's SendStreamCaption.

    Words are appended to rows of at most :data:`ROW_CHARS` characters as they become
    stable; each send shows the last :data:`ROLLUP_ROWS` rows. A new caption state replaces
    the waiting one only while the top row is the same, so every row is shown complete at
    least once however slow the sends are. A change of speaker starts a row with ``>>``.
    """

    kind = "obs"

    def __init__(self, spec: OutputSpec) -> None:
        super().__init__(spec)
        self.rows: list[str] = []
        self.first_row = 0  # index of rows[0] since the start
        self._words_sent: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._speaker: str | None = None
        self.not_live = 0
        self.stale = 0

    def _add(self, key: tuple[str, str], words: list[str], speaker: str | None,
             now: float, final: bool) -> None:
        done = self._words_sent.get(key, 0)
        new = words[done:]
        if final:
            self._words_sent.pop(key, None)
        else:
            self._words_sent[key] = done + len(new)
            while len(self._words_sent) > SEEN_LINES:
                self._words_sent.popitem(last=False)
        if not new and not final:
            return
        if new:
            if done == 0 and speaker and speaker != self._speaker:
                if self.rows and self.rows[-1]:
                    self.rows.append("")
                new = [_SPEAKER_MARK.strip(), f"{speaker}:"] + new
                self._speaker = speaker
            for word in new:
                before = list(self.rows)
                wrap_words(self.rows, [word])
                excess = len([r for r in self.rows if r]) - ROLLUP_ROWS
                if excess > 0:
                    # The top row scrolls away: it must have been shown complete first.
                    self.rows, after = before, self.rows
                    self._queue(now, False)
                    self.rows = after
                    cut = len(self.rows) - ROLLUP_ROWS
                    del self.rows[:cut]
                    self.first_row += cut
        self._queue(now, final)

    def _queue(self, now: float, final: bool) -> None:
        visible = [r for r in self.rows if r][-ROLLUP_ROWS:]
        text = "\n".join(visible)
        first = self.first_row + (len(self.rows) - len(visible))
        tail = self.pending[-1] if self.pending else None
        if tail is not None and tail.first_row == first:
            tail.text = text  # same top row: the newer state shows everything the older did
        else:
            tail = _CaptionState(first, text, now)
            self._push(tail)
        if final:
            tail.arrived.append(now)
            tail.lines += 1

    def on_final(self, final: Final) -> None:
        self._add(final.key, final.text.split(), final.speaker, final.arrived, True)

    def on_stable(self, key: tuple[str, str], text: str, stable: int,
                  speaker: str | None, now: float) -> None:
        stable = max(0, min(stable, len(text)))
        if stable == 0:
            return
        prefix = text[:stable]
        words = prefix.split()
        if words and stable < len(text) and not text[stable].isspace() \
                and not prefix[-1].isspace():
            words = words[:-1]  # the last word may still grow
        if words:
            self._add(key, words, speaker, now, False)

    def has_work(self) -> bool:
        return bool(self.pending)

    def build(self, now: float, wall: float) -> Send | None:
        # Captions held back (OBS down, or not reachable) longer than OBS_MAX_AGE_S would only
        # confuse viewers of a live stream: skip to the newest ones (the lines stay stored).
        while len(self.pending) > 1 and now - self.pending[0].created > OBS_MAX_AGE_S:
            self.pending.popleft()
            self.stale += 1
        state = self.pending[0]
        return Send("caption", text=state.text, lines=state.lines, arrived=tuple(state.arrived))

    def done(self, send: Send, answer: bytes, wall: float, sent_wall: float) -> None:
        if self.pending:
            self.pending.popleft()

    def skipped(self, send: Send, now: float) -> None:
        self.not_live += 1
        super().skipped(send, now)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "not_live": self.not_live, "stale": self.stale}


def obs_auth(password: str, salt: str, challenge: str) -> str:
    """obs-websocket v5's ``authentication`` string:
    ``base64(sha256(base64(sha256(password + salt)) + challenge))``."""
    secret = base64.b64encode(hashlib.sha256((password + salt).encode()).digest()).decode()
    return base64.b64encode(hashlib.sha256((secret + challenge).encode()).digest()).decode()


# -- YouTube Live: HTTP caption ingestion ----------------------------------------------------


#: The time format of YouTube's caption ingestion, to the second (milliseconds follow).
_YOUTUBE_TIME = "%Y-%m-%dT%H:%M:%S"


def youtube_time(wall: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmm`` in UTC."""
    ms = int(round(wall * 1000))
    at = dt.datetime.fromtimestamp(ms // 1000, dt.timezone.utc)
    return at.strftime(_YOUTUBE_TIME) + f".{ms % 1000:03d}"


def parse_youtube_time(text: str) -> float | None:
    """The server time a YouTube ingestion POST answers with (Unix seconds), or None."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    try:
        base, _, frac = first.partition(".")
        at = dt.datetime.strptime(base, _YOUTUBE_TIME).replace(tzinfo=dt.timezone.utc)
        seconds = int(at.timestamp())
    except ValueError:
        return None
    digits = "".join(c for c in frac if c.isdigit())[:6]
    return seconds + (int(digits) / 10 ** len(digits) if digits else 0.0)


def youtube_body(cues: list[tuple[float, str]]) -> bytes:
    """The POST body: per cue, its time and ``region:reg1#cue1``, then its text (line breaks
    as ``<br>``); ends with a newline."""
    out = []
    for wall, text in cues:
        out.append(f"{youtube_time(wall)} region:reg1#cue1\n{text.replace(chr(10), '<br>')}\n")
    return "".join(out).encode("utf-8")


class YouTubePlanner(Planner):
    """Posts final lines with ``seq`` rising by one per new post (not on retries).

    The first post is empty: YouTube answers every post with its time, which sets the clock
    offset (re-measured on every answer). Cue times are when the line was first seen,
    corrected by the offset and held within :data:`YOUTUBE_MAX_AGE_S` of the server's now.
    """

    kind = "youtube"

    def __init__(self, spec: OutputSpec) -> None:
        super().__init__(spec)
        self.seq = 0
        self.offset_s: float | None = None
        self._inflight: Send | None = None

    def has_work(self) -> bool:
        return bool(self.pending) or self.offset_s is None

    def build(self, now: float, wall: float) -> Send | None:
        if self._inflight is not None:
            return self._inflight  # a retry: same seq, same body
        self.seq += 1
        if self.offset_s is None:
            send = Send("post", body=b"", content_type="text/plain",
                        query=(("seq", str(self.seq)),), purpose="clock")
        else:
            batch: list[Final] = list(self.pending)[:YOUTUBE_MAX_CUES]
            server_now = wall + self.offset_s
            cues, floor = [], server_now - YOUTUBE_MAX_AGE_S
            for f in batch:
                stamp = max(floor, min(server_now, f.first_seen_wall + self.offset_s))
                floor = stamp  # cue times never go backwards
                cues.append((stamp, self._label(f.speaker, f.text)))
            send = Send("post", body=youtube_body(cues), content_type="text/plain",
                        query=(("seq", str(self.seq)),), lines=len(batch),
                        arrived=tuple(f.arrived for f in batch))
        self._inflight = send
        return send

    def done(self, send: Send, answer: bytes, wall: float, sent_wall: float) -> None:
        self._inflight = None
        server = parse_youtube_time(answer.decode("utf-8", "replace"))
        if server is not None:
            # The answer was made between sending and receiving: take the middle.
            self.offset_s = server - (sent_wall + wall) / 2
        elif self.offset_s is None:
            self.offset_s = 0.0  # no time in the answer: trust our clock
        super().done(send, answer, wall, sent_wall)

    def skipped(self, send: Send, now: float) -> None:
        self._inflight = None
        super().skipped(send, now)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "seq": self.seq,
                "clock_offset_s": None if self.offset_s is None else round(self.offset_s, 3)}


# -- Zoom: the meeting's caption URL (API token) ---------------------------------------------


def parse_zoom_seq(answer: bytes) -> int | None:
    """The last sequence number Zoom's ``/closedcaption/seq`` GET answers, or None."""
    text = answer.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        value = data.get("seq") if isinstance(data, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return int(text) if text.isdigit() else None


class ZoomPlanner(Planner):
    """Posts final lines as plain text with ``seq`` and ``lang``; the sequence goes on from
    the last one Zoom accepted (asked once with a GET of ``<path>/seq``: a restarted daemon
    posting into the same meeting continues it)."""

    kind = "zoom"

    def __init__(self, spec: OutputSpec) -> None:
        super().__init__(spec)
        self.seq: int | None = None
        self._inflight: Send | None = None

    def has_work(self) -> bool:
        return bool(self.pending) or self.seq is None

    def build(self, now: float, wall: float) -> Send | None:
        if self._inflight is not None:
            return self._inflight
        if self.seq is None:
            send = Send("get", path="/seq", purpose="seq")
        else:
            batch: list[Final] = list(self.pending)[:ZOOM_MAX_LINES]
            text = "\n".join(self._label(f.speaker, f.text) for f in batch) + "\n"
            send = Send("post", body=text.encode("utf-8"),
                        content_type="text/plain; charset=utf-8",
                        query=(("seq", str(self.seq + 1)), ("lang", self.spec.lang)),
                        lines=len(batch), arrived=tuple(f.arrived for f in batch))
        self._inflight = send
        return send

    def done(self, send: Send, answer: bytes, wall: float, sent_wall: float) -> None:
        self._inflight = None
        if send.purpose == "seq":
            self.seq = parse_zoom_seq(answer) or 0
            return
        self.seq = (self.seq or 0) + 1
        super().done(send, answer, wall, sent_wall)

    def seq_unknown(self) -> None:
        """Zoom has no sequence to tell (no post yet, or no such query): start from 1."""
        self._inflight = None
        self.seq = 0
        self.failures = 0
        self.retry_at = float("-inf")

    def skipped(self, send: Send, now: float) -> None:
        self._inflight = None
        super().skipped(send, now)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "seq": self.seq}


# -- Webhook: a JSON POST per final line -----------------------------------------------------

#: The header that carries the signature: ``sha256=<hex HMAC-SHA256 of the body>``.
SIGNATURE_HEADER = "X-Captiond-Signature-256"


def webhook_body(final: Final) -> bytes:
    return json.dumps({
        "type": "line", "session": final.session, "item_id": final.item_id,
        "channel": final.channel, "track": final.track, "speaker": final.speaker,
        "start_ms": final.start_ms, "end_ms": final.end_ms, "text": final.text,
    }, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(key: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookPlanner(Planner):
    """One JSON POST per final line, signed with HMAC-SHA256 when a key is configured."""

    kind = "webhook"

    def __init__(self, spec: OutputSpec, key: str = "") -> None:
        super().__init__(spec)
        self._key = key

    def build(self, now: float, wall: float) -> Send | None:
        final: Final = self.pending[0]
        body = webhook_body(final)
        headers = ((SIGNATURE_HEADER, sign(self._key, body)),) if self._key else ()
        return Send("post", body=body, content_type="application/json", headers=headers,
                    lines=1, arrived=(final.arrived,))


def planner_for(spec: OutputSpec, key: str = "") -> Planner:
    if spec.kind == "obs":
        return ObsPlanner(spec)
    if spec.kind == "youtube":
        return YouTubePlanner(spec)
    if spec.kind == "zoom":
        return ZoomPlanner(spec)
    return WebhookPlanner(spec, key)
