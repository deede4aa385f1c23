"""Live config reload, the pure part: which changed settings apply now, which need a restart.

:func:`plan` compares the running config with a freshly parsed one. Settings marked
``live`` in the registry apply at once; every other change names the component that has to
restart for it (the daemon reports these and keeps running with the old value, so the status
and a later reload stay truthful). The daemon does the I/O: watching the file, parsing,
logging, applying.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
}


@dataclass
class ReloadPlan:
    """What a reload changes. ``applied`` is the config to run with from now on."""

    applied: Config
    live: set[str] = field(default_factory=set)
    #: component -> settings whose new value waits for a restart of the daemon.
    restart: dict[str, list[str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def registry_live(name: str) -> bool:
    """The registry's word: the setting is marked ``live``."""
    return BY_NAME[name].live


def plan(
    current: Config, new: Config, can_apply: Callable[[str], bool] = registry_live
) -> ReloadPlan:
    """Split the differences between ``current`` and ``new``.

    A change applies live when ``can_apply(name)``: by default when the registry marks the
    setting ``live``; the daemon narrows that to what it has a component to hand over to, and
    widens it by the components it can restart in place (the audio source). Every other
    change waits for a restart.

    The returned ``applied`` config has the new value of every live setting and the current
    value of every other one, so nothing that is not really in effect is ever reported as such.
    """
    changed = new.changed(current)
    live = {name for name in changed if can_apply(name)}
    restart: dict[str, list[str]] = {}
    for name in sorted(changed - live):
        component = COMPONENT_OF_SECTION.get(BY_NAME[name].section, BY_NAME[name].section)
        restart.setdefault(component, []).append(name)
    keep = {name.replace(".", "__"): current[name] for name in changed - live}
    applied = new.replace(**keep) if keep else new
    # replace() marks kept values as overrides; the origins of the running values are the old ones.
    applied = Config(
        {name: applied[name] for name in applied},
        {name: (current.origins[name] if name in keep_names(keep) else new.origins[name])
         for name in applied},
        new.path or current.path,
        new.outputs,
    )
    return ReloadPlan(applied, live, restart)


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
