"""The daemon: owns the store, the session, the services around it, signals and shutdown.

Start order: config -> store (migrated; sessions a dead daemon left ``running`` become
``interrupted``) -> sources and engines -> services (terminal view, and whatever else is
configured) -> capture. Shutdown order (first SIGINT/SIGTERM): stop capture, finish the
utterance in flight, wait (bounded) for the last results, flush the store, close services.
A second signal exits at once.

Around that, the daemon is a good service: it tells systemd when it is ready, what it
is doing and that its loop is alive (:mod:`captiond.sdnotify`), answers ``captiond status`` on
its control socket (:mod:`captiond.control`), and reloads its config file when it changes or
on SIGHUP (:mod:`captiond.reload` decides what applies live).
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
from captiond import config as config_module
from captiond import reload as reload_module
from captiond.audio.sources import SourceSpec, open_source, parse_source
from captiond.audio.switch import SwitchableSource
from captiond.config import Config
from captiond.control import ControlServer, socket_path
from captiond.engines.factory import build_engine, engine_name, engine_sample_rate
from captiond.engines.switch import SwitchableEngine
from captiond.errors import AudioError, CaptiondError, ConfigError
from captiond.events import LineUpdate
from captiond.feed import Feed, status_message
from captiond.outputs.service import OutputsService
from captiond.overlay.server import OverlayServer
from captiond.pipeline import Session, Stream, segmenter_params
from captiond.sdnotify import Notifier
from captiond.services import ServiceContext, ServiceFactory
from captiond.transcript.echo import EchoGuard
from captiond.transcript.store import Store, redact_url
from captiond.view import TerminalView, format_clock  # noqa: F401  (re-exported)

log = logging.getLogger("captiond.daemon")

#: Seconds a service gets to close at shutdown.
SERVICE_CLOSE_TIMEOUT_S = 5.0
#: How often start-up progress is checked for READY=1.
READY_POLL_S = 0.05
#: How often STATUS= is refreshed for systemd (only sent when it changed).
STATUS_INTERVAL_S = 2.0
#: Quiet time after a config file change before it is re-read (editors write in steps).
RELOAD_DEBOUNCE_MS = 300
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


#: Status fields only the local user sees (control socket), not the HTTP API.
_PRIVATE_STATUS = frozenset({"source", "config", "pid"})


def _shown(name: str, value: Any) -> Any:
    """A setting's value as a log line may show it (secrets hidden)."""
    return "<hidden>" if config_module.BY_NAME[name].secret and value else value


def _register_secrets(cfg: Config) -> None:
    """Secret settings (tokens, database URLs with passwords) never appear in a log line."""
    from captiond.config import SETTINGS
    from captiond.logs import register_secret

    for setting in SETTINGS:
        value = cfg[setting.name]
        if not (setting.secret and value):
            continue
        if setting.name == "database.url":
            # The URL says which database (worth logging); only its password is secret.
            value = _url_password(str(value))
        register_secret(str(value or ""))


