"""The daemon as a service: the real ``captiond run`` subprocess on FLEURS speech,
a real notify socket, real config edits, real signals, the real database afterwards."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import normalise, reference
from service_helpers import (
    READY_TIMEOUT_S,
    DaemonProcess,
    NotifySocket,
    daemon_env,
    decode_16k,
    last_speech_end_s,
)

from captiond import sdnotify

#: Silence after the last word fed to the daemon before SIGTERM: less than the VAD's 400 ms
#: that would close the utterance, so the shutdown itself must commit the audio in flight.
SIGTERM_AFTER_LAST_WORD_S = 0.25
#: Longest the daemon may take to read all the fed audio (it reads a pipe as fast as the
#: engine takes it); the status rounds the stream clock to 0.1 s.
FED_WAIT_S = 60.0
STATUS_ROUNDING_S = 0.1
#: Longest a test waits for a log line after a config edit (watchfiles debounce + parse).
RELOAD_WAIT_S = 10.0
TOKEN = "tok_AbCdEf0123456789xyz"
EVENT_NAME = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")


def _config(port: int = 0, *, min_silence: int = 400, font_size: int = 36,
            max_viewers: int = 100, token: str = TOKEN) -> str:
    return (
        f'[overlay]\nport = {port}\ntoken = "{token}"\nfont_size = {font_size}\n'
        f"max_viewers = {max_viewers}\n[vad]\nmin_silence_ms = {min_silence}\n"
    )


@pytest.fixture(scope="module")
def meeting(fleurs_en: list[Path]) -> dict:
    """Two FLEURS sentences back to back, clip 4 then clip 0, as 16 kHz PCM16 ending
    SIGTERM_AFTER_LAST_WORD_S after the last word."""
    first, last = decode_16k(fleurs_en[4]), decode_16k(fleurs_en[0])
    import numpy as np

    end = int((last_speech_end_s(last) + SIGTERM_AFTER_LAST_WORD_S) * 16_000)
    audio = np.concatenate([first, last[:end]])
    return {
        "pcm": (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(),
        "fed_s": len(audio) / 16_000,
        "first_ref": reference(fleurs_en[4]),
        "last_ref": reference(fleurs_en[0]),
    }


def _status(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "captiond", "status", *extra],
        check=False, env=env, capture_output=True, text=True, timeout=30,
    )


def _viewer(url: str, result: dict) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(url, open_timeout=10) as ws:
        result["connected"] = True
        try:
            while True:
                ws.recv()
        except ConnectionClosed as exc:
            result["code"] = exc.rcvd.code if exc.rcvd else None


def _json_lines(daemon: DaemonProcess) -> list[dict]:
    return [json.loads(line) for _, line in daemon.stderr if line.strip()]


def test_service_lifecycle_on_fleurs(meeting: dict, tmp_path: Path) -> None:
    """READY/STATUS/WATCHDOG/STOPPING, status, live reload (file and SIGHUP, an invalid edit),
    a viewer closed with 1001, and the last sentence, cut by SIGTERM before its pause, stored;
    exit status 0. The speech comes through a pipe on stdin that stays open: the daemon has all
    of it before SIGTERM, whatever the test's pace."""
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(_config(), encoding="utf-8")
    db = tmp_path / "captiond.db"
    notify = NotifySocket(tmp_path / "notify.sock")
    env = daemon_env(tmp_path, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    daemon = DaemonProcess(
        ["run", "--config", str(cfg_path), "--db", f"sqlite:///{db}", "--log-format", "json",
         "--source", "stdin", "--rate", "16000"],
        env, stdin_pipe=True,
    )
    try:
        writer = daemon.feed(meeting["pcm"])
        _, ready = notify.wait_for("READY", READY_TIMEOUT_S)
        assert ready["MAINPID"] == str(daemon.proc.pid)
        assert "engine local" in ready["STATUS"] and "session 1" in ready["STATUS"]

        # captiond status, text and JSON, from another process.
        text = _status(env)
        assert text.returncode == 0, text.stderr
        for label in ("daemon:", "engine:", "session:", "lines stored:", "lag:", "viewers:",
                      "cost so far:"):
            assert label in text.stdout
        st = json.loads(_status(env, "--json").stdout)
        assert st["state"] == "captioning" and st["engine"] == "local" and st["session"] == 1
        assert st["viewers"] == 0 and st["cost_usd"] == 0.0

        # A viewer on the overlay: counted by status, closed with 1001 at shutdown.
        ws_url = st["overlay_url"].replace("http://", "ws://") + f"ws?token={TOKEN}"
        viewer: dict = {}
        threading.Thread(target=_viewer, args=(ws_url, viewer), daemon=True).start()
        deadline = time.monotonic() + 10
        while json.loads(_status(env, "--json").stdout)["viewers"] != 1:
            assert time.monotonic() < deadline, "the viewer never showed in status"
            time.sleep(0.1)

        # A valid edit: live settings apply, a restart-only one is reported.
        mark = len(daemon.stderr)
        cfg_path.write_text(_config(min_silence=450, font_size=48, max_viewers=50), encoding="utf-8")
        line = json.loads(daemon.wait_stderr('"config.reloaded"', RELOAD_WAIT_S, mark))
        assert line["trigger"] == "file"
        assert set(line["applied"].split(",")) == {"vad.min_silence_ms", "overlay.font_size"}
        restart = json.loads(daemon.wait_stderr('"config.restart_needed"', RELOAD_WAIT_S, mark))
        assert restart["settings"] == "overlay.max_viewers"

        # An invalid edit: key and reason logged, the value (a secret) not, old config kept.
        mark = len(daemon.stderr)
        cfg_path.write_text(_config(token="not a valid token!"), encoding="utf-8")
        failed = json.loads(daemon.wait_stderr('"config.reload_failed"', RELOAD_WAIT_S, mark))
        assert "overlay.token" in failed["error"] and "URL-safe" in failed["error"]
        assert "not a valid token" not in daemon.stderr_text()

        # Fixed again, then SIGHUP re-reads the same file: nothing changes.
        mark = len(daemon.stderr)
        cfg_path.write_text(_config(min_silence=450, font_size=48, max_viewers=50), encoding="utf-8")
        daemon.wait_stderr('"config.reloaded"', RELOAD_WAIT_S, mark)
        mark = len(daemon.stderr)
        daemon.signal(signal.SIGHUP)
        hup = json.loads(daemon.wait_stderr('"trigger": "SIGHUP"', RELOAD_WAIT_S, mark))
        assert hup["changed"] == "none"
        st = json.loads(_status(env, "--json").stdout)
        assert st["restart_needed"] == {"overlay server": ["overlay.max_viewers"]}

        # SIGTERM once the daemon has read every fed sample (its stream clock, not the wall
        # clock): it has heard the last word and too little silence to end the sentence.
        writer.join(FED_WAIT_S)
        assert not writer.is_alive(), "the daemon stopped reading its stdin"
        deadline = time.monotonic() + FED_WAIT_S
        while json.loads(_status(env, "--json").stdout)["audio_s"] < (
                meeting["fed_s"] - STATUS_ROUNDING_S):
            assert time.monotonic() < deadline, "the daemon never read all the fed audio"
            time.sleep(0.1)
        daemon.signal(signal.SIGTERM)
        rc = daemon.wait()
    finally:
        daemon.kill()
        notify.close()
    assert rc == 0, daemon.stderr_text()
    assert notify.all("STOPPING") == ["1"]
    assert len(notify.all("WATCHDOG")) >= 5  # one per 0.5 s over the run
    assert viewer.get("code") == 1001

    with sqlite3.connect(db) as conn:
        status = conn.execute("select status from sessions").fetchall()
        texts = [r[0] for r in conn.execute(
            "select text from segments where status = 'final' order by audio_start_ms")]
    assert status == [("completed",)]
    stored = normalise(" ".join(texts))
    # The reference's last two words ("30 year") end what was stored (as "30 years": the
    # reference writes "year"; Whisper may write "25 to 30" as "25-30", normalised "25 30").
    last_words = " ".join(meeting["last_ref"].split()[-2:])
    assert last_words in " ".join(stored.split()[-3:]), stored
    assert meeting["first_ref"].split()[0] in stored

    # Structured logs: every line is JSON with a stable dotted event name; no secret.
    events = _json_lines(daemon)
    assert all(EVENT_NAME.match(e["event"]) for e in events), [e["event"] for e in events]
    names = {e["event"] for e in events}
    assert {"daemon.ready", "daemon.stopping", "config.reloaded", "session.ended"} <= names
    assert TOKEN not in daemon.stderr_text()


def test_second_signal_forces_exit(fleurs_en: list[Path], tmp_path: Path) -> None:
    """SIGTERM starts a clean stop; a second one while it runs exits at once with 130."""
    env = daemon_env(tmp_path)
    db = tmp_path / "captiond.db"
    daemon = DaemonProcess(
        ["run", "--db", f"sqlite:///{db}", "--source", f"file:{fleurs_en[2]}"],
        env | {"CAPTIOND_OVERLAY_ENABLED": "false"},
    )
    try:
        daemon.wait_stderr("daemon.ready", READY_TIMEOUT_S)
        time.sleep(3.0)  # mid-sentence: the clean stop has an utterance to decode
        daemon.signal(signal.SIGTERM)
        daemon.wait_stderr("daemon.stopping", 10)
        daemon.signal(signal.SIGTERM)
        rc = daemon.wait(10)
    finally:
        daemon.kill()
    assert rc == 130
    assert "daemon.forced_exit" in daemon.stderr_text()
    assert "session.ended" not in daemon.stderr_text()  # it did not wait for the clean end


def test_status_without_daemon(tmp_path: Path) -> None:
    result = _status(daemon_env(tmp_path))
    assert result.returncode == 1
    assert "no captiond daemon is running" in result.stderr
    assert "captiond run" in result.stderr


def test_notify_abstract_socket_and_watchdog_env(tmp_path: Path) -> None:
    """``@name`` addresses the abstract namespace; WATCHDOG_PID for another process is ignored."""
    import os
    import socket

    name = f"captiond-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        n = sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000"})
        assert n.watchdog_s == 2.0
        assert n.ready("up")
        assert sock.recv(1024).decode().splitlines() == ["READY=1", f"MAINPID={os.getpid()}",
                                                         "STATUS=up"]
        assert not n.status("up")  # unchanged: not sent again
        assert n.status("two\nlines")
        assert sock.recv(1024) == b"STATUS=two lines"
        n.close()
    other = sdnotify.Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_s is None
    assert not sdnotify.Notifier({}).send(READY=1)  # outside systemd: a no-op
    gone = sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert not gone.ready()  # the manager went away: dropped, no exception
