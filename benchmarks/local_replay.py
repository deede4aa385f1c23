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
from typing import Any

import kit
import numpy as np

import captiond
from captiond.engines.factory import whisper_backend

#: Pause between the clips, and the hole in the stream (a lost device) in the middle.
GAP_S, HOLE_S = 1.5, 3
PACE_S = 0.5
RATE, BLOCK = kit.RATE, kit.BLOCK


def programme() -> np.ndarray:
    kit.require(kit.EN_CLIPS)
    gap = kit.silence(GAP_S)
    return np.concatenate([x for clip in kit.EN_CLIPS for x in (kit.decode(clip), gap)])


def main(args: Any) -> dict[str, Any]:
    print("captiond from", captiond.__file__)
    audio = programme()
    hole_at = (len(audio) // 2) // BLOCK * BLOCK
    cfg = kit.settings()
    backend = whisper_backend(cfg)
    figures: dict[str, Any] = {"captiond": captiond.__file__}
    for stable in (False, True):
        engine = kit.local_engine(cfg, backend, partial_interval_s=PACE_S, partials=True,
                                  stable_text=stable, word_timestamps=True)
        events: list[object] = []
        stream = kit.paced(audio, backend, PACE_S,
                           position=lambda pos: pos if pos < hole_at else pos + HOLE_S * RATE)
        asyncio.run(engine.run(stream, events.append))
        digest = hashlib.sha256("\n".join(map(repr, events)).encode()).hexdigest()[:16]
        st = engine.stats()
        print(f"stable_text={stable} events={len(events)} digest={digest} "
              f"partials={st['partials']} skipped={st['partials_skipped']} finals={st['finals']} "
              f"speculative={st['speculative_used']}/{st['speculative_wasted']} "
              f"dropped={st['dropped']}")
        figures[f"stable_text={str(stable).lower()}"] = {
            "events": len(events), "digest": digest, "partials": st["partials"],
            "partials_skipped": st["partials_skipped"], "finals": st["finals"],
            "speculative_used": st["speculative_used"],
            "speculative_wasted": st["speculative_wasted"], "dropped": st["dropped"]}
    return figures


if __name__ == "__main__":
    kit.run(main, kit.parser(__doc__).parse_args())
