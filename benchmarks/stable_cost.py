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

import asyncio
import time
from typing import Any

import kit
import numpy as np

from captiond.engines.factory import whisper_backend
from captiond.events import ItemCompleted, ItemPartial

RATE = kit.RATE


def main(args: Any) -> dict[str, Any]:
    cfg = kit.settings()
    kit.require(kit.EN_CLIPS)
    backend = whisper_backend(cfg)
    parts, refs = [], []
    for clip in kit.EN_CLIPS:
        parts += [kit.decode(clip), kit.silence(args.gap)]
        refs.append(clip.with_suffix(".txt").read_text())
    parts.append(kit.silence(2.0))
    audio = np.concatenate(parts)
    ref = " ".join(refs)
    print(f"{len(audio) / RATE:.1f} s of audio, partials every {args.every} s")
    figures: dict[str, Any] = {"audio_s": len(audio) / RATE, "every_s": args.every}
    for stable_text in (False, True):
        engine = kit.local_engine(cfg, backend, partial_interval_s=args.every, partials=True,
                                  stable_text=stable_text, word_timestamps=True)
        events: list[object] = []
        cpu = time.process_time()
        asyncio.run(engine.run(kit.paced(audio, backend, args.every), events.append))
        cpu = time.process_time() - cpu
        finals = [e.text for e in events if isinstance(e, ItemCompleted) and e.text]
        partials = [e for e in events if isinstance(e, ItemPartial)]
        wer = kit.wer(ref, " ".join(finals))
        stable = sum(p.stable > 0 for p in partials)
        print(f"local.stable_text={str(stable_text).lower():5}  WER {wer:6.1%}  partials "
              f"{len(partials)} (with stable text {stable})  CPU {cpu:.1f} s")
        print("    " + " | ".join(finals))
        figures[f"stable_text={str(stable_text).lower()}"] = {
            "wer": wer, "partials": len(partials), "partials_with_stable_text": stable,
            "cpu_s": cpu, "finals": finals}
    return figures


if __name__ == "__main__":
    ap = kit.parser(__doc__)
    ap.add_argument("--every", type=float, default=0.3, help="partial interval (audio seconds)")
    ap.add_argument("--gap", type=float, default=1.0, help="pause between the clips (s)")
    kit.run(main, ap.parse_args())
