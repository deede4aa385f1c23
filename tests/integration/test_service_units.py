"""The systemd units, ``install-service``, reload planning, live reload in process, log redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from needs import need_programs
from service_helpers import ROOT, daemon_env, decode_16k

from captiond import config, logs, reload

#: The issue's bar for `systemd-analyze security --offline=yes`.
MAX_EXPOSURE = 3.0
#: Audio the stream clock may stop short of a clip's length (the last partial block, rounding).
BLOCK_SLACK_S = 0.1


def _install(tmp_path: Path, scope: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "captiond", "install-service", f"--{scope}",
         "--path", str(tmp_path / "captiond.service"), *extra],
        env=daemon_env(tmp_path), capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )


@pytest.mark.parametrize("scope", ["user", "system"])
def test_install_service_writes_a_unit_systemd_accepts(scope: str, tmp_path: Path) -> None:
    result = _install(tmp_path, scope)
    assert result.returncode == 0, result.stderr
    systemctl = "systemctl --user" if scope == "user" else "sudo systemctl"
    assert f"{systemctl} daemon-reload && {systemctl} enable --now captiond" in result.stdout
    unit = (tmp_path / "captiond.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.MULTILINE).group(1)
    assert exec_start.split()[0] in (sys.executable, str(Path(sys.executable).parent / "captiond"))
    assert exec_start.endswith(" run")
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    need_programs("systemd-analyze", install="apt-get install systemd")
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    verify = subprocess.run([analyze, "verify", str(tmp_path / "captiond.service")],
                            check=False, capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run([analyze, "security", "--offline=yes",
                               str(tmp_path / "captiond.service")],
                              check=False, capture_output=True, text=True, timeout=60)
    figure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert figure is not None, security.stdout + security.stderr
    assert float(figure.group(1)) <= MAX_EXPOSURE, security.stdout


def test_install_service_dry_run_writes_nothing(tmp_path: Path) -> None:
    result = _install(tmp_path, "user", "--dry-run")
    assert result.returncode == 0
    assert not (tmp_path / "captiond.service").exists()
    assert "[Service]" in result.stdout and "ExecStart=" in result.stdout


def test_reload_plan_splits_live_and_restart_changes() -> None:
    old = config.parse("[vad]\nmin_silence_ms = 400\n", env={}, overrides={"audio.source": "stdin"})
    new = config.parse(
        '[vad]\nmin_silence_ms = 600\n[engine]\nlanguage = "de"\n[audio]\nsource = "mic"\n',
        env={}, overrides=reload.overrides_of(old),
    )
    assert new["audio.source"] == "stdin"  # the command line still wins over the file
    plan = reload.plan(old, new)
    assert plan.live == {"vad.min_silence_ms"}
    assert plan.restart == {"engine": ["engine.language"]}
    assert plan.applied["vad.min_silence_ms"] == 600
    assert plan.applied["engine.language"] == "en"  # not in effect until a restart
    refused = reload.plan(old, new, can_apply=lambda name: False)
    assert refused.live == set() and "engine" in refused.restart


def test_live_reload_applies_to_the_running_engine_and_overlay(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: a file edit reaches the engine's VAD parameters, the overlay and log level."""
    from captiond.daemon import Daemon

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "config.toml"
    path.write_text("[overlay]\nport = 0\n[vad]\nmin_silence_ms = 400\n")
    cfg = config.load(path, env={}, overrides={
        "audio.source": f"file:{fleurs_en[2]}", "database.url": f"sqlite:///{tmp_path / 'a.db'}"})

    async def main() -> tuple[int, int, int]:
        daemon = Daemon(cfg, out=io.StringIO())
        task = asyncio.create_task(daemon.run())
        while not daemon.ready:
            assert not task.done()
            await asyncio.sleep(0.02)
        engine = daemon.session.streams[0].engine.inner
        path.write_text('[overlay]\nport = 0\nfont_size = 50\n[vad]\nmin_silence_ms = 700\n'
                        '[log]\nlevel = "debug"\n')
        for _ in range(200):  # up to 10 s: watchfiles debounce, then the reload
            if engine.params.min_silence_ms == 700:
                break
            await asyncio.sleep(0.05)
        result = (engine.params.min_silence_ms, daemon.overlay._cfg["overlay.font_size"],
                  logging.getLogger("captiond").level)
        daemon.session.stop()
        await task
        return result

    try:
        assert asyncio.run(main()) == (700, 50, logging.DEBUG)
    finally:
        logging.getLogger("captiond").setLevel(logging.INFO)


