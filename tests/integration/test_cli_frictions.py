"""Everyday command-line paths: durations in audio time, export formats from the file name,
global options before the command, read commands on missing databases, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from captiond.cli import main

RATE = 16_000


def _silence(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.zeros(int(RATE * seconds), "<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def transcribed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database holding one 40 s recording, transcribed in a few seconds of wall time."""
    tmp = tmp_path_factory.mktemp("durations")
    db = f"sqlite:///{tmp / 'c.db'}"
    assert main(["transcribe", str(_silence(tmp / "quiet.wav", 40)), "--db", db,
                 "--no-progress"]) == 0
    return db


def test_sessions_lists_audio_time_and_wall_time_apart(transcribed: str, capsys) -> None:  # type: ignore[no-untyped-def]
    """`sessions` shows the 40 s of audio as its length, the shorter wall time beside it."""
    capsys.readouterr()
    assert main(["sessions", "--db", transcribed]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[2:4] == ["audio", "wall"]
    assert row.split()[3] == "00:00:40"
    assert row.split()[4] != "00:00:40"


def test_minutes_give_the_audio_duration(transcribed: str, tmp_path: Path) -> None:
    """The minutes' Duration is the audio's (40 s), with the wall time on its own row."""
    out = tmp_path / "m.md"
    assert main(["export", "last", "-o", str(out), "--db", transcribed]) == 0
    text = out.read_text()
    assert "| Duration | 40 s of audio |" in text
    assert "| Wall time |" in text


def test_export_format_from_the_extension(transcribed: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`-o x.json` writes JSON; `-o x.docx` is refused with the known extensions named."""
    out = tmp_path / "x.json"
    assert main(["export", "last", "-o", str(out), "--db", transcribed]) == 0
    assert out.read_text().lstrip().startswith("{")
    capsys.readouterr()
    assert main(["export", "last", "-o", str(tmp_path / "x.docx"), "--db", transcribed]) == 1
    err = capsys.readouterr().err
    assert "'.docx'" in err and ".srt" in err and "--format" in err
    assert not (tmp_path / "x.docx").exists()


def _cli(args: list[str], env: dict[str, str] | None = None,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "CAPTIOND_OVERLAY_PORT": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "captiond", *args], env=full, input=stdin,
                          capture_output=True, timeout=300)


def test_global_options_before_the_command(transcribed: str, capsys) -> None:  # type: ignore[no-untyped-def]
    """`captiond --db URL sessions` works; given in both places, the command's own one wins."""
    capsys.readouterr()
    assert main(["--db", transcribed, "sessions"]) == 0
    assert "quiet.wav" in capsys.readouterr().out
    assert main(["--db", "sqlite:////nonexistent/x.db", "sessions", "--db", transcribed]) == 0
    assert "quiet.wav" in capsys.readouterr().out


def test_read_command_on_a_missing_sqlite_folder_is_an_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`sessions --db sqlite:///missing/x.db`: one line naming the folder; nothing created."""
    missing = tmp_path / "nope" / "x.db"
    for args in (["sessions"], ["show", "last"], ["export", "last"]):
        capsys.readouterr()
        assert main([*args, "--db", f"sqlite:///{missing}"]) == 1
        err = capsys.readouterr().err
        assert f"the folder {missing.parent} does not exist" in err and "--db" in err
    assert not missing.parent.exists()


def test_store_url_is_logged_with_only_the_password_hidden(tmp_path: Path) -> None:
    """store.opened shows the database URL; a password in a URL never reaches a log line."""
    from captiond import config
    from captiond.daemon import _register_secrets
    from captiond.logs import redact

    url = "postgresql+psycopg://ann:hunter2secret@db.example:5432/captions"
    _register_secrets(config.parse(f'[database]\nurl = "{url}"\n', env={}))
    assert redact(f"url={url}") == "url=postgresql+psycopg://ann:<redacted>@db.example:5432/captions"
    db = tmp_path / "c.db"
    proc = _cli(["transcribe", str(_silence(tmp_path / "q.wav", 2)), "--db", f"sqlite:///{db}"])
    assert f"store.opened url=sqlite:///{db}" in proc.stderr.decode()


def test_transcribe_reads_stdin_and_prints_no_service_news(tmp_path: Path, fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """`transcribe -` reads the recording from stdin; no daemon.ready line on a batch run."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    proc = _cli(["transcribe", "-", "--db", db], stdin=fleurs_en[3].read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert "cabbage juice" in proc.stdout.decode().lower()
    assert b"daemon.ready" not in proc.stderr
    from captiond.transcript.store import Store

    assert Store(db).resolve_session("last").title == "stdin"


def test_batch_engine_does_not_warn_about_lag() -> None:
    """engine.behind advice is for live runs: a batch (transcribe) engine never gives it."""
    from captiond import config
    from captiond.engines.factory import build_engine

    cfg = config.parse('[engine]\nname = "local"\n', env={})
    assert build_engine(cfg, realtime=False).warn_lag is False  # type: ignore[attr-defined]
    assert build_engine(cfg, realtime=True).warn_lag is True  # type: ignore[attr-defined]


def test_failed_decode_leaves_no_empty_session(tmp_path: Path, fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """A file that breaks after its first second: one error line, no `interrupted` session."""
    data = fleurs_en[0].read_bytes()
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(data[:4000] + rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    db = f"sqlite:///{tmp_path / 'c.db'}"
    proc = _cli(["transcribe", str(bad), "--db", db])
    assert proc.returncode == 1 and b"cannot decode" in proc.stderr
    assert b"session.started" in proc.stderr  # it did get as far as a session
    from captiond.transcript.store import Store

    assert Store(db).list_sessions() == []


@pytest.mark.parametrize(("at", "message"), [
    ("00:05:00", "--at 00:05:00 is past the end of session 1 (it ends at 00:00:40)"),
    ("1:70", "'1:70' is not a time"),
    ("nan", "'nan' is not a time"),
])
def test_show_at_past_the_end_or_malformed(transcribed: str, at: str, message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    """`show --at` past the end or not a time: a clear message and a non-zero exit."""
    capsys.readouterr()
    try:
        rc = main(["show", "last", "--at", at, "--db", transcribed])
    except SystemExit as exc:  # argparse's own error exit
        rc = int(exc.code or 0)
    assert rc != 0
    assert message in capsys.readouterr().err


def test_status_works_with_a_broken_config_and_shows_the_reload_error(tmp_path: Path) -> None:
    """A running daemon whose config file broke: `status` still answers, with the reload error."""
    cfg = tmp_path / "config.toml"
    cfg.write_text("[vad]\nmin_silence_ms = 400\n")
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "CAPTIOND_OVERLAY_PORT": "0"}
    (tmp_path / "run").mkdir(mode=0o700)
    wav = _silence(tmp_path / "long.wav", 120)
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "captiond", "run", "--config", str(cfg), "--source", f"file:{wav}",
         "--engine", "local", "--db", f"sqlite:///{tmp_path / 'c.db'}"],
        env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "daemon.ready" in line:
                break
        cfg.write_text("[vad]\nmin_silence_ms = 'soon'\n")
        for line in daemon.stderr:
            if "config.reload_failed" in line:
                break
        proc = _cli(["status", "--config", str(cfg)], env)
        out, err = proc.stdout.decode(), proc.stderr.decode()
        assert proc.returncode == 0, err
        assert "vad.min_silence_ms" in err  # the broken file is named
        assert "daemon:" in out and "last reload failed, old settings kept" in out
        assert "vad.min_silence_ms" in out
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
