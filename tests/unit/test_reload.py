"""The reload planner (pure): every changed setting applies live, waits for a restart, or is
read by no engine that runs -- decided from what the daemon runs, never claimed otherwise."""

from __future__ import annotations

from captiond import config, reload
from captiond.reload import Running

#: One stream, local engine, both swappable in place.
LOCAL = Running(session=True, streams=1, source_switchable=True, engine_switchable=True,
                engine="local", engine_rate=16_000, new_engine="local", new_engine_rate=16_000)
OPENAI = Running(session=True, streams=1, source_switchable=True, engine_switchable=True,
                 engine="openai", engine_rate=24_000, new_engine="openai", new_engine_rate=24_000)
AUTO = Running(session=True, streams=1, source_switchable=True, engine_switchable=True,
               engine="auto", engine_rate=24_000, new_engine="auto", new_engine_rate=24_000)


def edit(text_before: str, text_after: str) -> tuple[config.Config, config.Config]:
    return (config.parse(text_before, env={}, overrides={}),
            config.parse(text_after, env={}, overrides={}))


def test_openai_settings_while_the_local_engine_runs_are_not_in_use() -> None:
    """openai.* edits under the local engine restart nothing and are not reported as needing
    a restart: the config takes them, to apply whenever an OpenAI engine is built."""
    old, new = edit("", '[openai]\nmodel = "other"\ndelay = "high"\n')
    plan = reload.plan_running(old, new, LOCAL)
    assert plan.unused == {"openai.model", "openai.delay"}
    assert plan.live == set() and plan.restart == {}
    assert plan.applied["openai.model"] == "other"
    assert not any(reload.needs_engine_switch(n) for n in plan.live)


def test_openai_settings_the_translations_read_wait_for_a_restart() -> None:
    """With translation sessions running (they read openai.model at their start), the same
    edit under the local engine is reported as needing a restart, and the old value stays."""
    old, new = edit("", '[openai]\nmodel = "other"\nitem_timeout_s = 10\n')
    plan = reload.plan_running(old, new, Running(**{**LOCAL.__dict__, "translating": True}))
    assert plan.restart == {"engine": ["openai.model"]}
    assert plan.unused == {"openai.item_timeout_s"}
    assert plan.applied["openai.model"] == old["openai.model"]


def test_openai_settings_switch_a_running_openai_engine() -> None:
    """Under the OpenAI engine (and auto), openai.* edits build a new engine that takes over."""
    old, new = edit("", '[openai]\nmodel = "other"\n')
    for running in (OPENAI, AUTO):
        plan = reload.plan_running(old, new, running)
        assert plan.live == {"openai.model"} and plan.unused == set()
        assert reload.needs_engine_switch("openai.model")


def test_local_only_settings_while_the_openai_engine_runs_are_not_in_use() -> None:
    """local.model and the partial timer are read by no part of the OpenAI engine; auto's
    local fallback reads them, so there they apply."""
    old, new = edit("", '[local]\nbeam_size = 1\npartial_interval_s = 0.8\n')
    plan = reload.plan_running(old, new, OPENAI)
    assert plan.unused == {"local.beam_size", "local.partial_interval_s"}
    assert plan.restart == {}
    auto = reload.plan_running(old, new, AUTO)
    assert auto.live == {"local.beam_size", "local.partial_interval_s"}


def test_final_window_switches_the_local_engine_and_is_unused_under_openai() -> None:
    """local.final_window is a decoder setting: a new local engine takes over with it; the
    OpenAI engine never reads it."""
    old, new = edit("", '[local]\nfinal_window = "full"\n')
    plan = reload.plan_running(old, new, LOCAL)
    assert plan.live == {"local.final_window"} and plan.restart == {}
    assert reload.needs_engine_switch("local.final_window")
    assert reload.plan_running(old, new, OPENAI).unused == {"local.final_window"}


def test_vad_settings_apply_live_on_every_engine() -> None:
    """vad.* goes to the running engine's front end, whichever engine it is."""
    old, new = edit("", "[vad]\nmin_silence_ms = 700\n")
    for running in (LOCAL, OPENAI, AUTO):
        assert reload.plan_running(old, new, running).live == {"vad.min_silence_ms"}


def test_engine_changes_across_rates_or_streams_need_a_restart() -> None:
    """engine.name local -> openai (16 -> 24 kHz), and any engine change on a two-stream call,
    wait for a restart; so do openai.* edits that come with the switch to openai."""
    old, new = edit('[engine]\nname = "local"\n', '[engine]\nname = "openai"\n[openai]\ndelay = "high"\n')
    switching = Running(**{**LOCAL.__dict__, "new_engine": "openai", "new_engine_rate": 24_000})
    plan = reload.plan_running(old, new, switching)
    assert plan.restart == {"engine": ["engine.name", "openai.delay"]}
    old, new = edit("", "[local]\nbeam_size = 1\n")
    call = Running(**{**LOCAL.__dict__, "streams": 2, "engine_switchable": False})
    assert reload.plan_running(old, new, call).restart == {"engine": ["local.beam_size"]}


def test_restart_notices_are_said_once_per_value_and_forgotten_when_undone() -> None:
    """A restart-only edit is reported once; the same value again is not reported; the file
    back at the running value clears it from the waiting list."""
    notices = reload.RestartNotices()
    running, edited = edit("", "[overlay]\nmax_viewers = 5\n")
    plan = reload.plan(running, edited)
    fresh, waiting = notices.update(plan, edited, running)
    assert fresh == waiting == {"overlay server": ["overlay.max_viewers"]}
    fresh, waiting = notices.update(reload.plan(running, edited), edited, running)
    assert fresh == {} and waiting == {"overlay server": ["overlay.max_viewers"]}
    fresh, waiting = notices.update(reload.plan(running, running), running, running)
    assert fresh == {} and waiting == {} and notices.pending == {}