def test_json_logs_have_event_names_and_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("info", "json")
    log = logging.getLogger("captiond.test")
    logs.register_secret("my-overlay-token-1234567")
    log.info("overlay.started url=%s auth=%s", "http://x/?token=my-overlay-token-1234567", "token")
    log.warning("engine.connect_failed key=%s", "sk-proj-abcdefghijklmnop")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["overlay.started", "engine.connect_failed"]
    text = json.dumps(lines)
    assert "my-overlay-token-1234567" not in text and "abcdefghijklmnop" not in text
    assert lines[0]["auth"] == "token" and "<redacted>" in lines[0]["url"]
    logs.setup_logging("info", "text")


def test_config_error_for_a_secret_never_shows_the_value() -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.parse('[overlay]\ntoken = "short secret"\n', env={})
    assert "overlay.token" in str(exc.value) and "short secret" not in str(exc.value)


def test_source_change_switches_capture_without_a_restart(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Editing audio.source moves the running session to the new source: same session, the
    new audio captioned, the stream clock continuing."""
    from conftest import normalise, reference

    from captiond.daemon import Daemon
    from captiond.transcript.store import Store

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "config.toml"
    path.write_text(f'[overlay]\nport = 0\n[audio]\nsource = "file:{fleurs_en[2]}"\n')
    url = f"sqlite:///{tmp_path / 'a.db'}"
    cfg = config.load(path, env={}, overrides={"database.url": url})
    switch_after_s = 2.0
    old_s, new_s = (len(decode_16k(fleurs_en[i])) / 16_000 for i in (2, 4))

    async def main() -> tuple[int, int]:
        daemon = Daemon(cfg, out=io.StringIO())
        task = asyncio.create_task(daemon.run())
        while not daemon.ready:
            assert not task.done()
            await asyncio.sleep(0.02)
        # Edited once the stream clock (not the wall clock) has passed switch_after_s.
        while daemon.session.streams[0].captured_s < switch_after_s:
            assert not task.done()
            await asyncio.sleep(0.02)
        path.write_text(f'[overlay]\nport = 0\n[audio]\nsource = "file:{fleurs_en[4]}"\n')
        session_id = await asyncio.wait_for(task, 60)  # ends with the new (shorter) file
        return session_id, daemon.session.streams[0].source.switches

    session_id, switches = asyncio.run(main())
    assert switches == 1
    store = Store.open(url)
    try:
        sessions = store.list_sessions()
        text = normalise(" ".join(r.text for r in store.lines(session_id) if r.text))
        audio_s = sessions[0][0].audio_seconds
    finally:
        store.close()
    assert len(sessions) == 1
    new_words = reference(fleurs_en[4]).split()
    assert sum(w in text.split() for w in new_words) >= 0.7 * len(new_words), text
    # Clip 2 for at least switch_after_s, then all of clip 4 on the same clock (a clock that
    # restarted would hold clip 4 alone); clip 2 was cut short (not played to its end first).
    assert switch_after_s + new_s - BLOCK_SLACK_S <= audio_s < old_s + new_s, audio_s


def test_engine_change_switches_engines_without_losing_audio(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Editing an engine setting builds a new engine and hands it the next block: one session,
    one chain of lines, both sentences captioned (the first by the old engine, the second by
    the new one)."""
    import numpy as np
    from conftest import normalise, reference
    from service_helpers import write_wav

    from captiond.daemon import Daemon
    from captiond.transcript.store import Store

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    first = decode_16k(fleurs_en[4])
    meeting = write_wav(tmp_path / "m.wav", np.concatenate([first, decode_16k(fleurs_en[3])]))
    path = tmp_path / "config.toml"
    path.write_text("[overlay]\nport = 0\n[local]\nbeam_size = 5\n")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    cfg = config.load(path, env={}, overrides={"database.url": url,
                                               "audio.source": f"file:{meeting}"})

    async def main() -> tuple[int, int]:
        daemon = Daemon(cfg, out=io.StringIO())
        task = asyncio.create_task(daemon.run())
        while not daemon.ready:
            assert not task.done()
            await asyncio.sleep(0.02)
        # Between the sentences (clip 4 ends at 4.3 s; clip 3's speech starts 0.3 s later),
        # on the stream clock.
        while daemon.session.streams[0].captured_s < len(first) / 16_000 - 0.1:
            assert not task.done()
            await asyncio.sleep(0.02)
        path.write_text("[overlay]\nport = 0\n[local]\nbeam_size = 1\n")
        session_id = await asyncio.wait_for(task, 60)
        return session_id, daemon.session.streams[0].engine.generation

    session_id, generation = asyncio.run(main())
    assert generation == 1
    store = Store.open(url)
    try:
        rows = [r for r in store.lines(session_id) if r.text]
        sessions = store.list_sessions()
    finally:
        store.close()
    assert len(sessions) == 1
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    assert len({r.seq for r in rows}) == len(rows)
    assert any(r.item_id.startswith("r1-") for r in rows), [r.item_id for r in rows]
    text = normalise(" ".join(r.text for r in rows))
    for clip in (fleurs_en[4], fleurs_en[3]):
        words = reference(clip).split()
        assert sum(w in text.split() for w in words) >= 0.7 * len(words), (clip, text)


def test_the_daemon_publishes_its_status_on_the_feed(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once ready, the daemon sends a {"type": "status"} feed message with its state (and no
    private field), and late joiners get the latest one in their snapshot."""
    from captiond.daemon import Daemon
    from captiond.feed import STATUS_FIELDS

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "config.toml"
    path.write_text("[overlay]\nport = 0\n")
    cfg = config.load(path, env={}, overrides={
        "audio.source": f"file:{fleurs_en[4]}", "database.url": f"sqlite:///{tmp_path / 'a.db'}"})

    async def main() -> tuple[dict, list[dict]]:
        daemon = Daemon(cfg, out=io.StringIO())
        sub = daemon.feed.subscribe("test")
        task = asyncio.create_task(daemon.run())
        try:
            while True:
                message = await asyncio.wait_for(sub.get(), 30)
                if message.get("type") == "status":
                    break
            return message, daemon.feed.snapshot()
        finally:
            daemon.session.stop()
            await asyncio.wait_for(task, 60)

    message, snapshot = asyncio.run(main())
    assert message["state"] == "captioning" and message["engine"] == "local"
    assert isinstance(message["session"], int)
    assert set(message) == {"type", *STATUS_FIELDS}
    assert message in snapshot


def _reload_a_local_daemon(clip: Path, tmp_path: Path, edited: str) -> Any:
    """Start a daemon captioning ``clip`` with the local engine, write ``edited`` into its
    config file, reload; returns the daemon as it stands right after the reload."""
    from captiond.daemon import Daemon

    path = tmp_path / "config.toml"
    path.write_text('[overlay]\nport = 0\n[engine]\nname = "local"\n')
    cfg = config.load(path, env={}, overrides={
        "audio.source": f"file:{clip}", "database.url": f"sqlite:///{tmp_path / 'a.db'}"})

    async def main() -> tuple[Any, dict[str, Any]]:
        daemon = Daemon(cfg, out=io.StringIO())
        task = asyncio.create_task(daemon.run())
        try:
            while not daemon.ready:
                assert not task.done()
                await asyncio.sleep(0.02)
            path.write_text('[overlay]\nport = 0\n' + edited)
            assert await daemon.reload(trigger="test")
            engine = daemon.session.streams[0].engine
            return daemon, {"name": engine.name, "generation": engine.generation}
        finally:
            daemon.session.stop()
            await asyncio.wait_for(task, 60)

    return asyncio.run(main())


def test_switching_between_engines_of_different_rates_is_reported_restart_needed(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine.name local -> openai on a running daemon: the stream is resampled for 16 kHz and
    the OpenAI engine takes 24 kHz, so the change is reported as needing a restart (and the
    local engine keeps running), not silently refused."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    daemon, engine = _reload_a_local_daemon(fleurs_en[4], tmp_path, '[engine]\nname = "openai"\n')
    assert daemon.restart_needed == {"engine": ["engine.name"]}
    assert daemon.cfg["engine.name"] == "local" and engine["name"] == "local"


def test_openai_edits_under_the_local_engine_restart_nothing_and_are_not_in_use(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """openai.model edited while the local engine captions: the engine is not rebuilt, no
    restart is asked for, the config takes the value and the log says it is not in use."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with caplog.at_level(logging.INFO, logger="captiond"):
        daemon, engine = _reload_a_local_daemon(
            fleurs_en[4], tmp_path, '[engine]\nname = "local"\n[openai]\nmodel = "gpt-other"\n')
    assert daemon.restart_needed == {} and engine["generation"] == 0
    assert daemon.cfg["openai.model"] == "gpt-other"
    assert any(r.getMessage().startswith("config.not_in_use settings=openai.model engine=local")
               for r in caplog.records)
