"""Raw PCM on stdin: a pipe waits for the engine and loses nothing; a live capture drops what
the engine cannot take as one stored gap per outage; a silent open pipe stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
from conftest import ROOT, normalise, reference

from captiond.audio.block import AudioBlock
from captiond.audio.sources import StdinSource
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

RATE = 16_000
#: Audio written into the pipe, and the pipeline's queue (its smallest setting).
AUDIO_S = 20.0
QUEUE_S = 1.0


class StalledEngine:
    """Takes blocks only once ``resume`` says so, then as fast as they come; counts samples."""

    name = "fake"
    sample_rate = RATE

    def __init__(self, resume: Any) -> None:
        self.resume = resume
        self.samples = 0

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Any) -> None:
        await self.resume()
        async for block in audio:
            self.samples += len(block.samples)

    def stats(self) -> dict[str, Any]:
        return {}

    def update_settings(self, params: Any, partial_interval_s: float, word_timestamps: bool) -> None:
        pass

    def set_gap_sink(self, fn: Any) -> None:
        pass

    def set_drop_sink(self, fn: Any) -> None:
        pass


def _feed(fd: int, seconds: float, *, close: bool = True) -> threading.Thread:
    """Writes ``seconds`` of a quiet tone into the pipe as fast as it is read, then closes it."""
    tone = (0.1 * np.sin(np.arange(int(RATE * seconds)) * 0.05) * 32767).astype("<i2").tobytes()

    def write() -> None:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(tone)
            if not close:
                time.sleep(3600)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _session(tmp_path: Path, source: StdinSource, engine: StalledEngine) -> tuple[Store, int]:
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    session = Session(store, [Stream(source, engine)], realtime=True, queue_s=QUEUE_S)
    sid = asyncio.run(session.run())
    return store, sid


def test_stdin_pipe_waits_for_a_slow_engine(tmp_path: Path) -> None:
    """Piped stdin faster than the engine: back-pressure, every sample reaches it, no gap."""
    read_fd, write_fd = os.pipe()
    _feed(write_fd, AUDIO_S)
    source = StdinSource(rate=RATE, fd=read_fd)
    engine = StalledEngine(lambda: asyncio.sleep(1.0))
    store, sid = _session(tmp_path, source, engine)
    os.close(read_fd)
    assert engine.samples == int(RATE * AUDIO_S)
    assert store.gaps(sid) == []
    assert store.resolve_session(sid).status == "completed"


def test_live_stdin_stores_one_gap_per_outage(tmp_path: Path) -> None:
    """Live stdin with a stalled engine: the lost audio is one gap row with its reason."""
    read_fd, write_fd = os.pipe()
    _feed(write_fd, AUDIO_S)
    source = StdinSource(rate=RATE, fd=read_fd, live=True)

    async def until_all_read() -> None:
        while source.position < RATE * AUDIO_S:
            await asyncio.sleep(0.01)

    engine = StalledEngine(until_all_read)
    store, sid = _session(tmp_path, source, engine)
    os.close(read_fd)
    gaps = store.gaps(sid)
    assert len(gaps) == 1, [(g.start_ms, g.end_ms) for g in gaps]
    assert gaps[0].reason == "engine behind"
    lost_ms = gaps[0].end_ms - gaps[0].start_ms
    assert lost_ms + engine.samples * 1000 // RATE == AUDIO_S * 1000
    assert lost_ms > (AUDIO_S - 2 * QUEUE_S) * 1000


def test_sigterm_stops_a_silent_open_stdin(tmp_path: Path) -> None:
    """SIGTERM while the writer keeps stdin open but silent: exit 0, session completed."""
    db = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "CAPTIOND_OVERLAY_PORT": "0", "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "captiond", "run", "--source", "stdin", "--engine", "local",
         "--db", f"sqlite:///{db}", "--log-format", "json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"\0" * RATE * 2 * 2)  # two seconds of silence, then nothing; never closed
    proc.stdin.flush()
    for line in proc.stderr:
        if b"daemon.ready" in line:
            break
    time.sleep(0.5)  # the reader is waiting on the silent pipe now
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdin.close()
    assert rc == 0, proc.stderr.read().decode()
    session = Store(f"sqlite:///{db}").resolve_session("last")
    assert session.status == "completed"
    assert session.audio_seconds == 2.0


@pytest.mark.slow
def test_meeting_piped_faster_than_real_time_loses_nothing(tmp_path: Path, fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """Five clips piped into `run --source stdin` at full speed (1 s queue): no gap, all text."""
    from faster_whisper import decode_audio

    parts = []
    for clip in fleurs_en:
        parts += [decode_audio(str(clip), RATE), np.zeros(int(1.5 * RATE), np.float32)]
    audio = np.concatenate(parts)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    db = f"sqlite:///{tmp_path / 'c.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "CAPTIOND_OVERLAY_PORT": "0", "CAPTIOND_AUDIO_QUEUE_S": "1",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "captiond", "run", "--source", "stdin", "--rate", "16000",
         "--engine", "local", "--db", db],
        input=pcm, capture_output=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"audio.overflow" not in proc.stderr
    store = Store(db)
    session = store.resolve_session("last")
    assert store.gaps(session.id) == []
    assert session.audio_seconds == pytest.approx(len(audio) / RATE, abs=0.05)
    text = " ".join(ln.text for ln in store.lines(session.id))
    wer = jiwer.wer(" ".join(reference(c) for c in fleurs_en), normalise(text))
    print(f"stdin pipe WER {wer:.3f}")
    assert wer <= 0.10
