"""Fault drills against the real daemon: what is kept when things go wrong at run time.

Usage: ``python benchmarks/fault_drills.py [--stop-after 20] [--python PY]``

1. ``auto-stop``: ``captiond run --engine auto`` on a 31 s recording paced in real time, with a
   key set and ``CAPTIOND_OPENAI_URL`` pointing at a closed local port (the service is
   unreachable); SIGTERM ``--stop-after`` seconds after READY. Prints how long the daemon took
   to exit after the signal, the session status, the final lines and gaps stored and which
   engine wrote them.
2. ``rm-db``: ``captiond run --engine local`` on the same recording; 10 s after READY,
   ``rm captiond.db*``; 8 s later SIGTERM. Prints the store events logged, the lines printed on
   stdout and the lines found in the database afterwards, and the file modes.

Both use the FLEURS clips (:data:`kit.FLEURS`) and a temporary data directory. Wall-clock
figures move with the machine's load: the script prints ``os.getloadavg()`` beside them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
from kit import FLEURS, ROOT

READY_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 120.0


def recording(folder: Path) -> Path:
    """Clips 0-2 joined into one 16 kHz WAV (~31 s of speech with short pauses)."""
    out = folder / "meeting.wav"
    clips = [FLEURS / f"fleurs-en-00{i}.ogg" for i in range(3)]
    kit.require(clips)
    inputs = [a for c in clips for a in ("-i", str(c))]
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *inputs, "-filter_complex",
                    "[0][1][2]concat=n=3:v=0:a=1", "-ar", "16000", "-ac", "1", str(out)],
                   check=True, timeout=120)
    return out


def start(python: str, folder: Path, args: list[str], **env: str) -> tuple[subprocess.Popen[str],
                                                                          Path, Path]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIOND_")}
    environ.update(XDG_DATA_HOME=str(folder / "data"), XDG_RUNTIME_DIR=str(folder / "run"),
                   XDG_CONFIG_HOME=str(folder / "cfg"), HF_HUB_OFFLINE="1",
                   CAPTIOND_OVERLAY_PORT="0", PYTHONPATH=str(ROOT), **env)
    (folder / "run").mkdir(parents=True, exist_ok=True)
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    proc = subprocess.Popen([python, "-m", "captiond", "run", *args], env=environ, cwd=ROOT,
                            stdout=out.open("w"), stderr=err.open("w"), text=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "daemon.ready" not in err.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not become ready:\n{err.read_text()}")
        time.sleep(0.1)
    return proc, out, err


def stored(db: Path) -> tuple[list[tuple[str]], int, str, int]:
    if not db.exists():
        return [], 0, "-", 0
    with sqlite3.connect(db) as conn:
        try:
            status = conn.execute("select status from sessions").fetchall()
            lines, engines = conn.execute(
                "select count(*), coalesce(group_concat(distinct engine), '-') from segments "
                "where status = 'final' and text != ''").fetchone()
            gaps = conn.execute("select count(*) from gaps").fetchone()[0]
        except sqlite3.Error:
            return [], 0, "-", 0
    return status, lines, engines, gaps


def auto_stop(python: str, wav: Path, stop_after_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, _, err = start(python, folder, ["--engine", "auto", "--source", f"file:{wav}"],
                             OPENAI_API_KEY="sk-drill-unreachable-0000000000",
                             CAPTIOND_OPENAI_URL="ws://127.0.0.1:9/v1/realtime?intent=transcription")
        time.sleep(stop_after_s)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(EXIT_TIMEOUT_S)
        took = time.monotonic() - t0
        status, lines, engines, gaps = stored(folder / "data" / "captiond" / "captiond.db")
        events = sorted({line.split()[1] for line in err.read_text().splitlines()
                         if line.split()[1:2] and line.split()[1].startswith("engine.")})
        print(f"auto-stop: rc={rc} exit_after_signal_s={took:.1f} status={status} "
              f"final_lines={lines} engines={engines} gaps={gaps} events={','.join(events)} "
              f"load={os.getloadavg()[0]:.1f}")
        return {"rc": rc, "exit_after_signal_s": took, "status": status, "final_lines": lines,
                "engines": engines, "gaps": gaps, "events": events, "load": os.getloadavg()[0]}


def rm_db(python: str, wav: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, out, err = start(python, folder, ["--engine", "local", "--source", f"file:{wav}"])
        data = folder / "data" / "captiond"
        time.sleep(10.0)
        for p in data.glob("captiond.db*"):
            p.unlink()
        time.sleep(8.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(EXIT_TIMEOUT_S)
        printed = len([x for x in out.read_text().splitlines() if x.startswith("[")])
        status, lines, _, _ = stored(data / "captiond.db")
        events = [line.split()[1] for line in err.read_text().splitlines()
                  if line.split()[1:2] and line.split()[1].startswith("store.")]
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(data.glob("*"))}
        print(f"rm-db: rc={rc} printed_lines={printed} stored_lines={lines} status={status} "
              f"events={','.join(events)} data_dir={oct(stat.S_IMODE(data.stat().st_mode))} "
              f"files={modes} load={os.getloadavg()[0]:.1f}")
        return {"rc": rc, "printed_lines": printed, "stored_lines": lines, "status": status,
                "events": events, "data_dir": oct(stat.S_IMODE(data.stat().st_mode)),
                "files": modes, "load": os.getloadavg()[0]}


def main(args: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = recording(Path(tmp))
        return {"auto_stop": auto_stop(args.python, wav, args.stop_after),
                "rm_db": rm_db(args.python, wav)}


if __name__ == "__main__":
    parser = kit.parser(__doc__)
    parser.add_argument("--stop-after", type=float, default=20.0)
    parser.add_argument("--python", default=sys.executable)
    kit.run(main, parser.parse_args())
