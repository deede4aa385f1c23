"""One captioning session: sources -> resampler -> engine -> reconciler -> store + feed.

A session has one or more *streams* (one per channel: the microphone, the system audio). Each
stream owns its source, resampler, engine and reconciler; all streams share the store writer
and the feed. Tasks are owned by one :class:`asyncio.TaskGroup`; shutdown order lives in
:meth:`Session.run`:

1. the sources end (end of file) or are closed (:meth:`Session.stop`);
2. each engine commits the utterance in flight and waits for its last results (bounded by
   the engine's own drain timeout);
3. items whose predecessor never came are settled, the writer flushes, the session row is
   closed as ``completed`` (a crash leaves it ``running``; the next start marks it
   ``interrupted``).

The capture side never waits for the engine when the source is live (a microphone, a system
monitor, a file paced in real time, stdin declared live): audio goes through a bounded queue
(``audio.queue_s``) and what does not fit is recorded as one gap per outage (adjacent lost
blocks merge). Every other source (a pipe on stdin, a file read ``--fast``) can wait, so the
queue applies back-pressure instead and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from captiond.audio.block import AudioBlock
from captiond.audio.resample import Resampler
from captiond.audio.segmenter import segmenter_params  # noqa: F401  (re-exported: it was here)
from captiond.audio.sources import Source
from captiond.engines.base import Engine
from captiond.events import LineStatus, LineUpdate, TranscriptEvent
from captiond.feed import Feed
from captiond.transcript.reconciler import Reconciler
from captiond.transcript.store import Store
from captiond.transcript.writer import StoreWriter

log = logging.getLogger("captiond.pipeline")

#: How long shutdown waits for the store to write the last lines.
FLUSH_TIMEOUT_S = 10.0
#: What an overflow warning tells the user to do.
OVERFLOW_ADVICE = (
    "the engine is slower than real time: use a smaller local.model, more local.threads or "
    "--engine openai; a recording is better read with --fast or piped to stdin without "
    "--stdin-live, which waits for the engine instead of dropping audio"
)
#: Gaps closer than this to the last one logged (same stream, same reason) are one stretch.
GAP_LOG_JOIN_MS = 1_000
_END = object()


@dataclass
class Stream:
    """One channel of a session."""

    source: Source
    engine: Engine
    channel: str = ""
    speaker: str | None = None
    reconciler: Reconciler = field(init=False)
    #: Translation engines fed the same audio; each writes lines on its own track.
    translators: list[Any] = field(default_factory=list)
    #: The translators being fed now (a live reload adds and ends some), and the task group
    #: that runs them while the stream runs.
    tees: list[_Tee] = field(default_factory=list, init=False)
    group: asyncio.TaskGroup | None = field(default=None, init=False)
    captured_s: float = 0.0
    gaps: int = 0
    #: The source may drop audio the engine cannot take (set when the stream starts).
    live: bool = True
    done: bool = False
    #: Audio blocks a translator could not take (its queue was full), by track.
    translate_dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(
            channel=self.channel, speaker=self.speaker, engine=self.engine.name
        )

    def engines(self) -> list[Any]:
        return [self.engine, *self.translators]


class _Tee:
    """A translator's bounded audio queue (``queue_s`` of audio, like the engine's)."""

    def __init__(self, engine: Any, queue_s: float) -> None:
        self.engine = engine
        self.queue: asyncio.Queue[Any] = asyncio.Queue(max(8, int(queue_s / 0.032)))
        self.finished = False

    async def end(self) -> None:
        if not self.finished:
            await self.queue.put(_END)

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            yield item


class Session:
    """Runs streams into one stored session. Create, then ``await run()``; ``stop()`` ends it."""

    def __init__(
        self,
        store: Store,
        streams: list[Stream],
        *,
        feed: Feed | None = None,
        realtime: bool = True,
        queue_s: float = 30.0,
        title: str | None = None,
        language: str | None = None,
        on_update: Callable[[LineUpdate], None] | None = None,
        guard: Callable[[LineUpdate], list[LineUpdate]] | None = None,
        keep_audio: Callable[[int, list[str]], Any] | None = None,
    ) -> None:
        """``guard`` (the echo guard) may replace each update with others before delivery;
        ``keep_audio(session_id, channels)`` opens the session's kept audio
        (:class:`captiond.audio.keep.AudioKeeper`), when it is kept."""
        self.store = store
        self.streams = streams
        self.feed = feed or Feed()
        self.realtime = realtime
        self.queue_s = queue_s
        self.title = title
        self.language = language
        self.on_update = on_update
        self.guard = guard
        self.keep_audio = keep_audio
        #: The session's kept audio (an AudioKeeper), while it is written.
        self.keeper: Any = None
        self.session_id: int | None = None
        self.writer: StoreWriter | None = None
        self.started = time.monotonic()
        self.finals = 0
        self._stopping = asyncio.Event()
        self._observers: list[Callable[[LineUpdate], None]] = []
        self._gap_logged: dict[tuple[str, str], int] = {}  # (channel, reason) -> end_ms

    # -- public ------------------------------------------------------------------------------

    def add_observer(self, fn: Callable[[LineUpdate], None]) -> None:
        self._observers.append(fn)

    def stop(self) -> None:
        """Ask the session to end: capture stops, the audio in flight is finished (idempotent)."""
        self._stopping.set()

    def stats(self) -> dict[str, Any]:
        engines = [e.stats() for s in self.streams for e in s.engines()]
        return {
            "session": self.session_id,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "audio_s": round(max((s.captured_s for s in self.streams), default=0.0), 1),
            "finals": self.finals,
            "engines": engines,
            "lag_s": max((e.get("lag_s", 0.0) for e in engines), default=0.0),
            "dropped": sum(int(e.get("dropped", 0)) for e in engines),
            "cost_usd": round(sum(e.get("cost_usd", 0.0) for e in engines), 4),
            "viewers": self.feed.subscribers(),
            "store_errors": self.writer.errors if self.writer else 0,
        }

    async def run(self) -> int:
        """Capture until the sources end or :meth:`stop`; returns the session id."""
        engines = ",".join(sorted({s.engine.name for s in self.streams}))
        sources = " + ".join(s.source.description for s in self.streams)
        self.session_id = await asyncio.to_thread(
            self.store.begin_session,
            source=sources,
            engine=engines,
            language=self.language,
            title=self.title,
            meta={"channels": [s.channel for s in self.streams if s.channel]} or None,
        )
        self.writer = StoreWriter(self.store, self.session_id)
        if self.keep_audio is not None:
            try:
                # File and codec set-up and the retention sweep touch the disk: off the loop.
                self.keeper = await asyncio.to_thread(
                    self.keep_audio, self.session_id, [s.channel for s in self.streams])
            except Exception as exc:  # noqa: BLE001 - captions go on without the recording
                log.error("keep.unavailable error=%r (the session goes on; its audio is not "
                          "kept: check audio.keep_dir)", f"{type(exc).__name__}: {exc}")
        self.feed.publish(
            {"type": "session", "event": "started", "session": self.session_id, "title": self.title}
        )
        log.info("session.started id=%d source=%r engine=%s", self.session_id, sources, engines)
        status = "completed"
        try:
            async with asyncio.TaskGroup() as tg:
                for stream in self.streams:
                    tg.create_task(self._run_stream(stream), name=f"stream-{stream.channel}")
                tg.create_task(self._stop_watch(), name="stop-watch")
        except BaseException:
            status = "interrupted"
            raise
        finally:
            await self._finish(status)
        # A source that stopped early (a file damaged from some point on) ended its stream so
        # everything before was transcribed and stored; its error is reported now.
        for stream in self.streams:
            error = getattr(stream.source, "error", None)
            if isinstance(error, BaseException):
                raise error
        return self.session_id

    # -- internals ---------------------------------------------------------------------------

    async def _stop_watch(self) -> None:
        """Closes the sources when asked to stop, or returns once every stream has ended."""
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await stopper
        finally:
            stopper.cancel()
        for stream in self.streams:
            with contextlib.suppress(Exception):
                await stream.source.close()

    async def _run_stream(self, stream: Stream) -> None:
        block_s = 0.032
        capacity = max(8, int(self.queue_s / block_s))
        queue: asyncio.Queue[Any] = asyncio.Queue(capacity)
        resample = Resampler(stream.engine.sample_rate)
        emit = self._emitter(stream)
        stream.tees = [_Tee(t, self.queue_s) for t in stream.translators]
        stream.live = self.realtime and getattr(stream.source, "live", True)
        tee_resample: Resampler | None = None

        # Live sources lose audio the engine cannot take; the others wait for it.
        live = stream.live
        #: The outage being dropped now: [start_ms, end_ms] (stored once it ends).
        lost: list[int] | None = None

        def end_outage() -> None:
            nonlocal lost
            if lost is not None:
                log.warning("audio.overflow_ended channel=%s lost_s=%.1f", stream.channel,
                            (lost[1] - lost[0]) / 1000)
                self._record_gap(stream, lost[0], lost[1], "engine behind")
                lost = None

        async def capture() -> None:
            nonlocal tee_resample, lost
            next_start: int | None = None
            try:
                async for block in stream.source.blocks():
                    if self._stopping.is_set():
                        break
                    if next_start is not None and block.start > next_start:
                        # The source was away (device lost, sound server restarted).
                        stream.gaps += 1
                        self._record_gap(
                            stream,
                            next_start * 1000 // block.rate,
                            block.start_ms,
                            "source lost",
                        )
                    next_start = block.end
                    if self.keeper is not None:
                        self.keeper.feed(stream.channel, block)
                    out = resample(block)
                    stream.captured_s = block.end / block.rate
                    if stream.tees:
                        rate = stream.tees[0].engine.sample_rate
                        if rate == out.rate:
                            await self._tee(stream, stream.tees, out)
                        else:
                            if tee_resample is None or tee_resample.out_rate != rate:
                                tee_resample = Resampler(rate)
                            await self._tee(stream, stream.tees, tee_resample(block))
                    if not len(out.samples):
                        continue
                    if live:
                        try:
                            queue.put_nowait(out)
                            end_outage()
                        except asyncio.QueueFull:
                            if lost is None:
                                stream.gaps += 1
                                log.warning("audio.overflow channel=%s at=%.1fs (%s)",
                                            stream.channel, out.start_ms / 1000, OVERFLOW_ADVICE)
                                lost = [out.start_ms, out.end_ms]
                            else:
                                lost[1] = out.end_ms
                    else:
                        await queue.put(out)
                tail = resample.flush()
                if tail is not None and not self._stopping.is_set():
                    await queue.put(tail)
            finally:
                end_outage()
                if self.keeper is not None:
                    self.keeper.end(stream.channel)
                await queue.put(_END)
                for tee in list(stream.tees):
                    await tee.end()

        async def blocks() -> AsyncIterator[AudioBlock]:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item

        # Engines that lose audio themselves (the OpenAI engine's outage buffer) record gaps.
        stream.engine.set_gap_sink(
            lambda g: self._record_gap(stream, g.start_ms, g.end_ms, g.reason))
        # Engines that discard utterances (noise, hallucination guards) store why.
        stream.engine.set_drop_sink(lambda d: self._record_dropped(stream, d))
        async with asyncio.TaskGroup() as tg:
            stream.group = tg
            tg.create_task(capture(), name=f"capture-{stream.channel}")
            for tee in stream.tees:
                tg.create_task(self._run_translator(stream, tee),
                               name=f"translate-{stream.channel}-{tee.engine.track}")
            await stream.engine.run(blocks(), emit)
        stream.group = None
        for update in stream.reconciler.settle_orphans():
            self._deliver(self._stamp(stream, update))
        stream.done = True
        if all(s.done for s in self.streams):
            # Every source ended on its own (end of file): let the stop watcher return.
            self._stopping.set()

    async def retarget(self, stream: Stream, add: list[Any], remove: set[str]) -> bool:
        """Live reload of translation targets: end the translators of the ``remove`` tracks
        (their last words are flushed and stored) and start ``add`` on the same audio from
        now on. False when the stream is not running (nothing changed)."""
        group = stream.group
        if group is None or stream.done:
            return False
        for tee in [t for t in stream.tees if t.engine.track in remove]:
            stream.tees.remove(tee)
            await tee.end()
        for engine in add:
            tee = _Tee(engine, self.queue_s)
            stream.translators.append(engine)  # kept after it ends: its minutes cost money
            stream.tees.append(tee)
            group.create_task(self._run_translator(stream, tee),
                              name=f"translate-{stream.channel}-{engine.track}")
        return True

    async def _tee(self, stream: Stream, tees: list[_Tee], block: AudioBlock) -> None:
        """The same audio to every translator. Live: never waits (a full queue drops the
        block for that translator only); fast mode: back-pressure, unless it has stopped."""
        if not len(block.samples):
            return
        for tee in tees:
            if tee.finished:
                continue
            if stream.live:
                try:
                    tee.queue.put_nowait(block)
                except asyncio.QueueFull:
                    track = tee.engine.track
                    stream.translate_dropped[track] = stream.translate_dropped.get(track, 0) + 1
            else:
                await tee.queue.put(block)

    async def _run_translator(self, stream: Stream, tee: _Tee) -> None:
        """One translator on its own reconciler (track = its language). Whatever it raises is
        logged and ends the translation only: the source captions go on."""
        rec = Reconciler(channel=stream.channel, speaker=stream.speaker,
                         track=tee.engine.track, engine=tee.engine.name)

        def emit(event: TranscriptEvent) -> None:
            for update in rec.apply(event):
                self._deliver(update)

        tee.engine.set_gap_sink(
            lambda g: self._record_gap(stream, g.start_ms, g.end_ms, g.reason))
        try:
            await tee.engine.run(tee.blocks(), emit)
        except Exception as exc:  # noqa: BLE001 - a translation failure never stops captions
            log.error("translate.failed track=%s error=%s: %s", tee.engine.track,
                      type(exc).__name__, exc)
        finally:
            tee.finished = True
            while not tee.queue.empty():  # nobody reads it any more
                tee.queue.get_nowait()
        for update in rec.settle_orphans():
            self._deliver(update)

    def _emitter(self, stream: Stream) -> Callable[[TranscriptEvent], None]:
        def emit(event: TranscriptEvent) -> None:
            for update in stream.reconciler.apply(event):
                self._deliver(self._stamp(stream, update))

        return emit

    @staticmethod
    def _stamp(stream: Stream, update: LineUpdate) -> LineUpdate:
        """Lines name the engine that produced them (``--engine auto`` switches mid-run)."""
        engine_for = getattr(stream.engine, "engine_for", None)
        if engine_for is None:
            return update
        name = engine_for(update.line.item_id)
        if name == update.line.engine:
            return update
        return LineUpdate(update.kind, dataclasses.replace(update.line, engine=name),
                          update.session_id)

    def _deliver(self, update: LineUpdate) -> None:
        if self.guard is not None:
            for guarded in self.guard(update):
                self._deliver_one(guarded)
            return
        self._deliver_one(update)

    def _deliver_one(self, update: LineUpdate) -> None:
        update = LineUpdate(update.kind, update.line, self.session_id)
        if update.line.status is LineStatus.FINAL and update.line.text:
            self.finals += 1
        assert self.writer is not None
        self.writer.submit([update])
        self.feed.publish_updates([update])
        if self.on_update is not None:
            self.on_update(update)
        for fn in self._observers:
            fn(update)

    def _record_gap(self, stream: Stream, start_ms: int, end_ms: int, reason: str) -> None:
        # One log line per stretch of lost audio (an engine may report an outage piecewise).
        last = self._gap_logged.get((stream.channel, reason))
        if last is None or start_ms > last + GAP_LOG_JOIN_MS:
            log.warning("audio.gap channel=%s start_ms=%d end_ms=%d reason=%r",
                        stream.channel, start_ms, end_ms, reason)
        self._gap_logged[(stream.channel, reason)] = end_ms
        if self.writer is None or self.session_id is None:
            return
        sid = self.session_id
        self.writer.call(
            lambda store: store.add_gap(
                sid, channel=stream.channel, start_ms=start_ms, end_ms=end_ms, reason=reason
            )
        )

    def _record_dropped(self, stream: Stream, d: Any) -> None:
        if self.writer is None or self.session_id is None:
            return
        sid = self.session_id
        self.writer.call(
            lambda store: store.add_dropped(
                sid, channel=stream.channel, item_id=d.item_id, start_ms=d.start_ms,
                end_ms=d.end_ms, reason=d.reason, text=d.text,
            )
        )

    async def _finish(self, status: str) -> None:
        if self.writer is None or self.session_id is None:
            return
        writer = self.writer
        audio_s = max((s.captured_s for s in self.streams), default=0.0)
        cost = sum(e.stats().get("cost_usd", 0.0) for s in self.streams for e in s.engines())
        engines = ",".join(sorted({s.engine.name for s in self.streams}))
        sid = self.session_id
        writer.call(
            lambda store: store.end_session(
                sid, status=status, audio_seconds=audio_s, cost_usd=cost, engine=engines
            )
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(writer.flush()), FLUSH_TIMEOUT_S)
        await asyncio.to_thread(writer.close, FLUSH_TIMEOUT_S)
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            await asyncio.to_thread(keeper.close)
            if keeper.dropped_s:
                log.warning("keep.dropped session=%d seconds=%.1f (the encoder fell behind; "
                            "the kept audio has silence there)", sid, keeper.dropped_s)
            log.info("keep.closed session=%d path=%s seconds=%.1f", sid, keeper.path,
                     keeper.seconds)
        self.feed.publish({"type": "session", "event": "ended", "session": sid, "status": status})
        log.info("session.ended id=%d status=%s audio_s=%.1f finals=%d", sid, status, audio_s, self.finals)
