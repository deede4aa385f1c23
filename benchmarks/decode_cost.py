"""CPU of the local engine when every partial is decoded, independent of the machine's load.

In real time (``benchmarks/local_latency.py``) the engine skips partials while the decoder is
busy, so its CPU per audio second falls as the machine gets busier and two runs at different
loads do not compare. Here the audio is fed in 32 ms blocks and the decoder is let finish its
work every ``--every`` seconds of audio (as on a fast idle machine): every partial is decoded.

Audio: the five English FLEURS clips and the AMI excerpts named with ``--ami``, each followed
by 2.5 s of silence. Prints the process CPU, the partial and final decodes (count, CPU, partials
that looped and were decoded again on the full window) and the first partials that share no
word with their final (listed with ``--verbose``).

    python benchmarks/decode_cost.py [--ami trn03 trn06 trn09 dev00] [--set local.final_window=fit]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kit
import numpy as np
from kit import AMI, EN_CLIPS, clip, paced, shares_word, silence

from captiond.engines.factory import whisper_backend
from captiond.events import ItemCompleted, ItemPartial

TRAIL_S = 2.5


def main(args: Any) -> dict[str, Any]:
    cfg = kit.settings(args.set)
    kit.require([*EN_CLIPS, *(AMI / f"{n}.flac" for n in args.ami)])
    backend = whisper_backend(cfg)
    decodes: list[dict[str, Any]] = []
    run = backend.run

    def recording(req: Any, audio: np.ndarray, stop: Any = None) -> Any:
        c0 = time.process_time()
        d = run(req, audio, stop)
        decodes.append({"final": req.kind == "final", "cpu": time.process_time() - c0,
                        "full": d.full_window})
        return d

    backend.run = recording  # type: ignore[method-assign]
    parts: list[np.ndarray] = []
    for path in [*EN_CLIPS, *(AMI / f"{n}.flac" for n in args.ami)]:
        parts += [clip(path), silence(TRAIL_S)]
    audio = np.concatenate(parts)
    engine = kit.local_engine(cfg, backend, partial_interval_s=args.every, partials=True)
    events: list[object] = []
    retries0 = backend.full_window_retries
    cpu0 = time.process_time()
    asyncio.run(engine.run(paced(audio, backend, args.every), events.append))
    cpu = time.process_time() - cpu0
    finals = {e.item_id: e.text for e in events if isinstance(e, ItemCompleted)}
    first: dict[str, str] = {}
    for e in events:
        if isinstance(e, ItemPartial):
            first.setdefault(e.item_id, e.text)
    phantom = [(t, finals.get(i, "")) for i, t in first.items()
               if not shares_word(t, finals.get(i, ""))]
    partials = [d for d in decodes if not d["final"]]
    fin = [d for d in decodes if d["final"]]
    audio_s = len(audio) / 16_000
    print(f"audio {audio_s:.0f} s; settings {' '.join(args.set) or 'defaults'}")
    print(f"process CPU     {cpu:6.1f} s ({cpu / audio_s:.3f} CPU-s per audio s)")
    print(f"partials        {len(partials):4d} decodes, {sum(d['cpu'] for d in partials):6.1f} CPU-s,"
          f" {sum(d['full'] for d in partials)} on the full window")
    print(f"finals          {len(fin):4d} decodes, {sum(d['cpu'] for d in fin):6.1f} CPU-s,"
          f" {backend.full_window_retries - retries0} decoded again on the full window")
    print(f"first partials sharing no word with their final: {len(phantom)}/{len(first)}")
    if args.verbose:
        for text, final in phantom:
            print(f"  {text!r} -> {final[:60]!r}")
    return {
        "audio_s": audio_s, "settings": args.set, "cpu_s": cpu, "cpu_per_audio_s": cpu / audio_s,
        "partial_decodes": len(partials), "partial_cpu_s": sum(d["cpu"] for d in partials),
        "partials_full_window": sum(d["full"] for d in partials), "final_decodes": len(fin),
        "final_cpu_s": sum(d["cpu"] for d in fin),
        "finals_decoded_again": backend.full_window_retries - retries0,
        "first_partials_sharing_no_word": len(phantom), "first_partials": len(first),
        "phantoms": phantom,
    }


if __name__ == "__main__":
    parser = kit.parser(__doc__, overrides=True)
    parser.add_argument("--ami", nargs="*", default=["trn03", "trn06", "trn09", "dev00"])
    parser.add_argument("--every", type=float, default=0.5, help="partial interval (s)")
    parser.add_argument("--verbose", action="store_true", help="list the first partials")
    kit.run(main, parser.parse_args())
