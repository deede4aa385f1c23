"""Live config reload, the pure part: which changed settings apply now, which need a restart.

:func:`plan` compares the running config with a freshly parsed one. Settings marked
``live`` in the registry apply at once; every other change names the component that has to
restart for it (the daemon reports these and keeps running with the old value, so the status
and a later reload stay truthful). :func:`plan_running` decides with what the daemon runs now
(:class:`Running`): a setting of an engine that is not running (``openai.*`` while the local
engine captions) is *not in use* -- the config takes the new value, nothing restarts, and
it applies whenever that engine is built. :class:`RestartNotices` keeps the "restart needed"
report to once per new value. The daemon does the I/O: watching the file, parsing, logging,
applying.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from captiond.config import BY_NAME, Config

#: The component a non-live setting belongs to, by section (what a restart would have to redo).
COMPONENT_OF_SECTION = {
    "audio": "audio source",
    "engine": "engine",
    "local": "engine",
    "openai": "engine",
    "call": "call streams",
    "vad": "engine",
    "database": "store",
    "overlay": "overlay server",
    "log": "logging",
    "export": "live subtitles",
    "translate": "translation sessions",
    "minutes": "minutes",
}


@dataclass
class ReloadPlan:
    """What a reload changes. ``applied`` is the config to run with from now on."""

    applied: Config
    live: set[str] = field(default_factory=set)
    #: component -> settings whose new value waits for a restart of the daemon.
    restart: dict[str, list[str]] = field(default_factory=dict)
    #: Settings of an engine that is not running: taken into the config, nothing to apply.
    unused: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart or self.unused)


def registry_live(name: str) -> bool:
    """The registry's word: the setting is marked ``live``."""
    return BY_NAME[name].live


def plan(
    current: Config, new: Config, can_apply: Callable[[str], bool] = registry_live,
    unused: Callable[[str], bool] = lambda name: False,
) -> ReloadPlan:
    """Split the differences between ``current`` and ``new``.

    A change applies live when ``can_apply(name)``: by default when the registry marks the
    setting ``live``; the daemon narrows that to what it has a component to hand over to, and
    widens it by the components it can restart in place (the audio source). Every other
    change waits for a restart.

    A change for which ``unused(name)`` holds is taken as it is (nothing running reads it).

    The returned ``applied`` config has the new value of every live or unused setting and the
    current value of every other one, so nothing that is not really in effect is ever reported
    as such.
    """
    changed = new.changed(current)
    idle = {name for name in changed if unused(name)}
    live = {name for name in changed - idle if can_apply(name)}
    restart: dict[str, list[str]] = {}
    for name in sorted(changed - live - idle):
        component = COMPONENT_OF_SECTION.get(BY_NAME[name].section, BY_NAME[name].section)
        restart.setdefault(component, []).append(name)
    keep = {name.replace(".", "__"): current[name] for name in changed - live - idle}
    applied = new.replace(**keep) if keep else new
    # replace() marks kept values as overrides; the origins of the running values are the old ones.
    applied = Config(
        {name: applied[name] for name in applied},
        {name: (current.origins[name] if name in keep_names(keep) else new.origins[name])
         for name in applied},
        new.path or current.path,
        new.outputs,
    )
    return ReloadPlan(applied, live, restart, idle)


#: Engine settings applied by building a new engine and switching the stream to it.
ENGINE_SWITCH = frozenset({
    "engine.name", "engine.language", "local.model", "local.threads", "local.compute_type",
    "local.beam_size", "local.stable_text", "local.final_window",
})
#: Settings every running engine takes while it runs (``Engine.update_settings``).
ENGINE_LIVE = ("vad.", "local.partial_interval_s", "local.word_timestamps")
#: Settings only the local engine reads (its model, its decoding, its partials).
LOCAL_ONLY = frozenset({
    "local.model", "local.threads", "local.compute_type", "local.beam_size", "local.device",
    "local.stable_text", "local.partial_interval_s", "local.word_timestamps", "local.final_window",
})
#: ``openai.*`` settings the running translation sessions read (built once, at their start).
TRANSLATION_READS = frozenset({
    "openai.url", "openai.translate_url", "openai.model", "openai.noise_reduction",
    "openai.buffer_s", "openai.rotate_before_s", "openai.api_key_file",
})

Decision = Literal["live", "restart", "unused"]


@dataclass(frozen=True)
class Running:
    """What the daemon runs now, as far as a reload needs to know (the daemon fills it in)."""

    #: A capture session is running (else every component change waits for one).
    session: bool = False
    streams: int = 0
    #: The single stream's source and engine can be swapped in place.
    source_switchable: bool = False
    engine_switchable: bool = False
    #: The running engine: "local", "openai" or "auto" (OpenAI with the local fallback).
    engine: str = "local"
    #: The audio rate the running stream is resampled to, and what the new config's engine
    #: takes (None: cannot be told, an unreadable key file: restart needed).
    engine_rate: int = 16_000
    new_engine_rate: int | None = 16_000
    #: The engine the new config asks for (same names as ``engine``).
    new_engine: str = "local"
    translating: bool = False
    realtime: bool = True
    overlay: bool = False


