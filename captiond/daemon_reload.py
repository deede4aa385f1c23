"""Live reload of the running daemon: re-read the config file on an edit or SIGHUP and
apply what can change while captioning (switch the source, the engine, the translation
targets, restyle the overlay), keeping the old config in force when an edit is invalid.

A part of :class:`~captiond.daemon.Daemon` (a mixin: the attributes are the daemon's). What
may change live is decided by the pure planner :mod:`captiond.reload`; this performs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from captiond import config as config_module
from captiond import reload as reload_module
from captiond.audio.segmenter import segmenter_params
from captiond.audio.sources import open_source, parse_source
from captiond.audio.switch import SwitchableSource
from captiond.config import Config
from captiond.engines.factory import build_engine, engine_name, engine_sample_rate
from captiond.engines.switch import SwitchableEngine
from captiond.errors import CaptiondError, ConfigError
from captiond.logs import register_secret
from captiond.pipeline import Session

log = logging.getLogger("captiond.daemon")

#: Quiet time after a config file change before it is re-read (editors write in steps).
RELOAD_DEBOUNCE_MS = 300


def _shown(name: str, value: Any) -> Any:
    """A setting's value as a log line may show it (secrets hidden)."""
    return "<hidden>" if config_module.BY_NAME[name].secret and value else value


def _register_secrets(cfg: Config) -> None:
    """Secret settings (tokens, database URLs with passwords) never appear in a log line."""
    from captiond.config import SETTINGS

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


class LiveReload:
    """The daemon's live reload."""

    cfg: Config
    session: Session | None
    overlay: Any
    outputs: Any
    realtime: bool
    reloads: int
    reload_errors: int
    reload_error: str | None
    restart_needed: dict[str, list[str]]
    _notices: reload_module.RestartNotices
    _background: list[asyncio.Task[Any]]
    _reload_lock: asyncio.Lock
    _watch_stop: asyncio.Event
    _overridden: dict[str, tuple[object, object]]

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
