"""The daemon: owns the store, the session, the services around it, signals and shutdown.

Start order: config -> store (migrated; sessions a dead daemon left ``running`` become
``interrupted``) -> sources and engines -> services (terminal view, and whatever else is
configured) -> capture. Shutdown order (first SIGINT/SIGTERM): stop capture, finish the
utterance in flight, wait (bounded) for the last results, flush the store, close services.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from captiond.audio.sources import SourceSpec, open_source, parse_source
from captiond.config import Config
from captiond.engines.factory import build_engine
from captiond.errors import AudioError
from captiond.events import LineStatus, LineUpdate, UpdateKind
from captiond.feed import Feed
from captiond.pipeline import Session, Stream
from captiond.transcript.echo import EchoGuard
from captiond.transcript.store import Store, redact_url

log = logging.getLogger("captiond.daemon")

#: Seconds a service gets to close at shutdown.
SERVICE_CLOSE_TIMEOUT_S = 5.0


#: Channel names of the two-sided call (``--source mic+system``).
MIC_CHANNEL = "mic"
SYSTEM_CHANNEL = "system"
#: Sources one session may capture at once.
MAX_STREAMS = 4


@dataclass(frozen=True)
class StreamPlan:
    spec: SourceSpec
    channel: str = ""
    speaker: str | None = None


def plan_streams(text: str, *, me: str = "Me", them: str = "Them") -> list[StreamPlan]:
    """``--source`` to streams. One source: one unlabelled stream (as before). Several joined
    with ``+`` (``mic+system``, ``mic:DEV+system:SINK``): one stream each, channel named after
    the kind ("mic", "system"; a repeated kind gets a number: "mic2"), the mic labelled ``me``
    and the system audio ``them``; other kinds are labelled with their channel name."""
    parts = [p.strip() for p in text.split("+")]
    if len(parts) == 1:
        return [StreamPlan(parse_source(parts[0]))]
    if any(not p for p in parts):
        raise AudioError(f"empty source in '{text}' (join sources with +, e.g. mic+system)")
    if len(parts) > MAX_STREAMS:
        raise AudioError(f"'{text}' names {len(parts)} sources; at most {MAX_STREAMS} at once")
    plans: list[StreamPlan] = []
    seen: dict[str, int] = {}
    for part in parts:
        spec = parse_source(part)
        if spec.kind == "stdin":
            raise AudioError("stdin cannot be one of several sources (use it alone)")
        seen[spec.kind] = seen.get(spec.kind, 0) + 1
        channel = spec.kind if seen[spec.kind] == 1 else f"{spec.kind}{seen[spec.kind]}"
        speaker = {MIC_CHANNEL: me, SYSTEM_CHANNEL: them}.get(channel, channel)
        plans.append(StreamPlan(spec, channel, speaker))
    return plans


def format_clock(ms: int) -> str:
    s = max(0, ms) // 1000
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class TerminalView:
    """Finals as lines on ``out``; on a terminal, the partial being spoken on one live line."""

    def __init__(self, out: TextIO, *, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self._partial_shown = False

    def __call__(self, update: LineUpdate) -> None:
        line = update.line
        if line.track != "original":
            return
        who = f"{line.speaker}: " if line.speaker else ""
        if line.status is LineStatus.FINAL and update.kind is not UpdateKind.REMOVED:
            if line.text:
                self._clear()
                self.out.write(f"[{format_clock(line.audio_start_ms)}] {who}{line.text}\n")
                self.out.flush()
        elif update.kind is UpdateKind.REMOVED:
            self._clear()
        elif self.live and line.status is LineStatus.PARTIAL and line.text:
            width = 100
            with contextlib.suppress(OSError):
                width = os.get_terminal_size(self.out.fileno()).columns - 1
            text = f"… {who}{line.text}"
            if len(text) > width:
                text = "…" + text[-(width - 1) :]
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._partial_shown = True

    def _clear(self) -> None:
        if self._partial_shown:
            self.out.write("\r\033[K")
            self._partial_shown = False


#: A service around the session: ``factory(daemon) -> (start, close)``, or None when the
#: config does not want it. Factories run after the store is open, before capture starts.
ServiceFactory = Callable[
    ["Daemon"], tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]] | None
]


def default_services() -> list[ServiceFactory]:
    """What ``captiond run`` starts around a session, in start order."""
    from captiond.exports.live import live_service
    from captiond.overlay.service import overlay_service

    return [live_service, overlay_service]


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        realtime: bool = True,
        title: str | None = None,
        out: TextIO | None = None,
        view: Callable[[LineUpdate], None] | None = None,
        services: list[ServiceFactory] | None = None,
    ) -> None:
        self.cfg = cfg
        self.realtime = realtime
        self.title = title
        self.out = out if out is not None else sys.stdout
        self.view = view if view is not None else TerminalView(self.out)
        self.feed = Feed()
        self.store: Store | None = None
        self.session: Session | None = None
        self.services = default_services() if services is None else services
        #: Extra HTTP routes the overlay server mounts (the JSON API), set once the store is open.
        self.http_handlers: dict[str, Any] = {}
        self._signals = 0
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def build_streams(self) -> list[Stream]:
        """One stream per source: ``mic+system`` gives a "mic" (Me) and a "system" (Them)
        stream, each with its own engine (the local model is shared); a single source keeps
        the unlabelled channel."""
        plans = plan_streams(
            self.cfg["audio.source"], me=self.cfg["call.me_label"], them=self.cfg["call.them_label"]
        )
        from captiond.engines.translate import build_translators

        # Live translation (translate.targets), per stream, so each side of a call is translated
        # on its own channel. Built before any source opens: a missing key fails fast.
        translators = {
            plan.channel: build_translators(self.cfg, channel=plan.channel, realtime=self.realtime)
            for plan in plans
        }
        streams: list[Stream] = []
        try:
            for plan in plans:
                source = open_source(
                    plan.spec,
                    realtime=self.realtime,
                    rate=self.cfg["audio.rate"],
                    channels=self.cfg["audio.channels"],
                    block_ms=self.cfg["audio.block_ms"],
                )
                engine = build_engine(self.cfg, channel=plan.channel, realtime=self.realtime)
                streams.append(Stream(source, engine, plan.channel, plan.speaker,
                                      translators=translators[plan.channel]))
        except BaseException:
            # A later source failed: do not leave the earlier ones capturing.
            for stream in streams:
                with contextlib.suppress(Exception):
                    asyncio.run(stream.source.close())
            raise
        return streams

    def echo_guard(self, streams: list[Stream]) -> EchoGuard | None:
        """The echo guard, when configured and the session has a mic and a system channel."""
        channels = {s.channel for s in streams}
        if not self.cfg["call.echo_guard"] or not {MIC_CHANNEL, SYSTEM_CHANNEL} <= channels:
            return None
        return EchoGuard(
            MIC_CHANNEL,
            SYSTEM_CHANNEL,
            window_ms=int(self.cfg["call.echo_window_s"] * 1000),
            threshold=self.cfg["call.echo_similarity"],
        )

    def stats(self) -> dict[str, Any]:
        return self.session.stats() if self.session else {}

    async def run(self) -> int:
        """Run one session to its end; returns its id."""
        url = self.cfg.database_url()
        self.store = await asyncio.to_thread(Store.open, url)
        log.info("store.opened url=%s", redact_url(url))
        from captiond.api import api_handler

        self.http_handlers = {"/api/": api_handler(self.store, self.stats)}
        stale = await asyncio.to_thread(self.store.mark_interrupted)
        if stale:
            log.warning("store.interrupted_sessions ids=%s", ",".join(map(str, stale)))
        streams = await asyncio.to_thread(self.build_streams)
        self.session = Session(
            self.store,
            streams,
            feed=self.feed,
            realtime=self.realtime,
            queue_s=self.cfg["audio.queue_s"],
            title=self.title,
            language=self.cfg["engine.language"] or None,
            on_update=self.view,
            guard=self.echo_guard(streams),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            for factory in self.services:
                made = factory(self)
                if made is None:
                    continue
                start, close = made
                await start()
                self._closers.append(close)
            return await self.session.run()
        finally:
            for close in reversed(self._closers):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), SERVICE_CLOSE_TIMEOUT_S)
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await asyncio.to_thread(self.store.close)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1 and self.session is not None:
            log.info("daemon.stopping signal=%s", signal.Signals(sig).name)
            self.session.stop()
            return
        log.warning("daemon.forced_exit signal=%s", signal.Signals(sig).name)
        os._exit(130)
