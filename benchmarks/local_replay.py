"""The local engine's events, replayed deterministically: to check a refactor changes nothing.

The five English FLEURS clips (1.5 s apart, with a 3 s hole in the stream in the middle) go
through the local engine in 32 ms blocks, paced so that the decoder finishes its work every
0.5 s of audio (partials then do not depend on the machine's load). Prints a digest of every
event emitted and the engine's counters, with stable text off and on. Run it on two checkouts
and compare the digests:

    python benchmarks/local_replay.py
    cd /tmp && git -C /path/to/repo archive OLD captiond | tar -x -C old && \
        PYTHONPATH=old python /path/to/repo/benchmarks/local_replay.py
"""

import asyncio
import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
from conftest import EN_CLIPS  # noqa: E402
from faster_whisper import decode_audio  # noqa: E402

import captiond  # noqa: E402
from captiond import config  # noqa: E402
from captiond.audio.block import AudioBlock  # noqa: E402
from captiond.engines.factory import whisper_backend  # noqa: E402
from captiond.engines.local import LocalEngine  # noqa: E402
from captiond.pipeline import segmenter_params  # noqa: E402

print("captiond from", captiond.__file__)
RATE, BLOCK = 16000, 512
#: Pause between the clips, and the hole in the stream (a lost device) in the middle.
GAP_S, HOLE_S = 1.5, 3
PACE_S = 0.5


def programme() -> np.ndarray:
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    parts: list[np.ndarray] = []
    for clip in EN_CLIPS:
        parts += [np.asarray(decode_audio(str(clip), RATE), np.float32), gap]
    return np.concatenate(parts)


def main() -> None:
    audio = programme()
    hole_at = (len(audio) // 2) // BLOCK * BLOCK
    cfg = config.parse("", env={}, overrides={})
    backend = whisper_backend(cfg)

    async def paced():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        step = int(PACE_S * RATE)
        for pos in range(0, len(audio), BLOCK):
            start = pos if pos < hole_at else pos + HOLE_S * RATE
            yield AudioBlock(audio[pos:pos + BLOCK], RATE, start)
            if pos // step != (pos + BLOCK) // step:
                await loop.run_in_executor(backend.executor, lambda: None)
                await asyncio.sleep(0)

    for stable in (False, True):
        engine = LocalEngine(backend, segmenter_params(cfg), partial_interval_s=PACE_S,
                             partials=True, stable_text=stable)
        events: list[object] = []
        asyncio.run(engine.run(paced(), events.append))
        digest = hashlib.sha256("\n".join(map(repr, events)).encode()).hexdigest()[:16]
        st = engine.stats()
        print(f"stable_text={stable} events={len(events)} digest={digest} "
              f"partials={st['partials']} skipped={st['partials_skipped']} finals={st['finals']} "
              f"speculative={st['speculative_used']}/{st['speculative_wasted']} "
              f"dropped={st['dropped']}")


if __name__ == "__main__":
    main()
