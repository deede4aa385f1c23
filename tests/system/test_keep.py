"""Kept audio: the mix on the session clock, Ogg Opus written as the session runs, a file that
survives SIGKILL, retention by age and size, removal with the session, export --format audio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.audio import keep
from captiond.audio.block import AudioBlock
from captiond.audio.keep import KEEP_RATE, KeptFile, Mixer, plan_retention
from captiond.cli import main
from captiond.transcript.store import Store


def tone(seconds: float, rate: int = KEEP_RATE, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    # A voiced-like signal: a few harmonics under a syllable-rate envelope.
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    sig = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 6))
    return (0.2 * env * sig).astype(np.float32)


# -- the mixer [pure] -------------------------------------------------------------------------

pieces = st.lists(st.tuples(st.integers(0, 400), st.integers(1, 300)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(pieces)
def test_one_stream_is_written_as_given_with_gaps_as_silence(spans) -> None:  # type: ignore[no-untyped-def]
    """One stream: every sample lands at its start on the session clock; gaps are zeros."""
    mixer = Mixer([""])
    expect = np.zeros(0, np.float32)
    pos = 0
    out: list[np.ndarray] = []
    rng = np.random.default_rng(1)
    for gap, length in spans:
        start = pos + gap
        data = rng.uniform(-0.5, 0.5, length).astype(np.float32)
        mixer.push("", start, data)
        out += list(mixer.pop())
        expect = np.concatenate([expect, np.zeros(gap, np.float32), data])
        pos = start + length
    out += list(mixer.finish())
    got = np.concatenate(out)
    assert np.array_equal(got, expect)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 64))
def test_two_streams_are_summed_in_step(len_a, len_b, step) -> None:  # type: ignore[no-untyped-def]
    """Two streams fed in turns: the mix is their sum, sample for sample, whatever the pace."""
    a = np.full(len_a, 0.25, np.float32)
    b = np.full(len_b, 0.5, np.float32)
    mixer = Mixer(["mic", "system"], max_skew=10_000)
    out: list[np.ndarray] = []
    for i in range(0, max(len_a, len_b), step):
        if i < len_a:
            mixer.push("mic", i, a[i:i + step])
        if i < len_b:
            mixer.push("system", i, b[i:i + step])
        out += list(mixer.pop())
    out += list(mixer.finish())
    got = np.concatenate(out)
    expect = np.zeros(max(len_a, len_b), np.float32)
    expect[:len_a] += a
    expect[:len_b] += b
    assert np.allclose(got, expect)


def test_a_stalled_stream_holds_the_mix_back_at_most_max_skew() -> None:
    """A stream that stops delivering is taken as silence once the other is max_skew ahead."""
    mixer = Mixer(["mic", "system"], max_skew=1000)
    mixer.push("mic", 0, np.ones(5000, np.float32) * 0.1)
    mixer.push("system", 0, np.ones(100, np.float32) * 0.1)
    written = sum(len(c) for c in mixer.pop())
    assert written == 4000
    # What the stalled stream sends later for the stretch already written is dropped.
    mixer.push("system", 100, np.ones(200, np.float32))
    assert mixer.late_samples == 200


def test_a_long_gap_is_written_in_bounded_chunks() -> None:
    """An hour of lost source is silence handed out a second at a time (memory stays flat)."""
    mixer = Mixer([""])
    mixer.push("", 3600 * KEEP_RATE, np.ones(10, np.float32))
    sizes = [len(c) for c in mixer.pop()]
    assert max(sizes) <= keep.MIX_CHUNK
    assert sum(sizes) == 3600 * KEEP_RATE + 10


# -- the file ------------------------------------------------------------------------------


def test_keeper_writes_a_file_on_the_session_clock(tmp_path: Path) -> None:
    """Blocks at 48 kHz with a lost stretch: the file is 16 kHz Opus as long as the session
    clock says, silence where the source was lost, and private to the user."""
    path = tmp_path / "audio" / "session-1.ogg"
    keeper = keep.AudioKeeper(path, bitrate=24_000)
    rate = 48_000
    audio = tone(6.0, rate)
    step = rate * 32 // 1000
    for pos in range(0, len(audio), step):
        if 2 * rate <= pos < 3 * rate:
            continue  # the source was away for a second
        keeper.feed("", AudioBlock(audio[pos:pos + step], rate, pos))
    keeper.end("")
    keeper.close()
    assert keeper.error is None
    assert path.stat().st_mode & 0o777 == 0o600
    got = keep.read_audio(path)
    assert abs(len(got) / KEEP_RATE - 6.0) < 0.05
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    assert rms(got[int(2.1 * KEEP_RATE):int(2.9 * KEEP_RATE)]) < 0.005
    assert rms(got[int(3.5 * KEEP_RATE):int(5.5 * KEEP_RATE)]) > 0.05


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pathlib import Path
    from captiond.audio.keep import AudioKeeper, KEEP_RATE
    from captiond.audio.block import AudioBlock
    sys.path[:0] = [sys.argv[3], str(Path(sys.argv[3]).parent)]  # test_keep, then conftest
    from test_keep import tone
    keeper = AudioKeeper(Path(sys.argv[1]), bitrate=24_000)
    audio = tone(float(sys.argv[2]))
    step = KEEP_RATE * 32 // 1000
    for pos in range(0, len(audio), step):
        keeper.feed("", AudioBlock(audio[pos:pos + step], KEEP_RATE, pos))
    keeper.drain()
    print("fed", flush=True)
    time.sleep(600)
""")


