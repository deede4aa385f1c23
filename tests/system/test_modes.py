"""One transcript whatever the mode: the same recording through ``transcribe``, ``run --fast``, a
stdin pipe faster than real time and ``run`` at wall-clock pace stores the same lines, none
repeating a phrase, each a sentence (the README's promise)."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import FLEURS, ROOT, normalise
from kit import write_wav

from captiond.transcript.store import Store

RATE = 16_000


def joined(tmp_path: Path) -> Path:
    """Two clips read on with a 1 s pause and 2.5 s of silence after the last word."""
    from faster_whisper import decode_audio

    parts = []
    for name in ("fleurs-en-002", "fleurs-en-000"):
        parts += [decode_audio(str(FLEURS / f"{name}.ogg"), RATE), np.zeros(RATE, np.float32)]
    parts.append(np.zeros(int(1.5 * RATE), np.float32))
    return write_wav(tmp_path / "meeting.wav", np.concatenate(parts))


def lines_of(tmp_path: Path, mode: str, wav: Path) -> list[str]:
    db = tmp_path / f"{mode}.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "CAPTIOND_OVERLAY_PORT": "0", "XDG_RUNTIME_DIR": str(tmp_path)}
    cli = [sys.executable, "-m", "captiond"]
    url = ["--db", f"sqlite:///{db}", "--engine", "local"]
    if mode == "transcribe":
        cmd, feed = [*cli, "transcribe", "--no-progress", str(wav), *url], None
    elif mode == "fast":
        cmd, feed = [*cli, "run", "--fast", "--source", f"file:{wav}", *url], None
    elif mode == "realtime":
        cmd, feed = [*cli, "run", "--source", f"file:{wav}", *url], None
    else:  # the whole recording written into the pipe at once, far faster than real time
        with wave.open(str(wav)) as w:
            feed = w.readframes(w.getnframes())
        cmd = [*cli, "run", "--source", "stdin", "--rate", "16000", *url]
    proc = subprocess.run(cmd, input=feed, capture_output=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    store = Store(f"sqlite:///{db}")
    try:
        session = store.resolve_session("last")
        return [ln.text for ln in store.lines(session.id) if ln.text]
    finally:
        store.close()


def repeated_phrases(text: str, n: int = 4) -> list[str]:
    words = normalise(text).split()
    grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return sorted({g for g in grams if grams.count(g) > 1})


@pytest.mark.slow
def test_every_mode_stores_the_same_lines(tmp_path: Path) -> None:
    """transcribe, run --fast, a stdin pipe and real time: the same lines, word for word; no
    line repeats a phrase of four words; lines end at sentence ends."""
    wav = joined(tmp_path)
    by_mode = {mode: lines_of(tmp_path, mode, wav) for mode in ("transcribe", "fast", "stdin", "realtime")}
    reference = by_mode["transcribe"]
    assert len(reference) >= 3, reference
    for mode, lines in by_mode.items():
        assert lines == reference, f"{mode}: {lines} != transcribe: {reference}"
    for line in reference:
        assert not repeated_phrases(line), line
        # A line holds one sentence: a full stop inside it is followed by a short sentence at most.
        inner = [s for s in line.rstrip(".?!").split(". ") if s]
        assert len(inner) <= 2, line
    assert "sintra" in normalise(" ".join(reference)) and "years" in normalise(" ".join(reference))
