"""The OBS output against real OBS Studio: headless OBS (Xvfb, software OpenGL) streams to a
local RTMP listener (FFmpeg); ``captiond run`` captions a FLEURS clip with ``--output obs``; the
CEA-608 captions read back from the received stream hold the stored finals, word for word.

Needs Debian's ``obs-studio`` (29+, with obs-websocket), ``xvfb`` and ``ffmpeg``. Without them
the test is skipped, except under ``CI=true``, where it fails (.ci/apt-packages installs them).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from cea608 import captions
from conftest import normalise
from needs import need_programs
from service_helpers import DaemonProcess, daemon_env, decode_16k, write_wav

OBS_PASSWORD = "obs-test-password-1"
#: Longest OBS takes to start streaming; the daemon's run; the stream's drain after it.
OBS_START_S = 60.0
DAEMON_S = 120.0
#: Stream kept running after the daemon exits, so OBS sends the captions it still holds.
TAIL_S = 4.0

_TOOLS = ("obs", "xvfb-run", "ffmpeg")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _obs_home(home: Path, ws_port: int, rtmp: str) -> None:
    """A fresh OBS profile: 320x240 at 15 fps, x264 ultrafast, a custom RTMP server, an empty
    scene, and obs-websocket on ``ws_port`` with a password (OBS 29 keeps its settings in
    global.ini)."""
    cfg = home / ".config" / "obs-studio"
    (cfg / "basic" / "profiles" / "T").mkdir(parents=True)
    (cfg / "basic" / "scenes").mkdir(parents=True)
    (cfg / "global.ini").write_text(
        "[General]\nEnableAutoUpdates=false\nConfirmOnExit=false\n\n"
        "[Basic]\nProfile=T\nProfileDir=T\nSceneCollection=T\nSceneCollectionFile=T\n\n"
        f"[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={ws_port}\n"
        f"AlertsEnabled=false\nAuthRequired=true\nServerPassword={OBS_PASSWORD}\n")
    (cfg / "basic" / "profiles" / "T" / "basic.ini").write_text(
        "[General]\nName=T\n\n[Video]\nBaseCX=320\nBaseCY=240\nOutputCX=320\nOutputCY=240\n"
        "FPSType=1\nFPSInt=15\n\n[Output]\nMode=Simple\n\n[SimpleOutput]\nVBitrate=300\n"
        "ABitrate=64\nStreamEncoder=x264\nPreset=ultrafast\n")
    server, _, key = rtmp.rpartition("/")
    (cfg / "basic" / "profiles" / "T" / "service.json").write_text(
        '{"type":"rtmp_custom","settings":{"server":"%s","key":"%s","use_auth":false,'
        '"bwtest":false}}' % (server, key))
    (cfg / "basic" / "scenes" / "T.json").write_text(
        '{"current_scene":"Scene","current_program_scene":"Scene","scene_order":[{"name":"Scene"}],'
        '"name":"T","sources":[{"id":"scene","versioned_id":"scene","name":"Scene",'
        '"uuid":"3c9f4b8e-0000-4000-8000-000000000001","settings":{"items":[],"id_counter":0}}],'
        '"groups":[],"transitions":[],"current_transition":"Fade","transition_duration":300}')


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s} s")


def rows_of(shown: list[str]) -> list[str]:
    """The roll-up rows in order, from the pop-on captions OBS put in the stream: each caption
    shows the last rows; a row may grow between captions before it scrolls up."""
    rows: list[str] = []
    for caption in shown:
        new = [r for r in caption.split("\n") if r.strip()]
        if not new:
            continue
        if len(rows) >= 2 and new[0] == rows[-2]:
            rows[-2:] = new
        elif rows and new[0].startswith(rows[-1]):
            rows[-1:] = new
        else:
            rows.extend(new)
    return rows


def test_real_obs_carries_the_finals_as_cea608(tmp_path: Path, fleurs_en: list[Path]) -> None:
    """OBS embeds captiond's roll-up captions in its stream: the 608 text read back from the
    received FLV is the stored finals, word for word."""
    import numpy as np

    need_programs(*_TOOLS, install="apt-get install obs-studio xvfb xauth libgl1-mesa-dri ffmpeg")

    speech = write_wav(tmp_path / "speech.wav", np.concatenate(
        [decode_16k(fleurs_en[3]), decode_16k(fleurs_en[4])]))
    ws_port, rtmp_port = _free_port(), _free_port()
    rtmp = f"rtmp://127.0.0.1:{rtmp_port}/live/test"
    home = tmp_path / "home"
    _obs_home(home, ws_port, rtmp)
    flv = tmp_path / "out.flv"
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-listen", "1", "-i", rtmp,
         "-c", "copy", str(flv)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    obs_log = (tmp_path / "obs.log").open("w")
    obs = subprocess.Popen(
        ["xvfb-run", "-a", "-s", "-screen 0 640x480x24", "obs", "--startstreaming",
         "--minimize-to-tray", "--disable-shutdown-check", "--disable-updater", "--multi"],
        env={**os.environ, "HOME": str(home), "LIBGL_ALWAYS_SOFTWARE": "1",
             "XDG_CONFIG_HOME": str(home / ".config")},
        stdout=obs_log, stderr=subprocess.STDOUT, start_new_session=True)
    db = tmp_path / "c.db"
    try:
        _wait_port(ws_port, OBS_START_S)
        deadline = time.monotonic() + OBS_START_S
        while not (flv.exists() and flv.stat().st_size > 0):  # the stream is live
            assert time.monotonic() < deadline, (tmp_path / "obs.log").read_text()[-3000:]
            time.sleep(0.2)
        env = daemon_env(tmp_path, OBS_PW=OBS_PASSWORD, CAPTIOND_OVERLAY_ENABLED="false")
        daemon = DaemonProcess(
            ["run", "--db", f"sqlite:///{db}", "--source", f"file:{speech}",
             "--output", f"kind=obs,url=ws://127.0.0.1:{ws_port},password_env=OBS_PW"], env)
        try:
            rc = daemon.wait(DAEMON_S)
        finally:
            daemon.kill()
        assert rc == 0, daemon.stderr_text()
        log = daemon.stderr_text()
        time.sleep(TAIL_S)
    finally:
        if obs.poll() is None:
            os.killpg(obs.pid, signal.SIGTERM)
            try:
                obs.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(obs.pid, signal.SIGKILL)
                obs.wait(10)
        obs_log.close()
        try:
            ffmpeg.wait(20)
        except subprocess.TimeoutExpired:
            ffmpeg.send_signal(signal.SIGINT)
            ffmpeg.wait(10)
    assert "output.failed" not in log and OBS_PASSWORD not in log
    with sqlite3.connect(db) as con:
        finals = [t for (t,) in con.execute(
            "SELECT text FROM segments WHERE status = 'final' AND text != '' "
            "ORDER BY audio_start_ms")]
    assert len(finals) >= 2
    shown = captions(flv)
    assert shown, "no CEA-608 captions in the received stream"
    assert all(len(r) <= 32 for c in shown for r in c.split("\n"))
    assert normalise(" ".join(rows_of(shown))) == normalise(" ".join(finals))
