"""Size of kept audio per hour of meeting, and what a kill loses.

Builds an hour of real meeting speech by repeating the AMI excerpts (four to five people
around a table, room noise and all) and the FLEURS clips from ``../shared/audio``, feeds it
through :class:`captiond.audio.keep.AudioKeeper` as the daemon does (48 kHz capture blocks of
32 ms), and prints the file's size per hour for each bit rate, the encoder's CPU time per
audio hour, and how much a decoder gets back from a copy of the file taken before it was
closed (what a SIGKILL at that moment would leave). Target: <= 20 MB per hour.

    PYTHONPATH=. python benchmarks/keep_size.py                 # 60 minutes, 16/24/32 kbit/s
    PYTHONPATH=. python benchmarks/keep_size.py --minutes 10 --kbps 24
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import kit
import numpy as np

from captiond.audio import keep
from captiond.audio.block import AudioBlock
from captiond.audio.sources import decode_file_chunks

CAPTURE_RATE = 48_000
BLOCK_MS = 32


def meeting(minutes: float) -> np.ndarray:
    clips = sorted(kit.AMI.glob("*.flac")) + sorted(kit.FLEURS.glob("*.ogg"))
    pool = np.concatenate([np.concatenate(list(decode_file_chunks(c, CAPTURE_RATE)))
                           for c in clips]).astype(np.float32)
    need = int(minutes * 60 * CAPTURE_RATE)
    reps = need // len(pool) + 1
    return np.tile(pool, reps)[:need]


def run(audio: np.ndarray, kbps: int, directory: Path) -> None:
    path = directory / f"session-{kbps}.ogg"
    keeper = keep.AudioKeeper(path, bitrate=kbps * 1000)
    step = CAPTURE_RATE * BLOCK_MS // 1000
    cpu0 = time.process_time()
    half = len(audio) // 2
    snapshot: Path | None = None
    for pos in range(0, len(audio), step):
        block = AudioBlock(audio[pos:pos + step], CAPTURE_RATE, pos)
        while True:  # the benchmark feeds faster than real time: wait instead of dropping
            before = keeper.dropped_s
            keeper.feed("", block)
            if keeper.dropped_s == before:
                break
            keeper.dropped_s = 0.0
            keeper.drain()
        if snapshot is None and pos >= half:
            keeper.drain()
            snapshot = directory / "killed.ogg"
            shutil.copyfile(path, snapshot)  # the file as a kill now would leave it
            fed_s = (pos + len(block.samples)) / CAPTURE_RATE
    keeper.end("")
    keeper.close(timeout=600)
    cpu = time.process_time() - cpu0
    hours = len(audio) / CAPTURE_RATE / 3600
    size = path.stat().st_size
    assert snapshot is not None
    readable = len(keep.read_audio(snapshot)) / keep.KEEP_RATE
    print(f"{kbps:>3} kbit/s: {size / 1e6 / hours:6.2f} MB per hour "
          f"({size / 1e6:.2f} MB for {hours * 60:.0f} min); encoder CPU "
          f"{cpu / hours:.0f} s per audio hour; unclosed copy at {fed_s:.1f} s reads "
          f"{readable:.2f} s (lost {fed_s - readable:.2f} s)")


def main(args: argparse.Namespace) -> None:
    audio = meeting(args.minutes)
    print(f"meeting: {len(audio) / CAPTURE_RATE / 60:.1f} min of AMI + FLEURS speech, "
          f"fed as {BLOCK_MS} ms blocks at {CAPTURE_RATE} Hz")
    with tempfile.TemporaryDirectory() as tmp:
        for kbps in args.kbps:
            run(audio, kbps, Path(tmp))


if __name__ == "__main__":
    ap = kit.parser(__doc__)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--kbps", type=int, nargs="*", default=[16, 24, 32])
    kit.run(main, ap.parse_args())
