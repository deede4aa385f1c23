"""Outputs in the real daemon: ``captiond run`` on FLEURS speech with a Zoom output from the
config file and a signed webhook from ``--output``, a YouTube output added by editing the
config while it runs, their status in ``captiond status`` and the overlay's pages, and every
stored final delivered; no secret in a log line, a page or the database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import normalise
from fakes.captions import FakeWebhook, FakeYouTube, FakeZoom
from service_helpers import READY_TIMEOUT_S, DaemonProcess, daemon_env, decode_16k, write_wav

TOKEN = "tok_OutputsTest0123456789"
HOOK_KEY = "hook-signing-key-42"
RELOAD_WAIT_S = 15.0


def _status(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "captiond", "status", *extra], check=False,
                          env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def speech(fleurs_en: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short FLEURS sentences back to back (clip 3, then clip 4: 10 s)."""
    import numpy as np

    audio = np.concatenate([decode_16k(fleurs_en[3]), decode_16k(fleurs_en[4])])
    return write_wav(tmp_path_factory.mktemp("speech") / "speech.wav", audio)


def test_outputs_run_in_the_daemon_and_follow_reloads(tmp_path: Path, speech: Path) -> None:
    """Every stored final reaches the Zoom and webhook outputs; a YouTube output added to the
    config mid-session starts; status shows each output; secrets stay out of logs, pages and
    the database."""
    zoom, hook, yt = FakeZoom(last_seq=7), FakeWebhook(key=HOOK_KEY), FakeYouTube(60.0)
    zoom_file = tmp_path / "zoom-url"
    zoom_file.write_text(zoom.api_token_url + "\n")
    yt_file = tmp_path / "yt-url"
    yt_file.write_text(yt.ingestion_url + "\n")
    cfg = tmp_path / "config.toml"
    base = (f'[overlay]\nport = 0\ntoken = "{TOKEN}"\n\n[[outputs]]\nkind = "zoom"\n'
            f'url_file = "{zoom_file}"\nmin_interval_s = 0.2\n')
    cfg.write_text(base)
    db = tmp_path / "c.db"
    env = daemon_env(tmp_path, HOOK_KEY=HOOK_KEY)
    daemon = DaemonProcess(
        ["run", "--config", str(cfg), "--db", f"sqlite:///{db}", "--source", f"file:{speech}",
         "--output", f"kind=webhook,url={hook.url},secret_env=HOOK_KEY"], env)
    try:
        daemon.wait_stderr("daemon.ready", READY_TIMEOUT_S)
        st = json.loads(_status(env, "--json").stdout)
        assert [(o["name"], o["kind"]) for o in st["outputs"]] == [("zoom", "zoom"),
                                                                  ("webhook", "webhook")]
        text = _status(env).stdout
        assert "output zoom:" in text and "output webhook:" in text

        # Add a YouTube output by editing the file: the reload starts it next to the others.
        mark = len(daemon.stderr)
        cfg.write_text(base + f'\n[[outputs]]\nkind = "youtube"\nurl_file = "{yt_file}"\n'
                       'min_interval_s = 0.2\n')
        daemon.wait_stderr("outputs.changed running=webhook,youtube,zoom", RELOAD_WAIT_S, mark)
        st = json.loads(_status(env, "--json").stdout)
        assert {o["name"] for o in st["outputs"]} == {"zoom", "webhook", "youtube"}
        base_url = st["overlay_url"].split("/overlay")[0].rstrip("/")
        with urllib.request.urlopen(f"{base_url}/api/status?token={TOKEN}", timeout=10) as r:
            api = r.read().decode()
        with urllib.request.urlopen(f"{base_url}/?token={TOKEN}", timeout=10) as r:
            index = r.read().decode()
        assert "youtube" in json.loads(api)["outputs_summary"] and "zoom" in index
        rc = daemon.wait(120)
    finally:
        daemon.kill()
        for server in (zoom, hook, yt):
            server.close()
    assert rc == 0, daemon.stderr_text()
    with sqlite3.connect(db) as con:
        finals = [t for (t,) in con.execute(
            "SELECT text FROM segments WHERE status = 'final' AND track = 'original' "
            "AND text != '' ORDER BY audio_start_ms")]
    assert len(finals) >= 2
    assert [h["text"] for h in hook.lines] == finals
    assert normalise(" ".join(zoom.texts)) == normalise(" ".join(finals))
    assert zoom.last_seq == 7 + len(zoom.texts)
    assert zoom.violations == [] and hook.violations == [] and yt.violations == []
    assert yt.requests and yt.requests[0]["body"] == ""  # it started (clock post)
    log = daemon.stderr_text()
    assert "output.start name=youtube" in log
    raw_db = db.read_bytes()
    assert str(tmp_path) not in api  # no file paths on a page (url_file)
    assert all(o["target"].startswith("http://127.0.0.1:") for o in json.loads(api)["outputs"])
    for secret in (HOOK_KEY, zoom.token, yt.stream_id):
        assert secret not in log and secret not in api and secret not in index
        assert secret.encode() not in raw_db


def test_missing_output_secret_stops_run_with_one_line(tmp_path: Path, fleurs_en: list[Path]) -> None:
    """An output whose URL file is missing stops `captiond run` with one line naming the
    output and the file; no traceback."""
    env = daemon_env(tmp_path, CAPTIOND_OVERLAY_ENABLED="false")
    missing = tmp_path / "zoom-url"
    result = subprocess.run(
        [sys.executable, "-m", "captiond", "run", "--db", f"sqlite:///{tmp_path / 'c.db'}",
         "--source", f"file:{fleurs_en[1]}", "--output", f"kind=zoom,url_file={missing}"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert f"captiond: output zoom: cannot read URL file {missing}" in result.stderr
    assert "Traceback" not in result.stderr
