"""Everyday command-line paths: durations in audio time, export formats from the file name,
global options before the command, read commands on missing databases, clear errors."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

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