def test_a_killed_writer_leaves_a_file_readable_to_its_last_page(tmp_path: Path) -> None:
    """SIGKILL after 20 s of audio went to the encoder: the file (never closed) decodes, and
    at most the last 2 s are missing."""
    path = tmp_path / "session-7.ogg"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "20", str(Path(__file__).parent)],
        stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "fed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    got = keep.read_audio(path)
    lost = 20.0 - len(got) / KEEP_RATE
    print(f"killed writer: {len(got) / KEEP_RATE:.2f} s of 20 s readable (lost {lost:.2f} s)")
    assert 0 <= lost <= 2.0


# -- retention [pure plan] -----------------------------------------------------------------


def test_retention_retires_old_files_then_the_oldest_beyond_the_size() -> None:
    """Older than the age limit goes; then the oldest until the rest fit; the running
    session's file stays whatever its size."""
    day = 86_400.0
    files = [KeptFile(i, Path(f"session-{i}.ogg"), 10, now) for i, now in
             [(1, 0.0), (2, 5 * day), (3, 8 * day), (4, 9 * day), (5, 9.5 * day)]]
    doomed = plan_retention(files, now=10 * day, max_age_s=7 * day, max_bytes=25,
                            keep=frozenset({3}))
    assert sorted(f.session_id for f in doomed) == [1, 2, 4]
    assert plan_retention(files, now=10 * day, max_age_s=0, max_bytes=0) == []


def test_retention_deletes_files_on_disk_by_age_and_total_size(tmp_path: Path) -> None:
    """apply_retention removes what the plan retires, oldest first, and nothing else."""
    from captiond import config

    cfg = config.parse(f'[audio]\nkeep_dir = "{tmp_path}"\nkeep_days = 7\nkeep_max_mb = 1\n',
                       env={})
    now = 100 * 86_400.0
    for sid, age_days, size in [(1, 9, 10), (2, 3, 600_000), (3, 2, 600_000), (4, 1, 10)]:
        path = keep.audio_path(tmp_path, sid)
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age_days * 86_400, now - age_days * 86_400))
    (tmp_path / "notes.txt").write_text("not ours")
    assert sorted(keep.apply_retention(cfg, now=now, keep=frozenset({4}))) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "session-3.ogg", "session-4.ogg"]


# -- the daemon: a session's audio, exported and removed ---------------------------------------


