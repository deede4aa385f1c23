"""What the stability promise costs in accuracy: the local engine on the five FLEURS English
clips read on as one meeting, with ``local.stable_text`` off and on.

The audio is fed in 32 ms blocks as fast as the decoder allows, letting the decoder finish
its work every ``--every`` seconds of audio (partials as on a fast machine, not in real
time; ``benchmarks/local_latency.py`` does the real-time run). Prints, for each setting, the
WER of the finals against the FLEURS transcripts, the partials and how many marked text
stable, the CPU seconds, and the finals.

    python benchmarks/stable_cost.py [--every 0.3] [--gap 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # test_local_engine (paced, clip, silence)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jiwer
import numpy as np
from conftest import FLEURS, normalise  # how WER is counted everywhere in captiond
from faster_whisper import decode_audio
from test_local_engine import paced  # blocks, the decoder let finish every few blocks

from captiond import config
from captiond.engines.factory import whisper_backend
from captiond.engines.local import LocalEngine
from captiond.events import ItemCompleted, ItemPartial
from captiond.pipeline import segmenter_params

RATE = 16_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=float, default=0.3, help="partial interval (audio seconds)")
    ap.add_argument("--gap", type=float, default=1.0, help="pause between the clips (s)")
    args = ap.parse_args()
    cfg = config.parse("", env={}, overrides={})
    backend = whisper_backend(cfg)
    parts, refs = [], []
    for i in range(5):
        clip = np.asarray(decode_audio(str(FLEURS / f"fleurs-en-00{i}.ogg"), RATE), np.float32)
        parts += [clip, np.zeros(int(args.gap * RATE), np.float32)]
        refs.append((FLEURS / f"fleurs-en-00{i}.txt").read_text())
    parts.append(np.zeros(2 * RATE, np.float32))
    audio = np.concatenate(parts)
    ref = normalise(" ".join(refs))
    print(f"{len(audio) / RATE:.1f} s of audio, partials every {args.every} s")
    for stable_text in (False, True):
        engine = LocalEngine(backend, segmenter_params(cfg), partial_interval_s=args.every,
                             partials=True, stable_text=stable_text)
        events: list[object] = []
        cpu = time.process_time()
        asyncio.run(engine.run(paced(audio, backend, args.every), events.append))
        cpu = time.process_time() - cpu
        finals = [e.text for e in events if isinstance(e, ItemCompleted) and e.text]
        partials = [e for e in events if isinstance(e, ItemPartial)]
        wer = jiwer.wer(ref, normalise(" ".join(finals)))
        print(f"local.stable_text={str(stable_text).lower():5}  WER {wer:6.1%}  partials "
              f"{len(partials)} (with stable text {sum(p.stable > 0 for p in partials)})  "
              f"CPU {cpu:.1f} s")
        print("    " + " | ".join(finals))


if __name__ == "__main__":
    main()