def decide(name: str, running: Running) -> Decision:
    """Whether a change of ``name`` applies now, waits for a restart, or is read by nothing
    that runs."""
    engines = {running.engine, running.new_engine}
    if name == "translate.targets":
        # Translation sessions are opened and closed next to the running captions.
        return "live" if running.session and running.realtime else "restart"
    if name == "audio.source":
        # Restarted in place: the new device is opened, then takes over the stream.
        one = running.session and running.streams == 1 and running.source_switchable
        return "live" if one else "restart"
    if name.startswith("openai.") and running.translating and name in TRANSLATION_READS:
        return "restart"  # the running translation sessions keep what they started with
    if name.startswith("openai.") and "openai" not in engines and "auto" not in engines:
        return "unused"  # the local engine captions; it applies when an OpenAI engine is built
    if name in LOCAL_ONLY and engines == {"openai"}:
        return "unused"  # the OpenAI engine has no local model, partial timer or word times
    if name in ENGINE_SWITCH or name.startswith("openai."):
        # Restarted in place: the new engine (model loaded) takes over at the next block --
        # if it takes the stream's audio rate (local 16 kHz, OpenAI 24 kHz): the stream is
        # resampled once, for the engine it started with. Otherwise: restart needed.
        same_rate = running.new_engine_rate == running.engine_rate
        one = running.session and running.streams == 1 and running.engine_switchable
        return "live" if one and same_rate else "restart"
    if not BY_NAME[name].live:
        return "restart"
    if name.startswith(ENGINE_LIVE):
        return "live"
    if name == "log.level":
        return "live"
    if name.startswith("minutes."):
        return "live"  # read from the config when a session ends or minutes are asked for
    if name.startswith("overlay."):
        return "live" if running.overlay else "restart"
    return "restart"


def plan_running(current: Config, new: Config, running: Running) -> ReloadPlan:
    """:func:`plan` for what the daemon runs now (see :func:`decide`)."""
    return plan(current, new, lambda name: decide(name, running) == "live",
                lambda name: decide(name, running) == "unused")


def needs_engine_switch(name: str) -> bool:
    """A live change of ``name`` is put into effect by building a new engine."""
    return name in ENGINE_SWITCH or name.startswith("openai.")


_MISSING = object()


@dataclass
class RestartNotices:
    """Restart-only changes are reported once per new value, and forgotten when the file goes
    back to the running value."""

    #: restart-only setting -> its value in the file
    pending: dict[str, Any] = field(default_factory=dict)

    def update(self, plan: ReloadPlan, new: Config, current: Config
               ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """(component -> settings to report now, component -> every setting still waiting
        for a restart)."""
        fresh: dict[str, list[str]] = {}
        for component, names in plan.restart.items():
            for name in names:
                if self.pending.get(name, _MISSING) != new[name]:
                    fresh.setdefault(component, []).append(name)
                self.pending[name] = new[name]
        for name in list(self.pending):
            if new[name] == current[name]:
                del self.pending[name]
        waiting: dict[str, list[str]] = {}
        for component, names in plan.restart.items():
            kept = [n for n in names if n in self.pending]
            if kept:
                waiting[component] = kept
        return fresh, waiting


def keep_names(keep: dict[str, object]) -> set[str]:
    return {k.replace("__", ".") for k in keep}


def keep_running(applied: Config, current: Config, names: set[str]) -> Config:
    """``applied`` with the running value of ``names`` back, under the running value's origin.

    For a change that could not be put into effect (the new device or engine failed): the
    value is restored, not pinned. Its origin stays the file's, so the next reload reads the
    file again and a corrected edit applies (a value marked as an override would be fed back
    over the file on every reload).
    """
    return applied.restored(names, current) if names else applied


def overridden(file_cfg: Config, cfg: Config) -> dict[str, tuple[object, object]]:
    """Settings the config file sets to something else than the command-line value in force:
    name -> (file value, value in force). ``file_cfg`` is the file read without flags."""
    return {
        name: (file_cfg[name], cfg[name])
        for name, origin in cfg.origins.items()
        if origin == "command line"
        and file_cfg.origins[name] not in ("default", "environment")
        and file_cfg[name] != cfg[name]
    }


def overrides_of(cfg: Config) -> dict[str, object]:
    """Values that came from the command line: a reload must keep them over the file."""
    kept: dict[str, object] = {
        name: cfg[name]
        for name, origin in cfg.origins.items()
        if origin == "command line"  # not a value restored after a failed switch
    }
    flags = [o.flag for o in cfg.outputs if o.origin == "command line"]
    if flags:
        kept["outputs"] = flags  # --output flags (captiond.config.OUTPUTS_KEY)
    return kept
