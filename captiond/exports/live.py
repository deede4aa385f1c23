"""Subtitle files kept up to date while a session runs (``export.live``).

:class:`LiveSubtitles` subscribes to the caption :class:`~captiond.feed.Feed`, keeps the final
lines of one session and track, and rewrites its ``.srt``/``.vtt`` files when finals arrive —
at most once per ``interval_s``, each time atomically (temporary file, then ``os.replace``), so
a player or OBS reading the file never sees half of it.

It starts from the lines already in the store (a restarted daemon, or a writer started late),
then follows the feed. The feed carries no word timings, so lines that arrive through it are
split proportionally; ``captiond export`` after the meeting uses the stored word timings.
If the writer falls so far behind that the feed cuts it off, it re-reads the store and goes on.

Given no session id, it follows the session the feed announces (``{"type": "session",
"event": "started"}``), and file names may hold ``{session}``: that is how the daemon runs it,
since its services start before the session exists. :func:`live_service` is one of
:func:`captiond.daemon.default_services`; by hand::

    live = live_from_config(cfg, store, None, feed=feed, title=title)  # None if off
    if live is not None:
        tg.create_task(live.run())
    ...
    live.close()          # idempotent; run() writes what is pending and returns

Each rewrite re-times every cue (segmentation is cached per line): about 0.1 s for an
eight-hour session, done in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captiond.errors import CaptiondError
from captiond.events import ORIGINAL, LineStatus, UpdateKind
from captiond.exports.cues import (
    Chunk,
    CueLimits,
    SourceLine,
    order_chunks,
    segment_line,
    time_chunks,
)
from captiond.exports.files import atomic_write
from captiond.exports.subtitles import iter_srt, iter_vtt
from captiond.feed import Feed, Subscription

if TYPE_CHECKING:
    from captiond.services import ServiceContext

log = logging.getLogger("captiond.live_subtitles")

#: Default least time between two rewrites of the files.
LIVE_INTERVAL_S = 2.0
#: How long the final write at shutdown may take before it is abandoned.
CLOSE_WRITE_TIMEOUT_S = 10.0
#: Lines kept at most (an eight-hour meeting has ~10,000); past it the oldest are dropped
#: from the live files (the export from the store still has them).
MAX_LINES = 100_000

LineKey = tuple[str, str]  # (channel, item_id)
LinesSource = Callable[[int], Iterable[Any]]


#: Stands for the session id in live file names until the session is known.
SESSION_PLACEHOLDER = "{session}"


def live_paths(cfg: Mapping[str, Any], session_id: int | None) -> list[Path]:
    """``<export.dir>/session-<id>.<fmt>`` for each of ``export.live_formats`` (with
    :data:`SESSION_PLACEHOLDER` for the id when ``session_id`` is None)."""
    folder = cfg["export.dir"]
    if folder:
        base = Path(folder).expanduser()
    else:
        base = cfg.data_dir() / "subtitles"  # type: ignore[attr-defined]
    formats = [f.strip() for f in str(cfg["export.live_formats"]).split(",") if f.strip()]
    sid = SESSION_PLACEHOLDER if session_id is None else str(session_id)
    return [base / f"session-{sid}.{fmt}" for fmt in formats]


def live_from_config(cfg: Mapping[str, Any], source: Any, session_id: int | None, *, feed: Feed,
                     title: str = "") -> LiveSubtitles | None:
    """The writer the settings ask for (``export.live``), or None when it is off."""
    if not cfg["export.live"]:
        return None
    return LiveSubtitles(
        source,
        session_id,
        live_paths(cfg, session_id),
        feed=feed,
        limits=CueLimits.from_settings(cfg),
        interval_s=float(cfg["export.live_interval_s"]),
        title=title,
    )


def live_service(ctx: ServiceContext) -> LiveService | None:
    """A daemon service factory: the live writer when ``export.live`` is on.

    Uses the context's ``cfg``, ``store``, ``feed`` and ``title``; follows the session the
    daemon starts."""
    live = live_from_config(ctx.cfg, ctx.store, None, feed=ctx.feed, title=ctx.title or "")
    return LiveService(live) if live is not None else None


class LiveService:
    """:class:`LiveSubtitles` as a service: ``start`` runs it, ``close`` stops it and waits
    (bounded) for its last write."""

    def __init__(self, live: LiveSubtitles) -> None:
        self.live = live
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.live.run(), name="live-subtitles")

    async def close(self) -> None:
        self.live.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, CLOSE_WRITE_TIMEOUT_S)


class LiveSubtitles:
    """Rewrites the subtitle files of a session from feed messages. See the module docstring.

    ``source`` is a :class:`~captiond.transcript.store.Store` (its final lines seed the files),
    a callable ``session_id -> lines`` with the same attributes, or None. ``session_id`` None:
    follow the session the feed announces; ``{session}`` in ``paths`` becomes its id.
    """

    def __init__(
        self,
        source: Any,
        session_id: int | None,
        paths: Sequence[Path | str],
        *,
        feed: Feed,
        limits: CueLimits | None = None,
        interval_s: float = LIVE_INTERVAL_S,
        track: str = ORIGINAL,
        title: str = "",
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.session_id = session_id
        self._follow = session_id is None
        self._templates = [str(p) for p in paths]
        for p in map(Path, self._templates):
            if p.suffix not in (".srt", ".vtt"):
                raise ValueError(f"live subtitle file {p} must end in .srt or .vtt")
        self.feed = feed
        self.limits = limits or CueLimits()
        self.interval_s = interval_s
        self.track = track
        self.title = title
        self._source = source
        self._lines: dict[LineKey, SourceLine] = {}
        self._chunks: dict[LineKey, list[Chunk]] = {}
        self._sub: Subscription | None = None
        self._closing = asyncio.Event()
        self._closed = False
        self._dirty = False
        self._need_seed = False
        self._last_write = float("-inf")
        #: Rewrites done (all files each time), and the last write error, for status pages.
        self.writes = 0
        self.last_error: str | None = None
        self.resubscribed = 0

    @property
    def paths(self) -> list[Path]:
        """The files for the current session (none until the session is known)."""
        if self.session_id is None:
            return []
        sid = str(self.session_id)
        return [Path(t.replace(SESSION_PLACEHOLDER, sid)) for t in self._templates]

    # -- the state (synchronous, on the loop) --------------------------------------------

    def _lines_from_source(self) -> list[Any]:
        if self._source is None or self.session_id is None:
            return []
        if hasattr(self._source, "lines"):
            return list(self._source.lines(self.session_id, track=self.track))
        return list(self._source(self.session_id))

    def _seed(self, rows: Iterable[Any]) -> None:
        for row in rows:
            status = getattr(row, "status", "final")
            if str(getattr(status, "value", status)) != LineStatus.FINAL.value:
                continue
            if (getattr(row, "track", ORIGINAL) or ORIGINAL) != self.track:
                continue
            key = (getattr(row, "channel", "") or "", str(row.item_id))
            self._put(key, SourceLine.from_row(row))

    def _put(self, key: LineKey, line: SourceLine) -> None:
        old = self._lines.get(key)
        if old is not None and old.text == line.text and old.start_ms == line.start_ms \
                and old.end_ms == line.end_ms:
            return  # same final again (keeps word timings from the store)
        self._lines[key] = line
        self._chunks[key] = segment_line(line, self.limits)
        self._dirty = True
        if len(self._lines) > MAX_LINES:
            oldest = min(self._lines, key=lambda k: self._lines[k].start_ms)
            del self._lines[oldest]
            del self._chunks[oldest]

    def apply(self, message: Mapping[str, Any]) -> None:
        """Take one feed message (see :mod:`captiond.feed`); others' sessions are ignored."""
        if message.get("type") == "session":
            if message.get("event") == "started" and self._follow:
                self._adopt(message.get("session"))
            return
        if message.get("type") != "line" or self.session_id is None:
            return
        if message.get("session") not in (None, self.session_id):
            return
        if (message.get("track") or ORIGINAL) != self.track:
            return
        key = (message.get("channel") or "", str(message.get("item_id")))
        gone = message.get("event") == UpdateKind.REMOVED.value or message.get(
            "status") == LineStatus.FAILED.value
        if gone or not str(message.get("text") or "").strip():
            if key in self._lines and message.get("status") != LineStatus.PARTIAL.value:
                del self._lines[key]
                del self._chunks[key]
                self._dirty = True
            return
        if message.get("status") != LineStatus.FINAL.value:
            return
        self._put(key, SourceLine(
            start_ms=int(message.get("start_ms") or 0),
            end_ms=int(message.get("end_ms") or 0),
            text=str(message["text"]),
            speaker=message.get("speaker"),
            track=self.track,
            channel=key[0],
        ))

    def _adopt(self, session: Any) -> None:
        """Follow a newly started session (after writing the last one's pending lines)."""
        if not isinstance(session, int) or session == self.session_id:
            return
        if self.session_id is not None and self._dirty:
            self._write_now()  # rare: a second session in the same daemon
        log.info("live_subtitles.session id=%s", session)
        self.session_id = session
        self._lines.clear()
        self._chunks.clear()
        self._dirty = True
        self._need_seed = self._source is not None

    def _drain(self) -> None:
        if self._sub is None:
            return
        while (message := self._sub.get_nowait()) is not None:
            self.apply(message)

    def _snapshot(self) -> list[Chunk]:
        return [chunk for chunks in self._chunks.values() for chunk in chunks]

    # -- the files -------------------------------------------------------------------------

    def _write_files(self, chunks: list[Chunk], paths: list[Path]) -> None:
        """Time the chunks and write every file (runs in a worker thread)."""
        cues = time_chunks(order_chunks(chunks), self.limits)
        # Lines carry speakers only in a session of several channels (mic+system: Me/Them).
        speakers = any(chunk.speaker for chunk in chunks)
        for path in paths:
            if path.suffix == ".srt":
                atomic_write(path, iter_srt(cues, speakers=speakers))
            else:
                atomic_write(path, iter_vtt(cues, header=self.title, speakers=speakers))

    async def _write(self) -> None:
        if self.session_id is None:
            return  # nothing to write to yet
        chunks = self._snapshot()
        self._dirty = False
        self._last_write = time.monotonic()
        try:
            await asyncio.to_thread(self._write_files, chunks, self.paths)
        except CaptiondError as exc:
            self._dirty = True  # try again at the next interval
            if self.last_error != str(exc):
                log.error("live_subtitles.write_failed error=%r", str(exc))
            self.last_error = str(exc)
            return
        self.writes += 1
        self.last_error = None

    def _write_now(self) -> None:
        try:
            self._write_files(self._snapshot(), self.paths)
            self._dirty = False
            self.writes += 1
        except CaptiondError as exc:
            log.error("live_subtitles.final_write_failed error=%r", str(exc))
            self.last_error = str(exc)

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the feed until :meth:`close` (or the feed closes); writes what is pending
        before returning, also when cancelled."""
        if self._closed:
            return
        self._sub = self.feed.subscribe("live-subtitles")
        if self._follow:  # a session that started before we subscribed
            for message in self.feed.snapshot():
                if message.get("type") == "session":
                    self.apply(message)
        log.info("live_subtitles.start session=%s files=%s", self.session_id,
                 ",".join(self._templates))
        try:
            if self.session_id is not None:
                self._need_seed = False
                self._seed(await asyncio.to_thread(self._lines_from_source))
                await self._write()  # the files exist from the start, even if still empty
            while not self._closed:
                try:
                    message = await self._sub.get()
                except EOFError:
                    if self._sub.overflowed and not self._closed:
                        await self._resubscribe()
                        continue
                    break
                self.apply(message)
                self._drain()
                if self._need_seed:
                    self._need_seed = False
                    self._seed(await asyncio.to_thread(self._lines_from_source))
                wait = self._last_write + self.interval_s - time.monotonic()
                if wait > 0:
                    try:
                        async with asyncio.timeout(wait):
                            await self._closing.wait()
                    except TimeoutError:
                        pass
                    self._drain()
                if self._dirty:
                    await self._write()
        finally:
            if self._sub is not None:
                self._sub.close()
            if self._dirty:
                self._write_now()
            log.info("live_subtitles.stop session=%s writes=%d", self.session_id, self.writes)

    async def _resubscribe(self) -> None:
        # Cut off by the feed for reading too slowly: start over from the store.
        self.resubscribed += 1
        log.warning("live_subtitles.resubscribe reason=overflow session=%s", self.session_id)
        self._sub = self.feed.subscribe("live-subtitles")
        self._seed(await asyncio.to_thread(self._lines_from_source))
        self._dirty = True

    def close(self) -> None:
        """Stop following the feed; :meth:`run` writes pending lines and returns. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._sub is not None:
            self._sub.close()
