"""The daemon: owns the store, the session, the services around it, signals and shutdown.

Start order: config -> store (migrated; sessions a dead daemon left ``running`` become
``interrupted``) -> sources and engines -> services (terminal view, and whatever else is
configured) -> capture. Shutdown order (first SIGINT/SIGTERM): stop capture, finish the
utterance in flight, wait (bounded) for the last results, flush the store, close services.
A second signal exits at once.

Around that, the daemon is a good service: it tells systemd when it is ready, what it
is doing and that its loop is alive (:mod:`captiond.sdnotify`), answers ``captiond status`` on
its control socket (:mod:`captiond.control`; the reports are built in
:mod:`captiond.daemon_status`), and reloads its config file when it changes or on SIGHUP
(:mod:`captiond.daemon_reload` applies it; the pure :mod:`captiond.reload` decides what
applies live).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import captiond.audio.pipe  # noqa: F401  (registers --source pipe:PATH)
from captiond import reload as reload_module
from captiond.audio.sources import SourceSpec, open_source, parse_source
from captiond.audio.switch import SwitchableSource
from captiond.config import Config
from captiond.control import ControlServer, socket_path
from captiond.daemon_reload import LiveReload, _register_secrets
from captiond.daemon_status import DaemonStatus
from captiond.engines.factory import build_engine
from captiond.engines.switch import SwitchableEngine
from captiond.errors import AudioError
from captiond.events import LineUpdate
from captiond.feed import Feed, status_message
from captiond.outputs.service import OutputsService
from captiond.overlay.server import OverlayServer
from captiond.pipeline import Session, Stream
from captiond.sdnotify import Notifier
from captiond.services import ServiceContext, ServiceFactory
from captiond.transcript.echo import EchoGuard
from captiond.transcript.store import Store, redact_url
from captiond.view import TerminalView, format_clock  # noqa: F401  (re-exported)

log = logging.getLogger("captiond.daemon")

#: Seconds a service gets to close at shutdown.
SERVICE_CLOSE_TIMEOUT_S = 5.0
#: Longest wait at session end for minutes by the model (offline minutes are stored first).
MINUTES_AT_END_TIMEOUT_S = 60.0
#: How often start-up progress is checked for READY=1.
READY_POLL_S = 0.05
#: How often STATUS= is refreshed for systemd (only sent when it changed).
STATUS_INTERVAL_S = 2.0
#: Exit status of a forced exit (second signal): 128 + SIGINT, what shells expect.
FORCED_EXIT_STATUS = 130
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


def default_services() -> list[ServiceFactory]:
    """What ``captiond run`` starts around a session, in start order."""
    from captiond.exports.live import live_service
    from captiond.outputs.service import outputs_service
    from captiond.overlay.service import overlay_service

    return [live_service, overlay_service, outputs_service]


class Daemon(DaemonStatus, LiveReload):
    def __init__(
        self,
        cfg: Config,
        *,
        realtime: bool = True,
        title: str | None = None,
        out: TextIO | None = None,
        view: Callable[[LineUpdate], None] | None = None,
        services: list[ServiceFactory] | None = None,
        control_socket: bool = True,
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
        #: The overlay server, when the overlay service runs (it sets this).
        self.overlay: Any = None
        #: The caption outputs (captiond.outputs.service.OutputSet), when that service runs.
        self.outputs: Any = None
        self.notifier = Notifier()
        #: Serve ``captiond status`` on the control socket (live daemons only).
        self.control_socket = control_socket
        self.control: ControlServer | None = None
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self.state = "starting"
        self.ready = False
        #: Settings changed in the file whose new value waits for a restart, by component.
        self.restart_needed: dict[str, list[str]] = {}
        self.reloads = 0
        self._notices = reload_module.RestartNotices()
        self.reload_errors = 0
        #: Why the last reload was refused (cleared by the next good one), for `status`.
        self.reload_error: str | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._reload_lock = asyncio.Lock()
        self._watch_stop = asyncio.Event()  # ends the config watcher's thread promptly
        #: Settings a command-line flag holds against a different value in the file.
        self._overridden: dict[str, tuple[object, object]] = {}

    def keep_audio(self) -> Callable[[int, list[str]], Any]:
        """Opens the session's kept audio, after retiring what retention says must go."""
        from captiond.audio import keep

        cfg = self.cfg

        def open_keeper(session_id: int, channels: list[str]) -> keep.AudioKeeper:
            keep.apply_retention(cfg, now=time.time(), keep=frozenset({session_id}))
            path = keep.audio_path(keep.audio_dir(cfg), session_id)
            keeper = keep.AudioKeeper(path, bitrate=cfg["audio.keep_kbps"] * 1000,
                                      channels=channels)
            log.info("keep.started session=%d path=%s", session_id, path)
            return keeper

        return open_keeper

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
                    stdin_live=self.cfg["audio.stdin_live"],
                )
                engine = build_engine(self.cfg, channel=plan.channel, realtime=self.realtime)
                if self.realtime:
                    # A live daemon can switch devices and engines on a config reload.
                    source = SwitchableSource(source)
                    engine = SwitchableEngine(engine)
                streams.append(
                    Stream(
                        source,
                        engine,
                        plan.channel,
                        plan.speaker,
                        translators=translators[plan.channel],
                    )
                )
        except BaseException:
            # A later source failed: do not leave the earlier ones capturing.
            for stream in streams:
                with contextlib.suppress(Exception):
                    asyncio.run(stream.source.close())
            raise
        return streams

    async def minutes_at_end(self) -> None:
        """Minutes of the session that just completed (``minutes.on_session_end``): offline
        minutes are stored at once; with a key, the model's replace them if they arrive within
        MINUTES_AT_END_TIMEOUT_S (else the offline ones stay, and the log says how to ask)."""
        if not self.cfg["minutes.on_session_end"] or self.session is None or self.store is None:
            return
        sid = self.session.session_id
        if sid is None:
            return
        import threading

        from captiond.engines.openai import resolve_api_key
        from captiond.exports import produce
        from captiond.exports.document import load_session

        store, cfg = self.store, self.cfg
        try:
            doc = await asyncio.to_thread(load_session, store, sid)
            if not doc.original:
                return
            offline = produce.Options.from_config(cfg.replace(minutes__engine="offline"))
            first = await asyncio.to_thread(produce.write_minutes, doc, offline, None)
            await asyncio.to_thread(produce.save, store, doc, first)
            opts = produce.Options.from_config(cfg)
            key = None if opts.engine == "offline" else resolve_api_key(cfg)
            if opts.engine == "offline" or (opts.engine == "auto" and not key):
                return
        except Exception as exc:  # noqa: BLE001 - minutes never fail the session
            log.warning("minutes.failed session=%d error=%r", sid, str(exc))
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def work() -> None:
            error: BaseException | None = None
            try:
                # the model's minutes, or offline ones whose note says why not
                produce.save(store, doc, produce.write_minutes(doc, opts, key))
            except BaseException as exc:  # noqa: BLE001 - reported on the loop
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed after a timeout
                loop.call_soon_threadsafe(settle, error)

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(None)

        # A daemon thread: a model that never answers cannot hold the process at exit.
        threading.Thread(target=work, name="minutes", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), MINUTES_AT_END_TIMEOUT_S)
        except TimeoutError:
            log.warning("minutes.timeout session=%d waited_s=%.0f (offline minutes kept; run "
                        "captiond minutes %d --regenerate)", sid, MINUTES_AT_END_TIMEOUT_S, sid)
        except Exception as exc:  # noqa: BLE001
            log.warning("minutes.failed session=%d error=%r", sid, str(exc))

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

    def service_context(self) -> ServiceContext:
        """What the services around the session get: never the daemon itself."""
        return ServiceContext(
            cfg=self.cfg, store=self.store, feed=self.feed, status=self.overlay_status,
            realtime=self.realtime, title=self.title or "",
            http_handlers=dict(self.http_handlers),
        )

    async def run(self) -> int:
        """Run one session to its end; returns its id."""
        loop = asyncio.get_running_loop()
        # Signals first: a stop during start-up (loading the model) ends the session as soon
        # as it exists, instead of killing the process half-way.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        # Watchdog pings start now: loading the model runs in a thread, the loop stays alive.
        self._background.append(asyncio.create_task(self._supervise(), name="supervise"))
        _register_secrets(self.cfg)
        try:
            if self.control_socket and self.realtime:
                # Before the store: a second daemon on the same runtime directory must not
                # mark the first one's running session as interrupted.
                self.control = ControlServer(socket_path(), self.status)
                await self.control.start()
            url = self.cfg.database_url()
            self.store = await asyncio.to_thread(Store.open, url)
            log.info("store.opened url=%s", redact_url(url))
            from captiond.api import api_handler

            self.http_handlers = {"/api/": api_handler(self.store, self.public_status)}
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
                keep_audio=self.keep_audio() if self.cfg["audio.keep"] else None,
            )
            if self._signals:
                self.session.stop()
            context = self.service_context()
            for factory in self.services:
                service = factory(context)
                if service is None:
                    continue
                if isinstance(service, OverlayServer):
                    self.overlay = service  # for the status, viewers and live reload
                elif isinstance(service, OutputsService):
                    self.outputs = service.set  # for the status and live reload
                self._closers.append(service.close)
                await service.start()
            if self.realtime and self.cfg.path is not None:
                self._background.append(
                    asyncio.create_task(self._watch_config(self.cfg.path), name="config-watch")
                )
            result = await self.session.run()
            await self.minutes_at_end()
            return result
        finally:
            if self.state != "stopping":  # ended on its own (end of file) or failed
                self.state = "stopping"
                self.notifier.stopping("stopping")
            self._watch_stop.set()
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background.clear()
            for close in reversed(self._closers):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), SERVICE_CLOSE_TIMEOUT_S)
            self._closers.clear()
            if self.control is not None:
                await self.control.close()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
            if self.store is not None:
                await asyncio.to_thread(self.store.close)
            self.state = "stopped"
            self.notifier.close()

    # -- systemd: readiness, status, watchdog -----------------------------------------------

    async def _supervise(self) -> None:
        """READY=1 once capture has begun; STATUS= every few seconds; WATCHDOG=1 pings.

        This runs on the event loop on purpose: if the loop hangs, the pings stop and systemd
        restarts the service (``WatchdogSec=`` in the unit).
        """
        notifier = self.notifier
        tick = min(STATUS_INTERVAL_S, notifier.watchdog_s or STATUS_INTERVAL_S)
        next_status = 0.0
        next_ping = 0.0
        last_published: dict[str, Any] | None = None
        while True:
            session = self.session
            if not self.ready and session is not None and session.session_id is not None:
                # Store open, engine built (model loaded), source opened, overlay listening
                # (services start before the session), and the session row exists.
                self.ready = True
                self.state = "captioning"
                # A batch run (transcribe) is not a service: readiness is not news there.
                log.log(logging.INFO if self.realtime else logging.DEBUG,
                        "daemon.ready session=%d pid=%d", session.session_id, os.getpid())
                notifier.ready(self.status_line())
            now = time.monotonic()
            if notifier.watchdog_s is not None and now >= next_ping:
                notifier.watchdog()
                next_ping = now + tick
            if self.ready and now >= next_status:
                line = self.status_line()
                notifier.status(line)
                message = status_message(self.public_status())
                if message != last_published:  # subscribers keep the latest; no repeats
                    self.feed.publish(message)
                    last_published = message
                if isinstance(self.view, TerminalView):
                    self.view.status(line)
                next_status = now + STATUS_INTERVAL_S
            # Short steps until ready, so READY=1 follows the start of capture closely.
            await asyncio.sleep(tick if self.ready else READY_POLL_S)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("daemon.stopping signal=%s", signal.Signals(sig).name)
            self.state = "stopping"
            self.notifier.stopping("stopping: finishing the last sentence, flushing the store")
            if self.session is not None:
                self.session.stop()  # else run() stops it as soon as it exists
            return
        log.warning("daemon.forced_exit signal=%s", signal.Signals(sig).name)
        self.notifier.stopping("forced exit")
        # Lines already committed are safe in the database (WAL); the one in flight is lost.
        os._exit(FORCED_EXIT_STATUS)
