"""A recording piped into stdin faster than real time loses nothing: same text as `transcribe`.

The five FLEURS English clips are joined into one meeting (1.5 s apart, a WAV file). Then:

1. ``captiond transcribe meeting.wav``;
2. ``ffmpeg -i meeting.wav -f s16le -ac 1 -ar 16000 - | captiond run --source stdin --rate 16000``
   (the daemon, live mode, smallest audio queue ``CAPTIOND_AUDIO_QUEUE_S=1``);

and prints for each: WER against the joined references, lines, stored gaps, audio seconds,
wall seconds.

    python benchmarks/stdin_pipe.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import kit
import numpy as np
from kit import EN_CLIPS, ROOT, reference

from captiond.transcript.store import Store

RATE = 16_000
GAP_S = 1.5


def join_clips(path: Path) -> None:
    from faster_whisper import decode_audio

    parts = []
    for clip in EN_CLIPS:
        parts += [decode_audio(str(clip), RATE), np.zeros(int(GAP_S * RATE), np.float32)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes())


def captiond(*args: str) -> list[str]:
    return [sys.executable, "-m", "captiond", *args]


def report(name: str, db: str, wall: float) -> dict[str, Any]:
    store = Store(db)
    session = store.resolve_session("last")
    text = " ".join(ln.text for ln in store.lines(session.id))
    ref = " ".join(reference(c) for c in EN_CLIPS)
    wer = kit.wer(ref, text)
    print(f"{name:<12} WER {wer * 100:5.2f} %  lines {len(store.lines(session.id)):3d}  "
          f"gaps {len(store.gaps(session.id))}  audio {session.audio_seconds:.1f} s  "
          f"wall {wall:.1f} s  status {session.status}")
    figures = {"wer": wer, "lines": len(store.lines(session.id)),
               "gaps": len(store.gaps(session.id)), "audio_s": session.audio_seconds,
               "wall_s": wall, "status": session.status}
    store.close()
    return figures


def main(args: argparse.Namespace) -> dict[str, Any]:
    kit.require(EN_CLIPS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "CAPTIOND_OVERLAY_PORT": "0", "CAPTIOND_AUDIO_QUEUE_S": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        meeting = Path(tmp) / "meeting.wav"
        join_clips(meeting)
        env["XDG_RUNTIME_DIR"] = tmp
        db1, db2 = f"sqlite:///{tmp}/t.db", f"sqlite:///{tmp}/s.db"
        t0 = time.monotonic()
        subprocess.run(captiond("transcribe", str(meeting), "--db", db1, "--no-progress"),
                       env=env, check=True, capture_output=True)
        a = report("transcribe", db1, time.monotonic() - t0)
        t0 = time.monotonic()
        ffmpeg = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-i", str(meeting), "-f", "s16le", "-ac", "1",
             "-ar", "16000", "-"], stdout=subprocess.PIPE)
        subprocess.run(captiond("run", "--source", "stdin", "--rate", "16000", "--engine", "local",
                                "--db", db2), stdin=ffmpeg.stdout, env=env, check=True,
                       capture_output=True)
        ffmpeg.wait()
        b = report("stdin pipe", db2, time.monotonic() - t0)
        print(f"difference {abs(a['wer'] - b['wer']) * 100:.2f} WER points; "
              f"load {os.getloadavg()[0]:.1f}")
    return {"transcribe": a, "stdin_pipe": b, "load": os.getloadavg()[0]}


if __name__ == "__main__":
    kit.run(main, kit.parser(__doc__).parse_args())