def _url_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - unparsable: hide all of it
        return url


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
        """The session's figures, with viewers counted by the overlay (pages actually open)."""
        stats = self.session.stats() if self.session else {}
        if stats and self.overlay is not None:
            stats["feed_subscribers"] = stats.get("viewers", 0)
            stats["viewers"] = self.overlay.viewers()
        return stats

    def status(self) -> dict[str, Any]:
        """What ``captiond status`` and ``/api/status`` show. Called on the event loop."""
        stats = self.stats()
        session = self.session
        engines = stats.get("engines", [])
        return {
            "pid": os.getpid(),
            "state": self.state,
            "ready": self.ready,
            "started_at": round(self.started_at, 1),
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
            "source": " + ".join(s.source.description for s in session.streams) if session else None,
            "engine": ",".join(sorted({s.engine.name for s in session.streams})) if session else None,
            "engine_state": ",".join(sorted({str(e.get("state", "?")) for e in engines})) or None,
            "session": stats.get("session"),
            "lines_stored": stats.get("finals", 0),
            "store_errors": stats.get("store_errors", 0),
            "audio_s": stats.get("audio_s", 0.0),
            "lag_s": stats.get("lag_s", 0.0),
            "gaps": sum(s.gaps for s in session.streams) if session else 0,
            "dropped": stats.get("dropped", 0),
            "viewers": self.overlay.viewers() if self.overlay is not None else None,
            "overlay_url": self.overlay.url if self.overlay is not None and self.ready else None,
            "cost_usd": stats.get("cost_usd", 0.0),
            "config": str(self.cfg.path) if self.cfg.path else None,
            "reloads": self.reloads,
            "reload_error": self.reload_error,
            "restart_needed": self.restart_needed,
            "outputs": self.outputs.status() if self.outputs is not None else [],
            "outputs_summary": self.outputs.summary() if self.outputs is not None else "",
        }

    def service_context(self) -> ServiceContext:
        """What the services around the session get: never the daemon itself."""
        return ServiceContext(
            cfg=self.cfg, store=self.store, feed=self.feed, status=self.overlay_status,
            realtime=self.realtime, title=self.title or "",
            http_handlers=dict(self.http_handlers),
        )

    def overlay_status(self) -> dict[str, Any]:
        """The public part of the status the overlay pages show (numbers and names, never
        sources or paths)."""
        stats = self.stats()
        session = self.session
        names = sorted({s.engine.name for s in session.streams}) if session is not None else []
        status = {
            "state": "captioning" if session is not None and session.session_id else "starting",
            "engine": ",".join(names) or None,
            "session": stats.get("session"),
            "uptime_s": stats.get("uptime_s"),
            "audio_s": stats.get("audio_s"),
            "finals": stats.get("finals"),
            "lag_s": stats.get("lag_s"),
        }
        # The caption outputs in one line, when there are any: "obs ok, youtube failing (HTTP 503)".
        summary = self.outputs.summary() if self.outputs is not None else ""
        if summary:
            status["outputs_summary"] = summary
        return status

    def public_status(self) -> dict[str, Any]:
        """The status for the overlay's ``/api/status``: no file paths or device names (the
        overlay may be reachable from other machines; the control socket is the user's own)."""
        return {k: v for k, v in self.status().items() if k not in _PRIVATE_STATUS}

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status`` shows it)."""
        st = self.status()
        if not self.ready:
            return f"{self.state}"
        line = (
            f"{self.state}: engine {st['engine']} ({st['engine_state']}), session {st['session']}, "
            f"{st['lines_stored']} lines, lag {st['lag_s']:.1f} s"
        )
        if st["viewers"] is not None:
            line += f", {st['viewers']} viewers"
        if st.get("cost_usd"):
            line += f", ${st['cost_usd']:.3f}"
        if self.restart_needed:
            line += ", restart needed for " + ",".join(sorted(self.restart_needed))
        return line

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
            return await self.session.run()
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

    # -- live reload ------------------------------------------------------------------------

    async def _watch_config(self, path: Any) -> None:
        """Reload whenever the config file changes (watchfiles watches its directory, so an
        editor that replaces the file by renaming is seen too)."""
        import watchfiles

        target = os.path.realpath(path)
        directory = os.path.dirname(target)

        def relevant(_change: Any, changed: str) -> bool:
            return os.path.realpath(changed) == target

        async for _changes in watchfiles.awatch(
            directory, watch_filter=relevant, debounce=RELOAD_DEBOUNCE_MS, recursive=False,
            stop_event=self._watch_stop,
        ):
            await self.reload(trigger="file")

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(trigger="SIGHUP"))
        self._background = [t for t in self._background if not t.done()]
        self._background.append(task)

    async def reload(self, *, trigger: str = "request") -> bool:
        """Re-read the config file and apply what can change live. False if the edit is invalid
        (the old config stays in force; the log names the key and the reason)."""
        async with self._reload_lock:
            path = self.cfg.path
            flags = reload_module.overrides_of(self.cfg)
            try:
                new = await asyncio.to_thread(config_module.load, path, overrides=flags)
                file_cfg = await asyncio.to_thread(config_module.load, path) if flags else new
            except ConfigError as exc:
                self.reload_errors += 1
                self.reload_error = str(exc)
                log.error("config.reload_failed trigger=%s error=%r keeping=old", trigger, str(exc))
                return False
            self.reload_error = None
            _register_secrets(new)
            running = self._running(new)
            plan = reload_module.plan_running(self.cfg, new, running)
            self.reloads += 1
            if self.outputs is not None and new.outputs != self.cfg.outputs \
                    and not await self.outputs.apply(new.outputs):
                # An added output cannot start (its secret is missing): the running ones stay.
                plan.applied = Config(plan.applied, plan.applied.origins, plan.applied.path,
                                      self.cfg.outputs)
            fresh, self.restart_needed = self._notices.update(plan, new, self.cfg)
            _register_secrets(file_cfg)
            overridden = reload_module.overridden(file_cfg, new)
            if overridden != self._overridden:
                # Said once per file value: the edit is read, but the flag wins until a restart.
                for name, (in_file, in_force) in sorted(overridden.items()):
                    if self._overridden.get(name) != (in_file, in_force):
                        log.warning(
                            "config.overridden setting=%s file=%r in_force=%r by=command_line "
                            "(the flag wins over the file; restart without it to use the file)",
                            name, _shown(name, in_file), _shown(name, in_force),
                        )
                self._overridden = overridden
            if plan.unused:
                # Read by no engine that runs: taken into the config, applied when one does.
                log.info("config.not_in_use settings=%s engine=%s (applies when an engine that "
                         "reads them runs)", ",".join(sorted(plan.unused)), running.engine)
            if not plan.live and not fresh and not plan.unused:
                self.cfg = plan.applied  # the same settings; the outputs may have changed
                log.info("config.reloaded trigger=%s changed=none", trigger)
                return True
            # A change that fails to apply keeps the running value without pinning it: the
            # next reload compares the file with it again, so a corrected edit applies.
            if "audio.source" in plan.live and not await self._switch_source(plan.applied):
                # The new device cannot be opened: keep capturing from the old one.
                plan.live.discard("audio.source")
                plan.applied = reload_module.keep_running(plan.applied, self.cfg, {"audio.source"})
            engine_changes = {n for n in plan.live if reload_module.needs_engine_switch(n)}
            if engine_changes and not await self._switch_engine(plan.applied):
                # The new engine cannot be built: keep the running one and its settings.
                plan.live -= engine_changes
                plan.applied = reload_module.keep_running(plan.applied, self.cfg, engine_changes)
            if "translate.targets" in plan.live and not await self._retarget(plan.applied):
                # No key, a bad code, or the session ended: the running translations stay.
                plan.live.discard("translate.targets")
                plan.applied = reload_module.keep_running(
                    plan.applied, self.cfg, {"translate.targets"}
                )
            self._apply(plan.applied, plan.live)
            self.cfg = plan.applied
            for component, names in fresh.items():
                log.warning(
                    "config.restart_needed component=%r settings=%s (restart: systemctl --user "
                    "restart captiond)", component, ",".join(names),
                )
            log.info(
                "config.reloaded trigger=%s applied=%s", trigger, ",".join(sorted(plan.live)) or "none"
            )
            return True

    def _running(self, new: Config) -> reload_module.Running:
        """What runs now, for the reload planner (which is pure)."""
        session = self.session
        streams = session.streams if session is not None else []
        one = streams[0] if len(streams) == 1 else None
        engine, rate = self._engine_of(self.cfg)
        new_engine, new_rate = self._engine_of(new)
        return reload_module.Running(
            session=session is not None,
            streams=len(streams),
            source_switchable=one is not None and isinstance(one.source, SwitchableSource),
            engine_switchable=one is not None and isinstance(one.engine, SwitchableEngine),
            engine=engine or "local",
            engine_rate=one.engine.sample_rate if one is not None else rate or 0,
            new_engine=new_engine or "",
            new_engine_rate=new_rate,
            translating=any(s.tees for s in streams),
            realtime=self.realtime,
            overlay=self.overlay is not None,
        )

    @staticmethod
    def _engine_of(cfg: Config) -> tuple[str | None, int | None]:
        """The engine ``cfg`` builds and its audio rate; None for both if that cannot be told
        (an unreadable key file: the switch reports it)."""
        try:
            return engine_name(cfg), engine_sample_rate(cfg)
        except CaptiondError:
            return None, None

    async def _retarget(self, cfg: Config) -> bool:
        """Open translation sessions for added targets and close those of removed ones, on
        every stream; False (and nothing changed) if the new ones cannot be built."""
        from captiond.engines.translate import build_translators, parse_targets

        assert self.session is not None
        try:
            wanted = set(parse_targets(list(cfg["translate.targets"])))
            plans = []
            for stream in self.session.streams:
                running = {t.engine.track for t in stream.tees}
                added = sorted(wanted - running)
                engines = await asyncio.to_thread(
                    build_translators,
                    cfg.replace(translate__targets=added),
                    channel=stream.channel,
                    realtime=self.realtime,
                ) if added else []
                plans.append((stream, engines, running - wanted))
        except CaptiondError as exc:
            log.error("config.translate_failed error=%r keeping=old", str(exc))
            return False
        for stream, engines, removed in plans:
            if not await self.session.retarget(stream, engines, removed):
                return False
            log.info(
                "translate.retargeted channel=%s added=%s removed=%s",
                stream.channel or "-",
                ",".join(e.track for e in engines) or "none",
                ",".join(sorted(removed)) or "none",
            )
        return True

    async def _switch_source(self, cfg: Config) -> bool:
        """Open the configured source and hand it to the running stream; False if it fails."""
        assert self.session is not None
        try:
            spec = parse_source(cfg["audio.source"])
            new = await asyncio.to_thread(
                open_source, spec, realtime=self.realtime, rate=cfg["audio.rate"],
                channels=cfg["audio.channels"], block_ms=cfg["audio.block_ms"],
                stdin_live=cfg["audio.stdin_live"],
            )
        except CaptiondError as exc:
            log.error("config.source_failed source=%r error=%r keeping=old", cfg["audio.source"],
                      str(exc))
            return False
        stream = self.session.streams[0]
        assert isinstance(stream.source, SwitchableSource)
        stream.source.switch(new)
        return True

    async def _switch_engine(self, cfg: Config) -> bool:
        """Build the configured engine (loading its model in a thread) and switch to it."""
        assert self.session is not None
        try:
            new = await asyncio.to_thread(build_engine, cfg, realtime=self.realtime)
        except Exception as exc:  # noqa: BLE001 - a model that does not load, a missing engine
            log.error("config.engine_failed error=%r keeping=old", str(exc))
            return False
        stream = self.session.streams[0]
        assert isinstance(stream.engine, SwitchableEngine)
        try:
            stream.engine.switch(new)
        except ValueError as exc:
            log.error("config.engine_failed error=%r keeping=old", str(exc))
            return False
        return True

    def _apply(self, cfg: Config, names: set[str]) -> None:
        if any(n.startswith(reload_module.ENGINE_LIVE) for n in names) and self.session is not None:
            for stream in self.session.streams:
                # Every engine takes them (the Engine protocol): local, OpenAI, auto.
                stream.engine.update_settings(
                    segmenter_params(cfg, stream.engine.sample_rate),
                    cfg["local.partial_interval_s"],
                    cfg["local.word_timestamps"],
                )
        if any(n.startswith("overlay.") for n in names) and self.overlay is not None:
            self.overlay.reconfigure(cfg)
        if "log.level" in names:
            level = getattr(logging, str(cfg["log.level"]).upper(), logging.INFO)
            logging.getLogger("captiond").setLevel(level)

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