def test_session_keeps_its_audio_exports_it_and_deletes_it_with_the_session(
        fleurs_en, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """With audio.keep, a transcribed file leaves session-N.ogg as long as the recording;
    export --format audio copies it; deleting the session removes it."""
    from captiond.audio.sources import decode_file_chunks

    db = f"sqlite:///{tmp_path / 'c.db'}"
    audio_dir = tmp_path / "kept"
    monkeypatch.setenv("CAPTIOND_AUDIO_KEEP", "true")
    monkeypatch.setenv("CAPTIOND_AUDIO_KEEP_DIR", str(audio_dir))
    clip = fleurs_en[0]
    assert main(["transcribe", str(clip), "--db", db, "--no-progress"]) == 0
    sid = Store(db).list_sessions()[0][0].id
    kept = audio_dir / f"session-{sid}.ogg"
    got = keep.read_audio(kept)
    seconds = sum(len(c) for c in decode_file_chunks(clip, KEEP_RATE)) / KEEP_RATE
    assert abs(len(got) / KEEP_RATE - seconds) < 0.1
    out = tmp_path / "meeting.ogg"
    assert main(["export", str(sid), "--db", db, "-o", str(out)]) == 0
    assert out.read_bytes() == kept.read_bytes()
    assert main(["delete", str(sid), "--db", db, "--yes"]) == 0
    assert not kept.exists()
    capsys.readouterr()
    assert main(["export", str(sid), "--db", db, "-o", str(out)]) != 0


def test_export_audio_without_kept_audio_says_how_to_keep_it(
        fleurs_en, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """A session recorded without audio.keep: export --format audio names the setting."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    monkeypatch.setenv("CAPTIOND_AUDIO_KEEP_DIR", str(tmp_path / "kept"))
    assert main(["transcribe", str(fleurs_en[0]), "--db", db, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", "last", "--db", db, "--format", "audio", "-o",
                 str(tmp_path / "x.ogg")]) != 0
    assert "audio.keep = true" in capsys.readouterr().err


def test_a_daemon_killed_mid_session_keeps_its_audio_up_to_2_s_before(tmp_path: Path) -> None:
    """`captiond run` on a pipe fed like a capture device (100 ms every 100 ms) with
    audio.keep: once `status` reports 10 s captured, kill -9; the session's file decodes to
    at least what was captured then, minus 2 s."""
    import json
    import threading

    from service_helpers import READY_TIMEOUT_S, DaemonProcess, daemon_env

    fifo = tmp_path / "audio.pcm"
    os.mkfifo(fifo)
    db = tmp_path / "captiond.db"
    kept = tmp_path / "kept"
    env = daemon_env(tmp_path, CAPTIOND_OVERLAY_ENABLED="false", CAPTIOND_AUDIO_KEEP="true",
                     CAPTIOND_AUDIO_KEEP_DIR=str(kept), CAPTIOND_ENGINE_NAME="local")
    daemon = DaemonProcess(["run", "--db", f"sqlite:///{db}", "--source", f"pipe:{fifo}"], env)
    audio = tone(30.0)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    step = KEEP_RATE // 10 * 2  # 100 ms of PCM16
    stop = threading.Event()

    def play() -> None:
        with open(fifo, "wb") as f:  # blocks until the daemon opens the pipe
            for pos in range(0, len(pcm), step):
                if stop.wait(0.1):
                    return
                f.write(pcm[pos:pos + step])
                f.flush()
            stop.wait(600)  # the writer stays: no "device lost"

    threading.Thread(target=play, daemon=True).start()
    captured = 0.0
    try:
        daemon.wait_stderr("daemon.ready", READY_TIMEOUT_S)
        for _ in range(600):
            out = subprocess.run([sys.executable, "-m", "captiond", "status", "--json"],
                                 env=env, capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                captured = float(json.loads(out.stdout).get("audio_s") or 0.0)
                if captured >= 10.0:
                    break
            threading.Event().wait(0.1)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.wait(30)
    finally:
        stop.set()
        daemon.kill()
    assert captured >= 10.0
    [path] = list(kept.glob("session-*.ogg"))
    got = len(keep.read_audio(path)) / KEEP_RATE
    print(f"killed daemon: {captured:.1f} s captured when asked, {got:.2f} s readable")
    assert got >= captured - 2.0
