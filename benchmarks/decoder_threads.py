"""Wall time of the local model's encoder and decoder on one and on two CPU threads.

Behind ``local.threads = 0`` (one thread for tiny and base models): for utterances of 2, 5 and
10 s taken from the FLEURS clips, the encoder on the full 30 s window and on the fitted window
of finals, then greedy and beam-5 decoding, each timed directly on the CTranslate2 model
(best of three), for each thread count.

    python benchmarks/decoder_threads.py [--model DIR] [--threads 2 1]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import kit
import numpy as np
from kit import EN_CLIPS, decode

from captiond.engines.whisper import FIT_MIN_FRAMES, WhisperBackend


def best_of(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Milliseconds of the fastest of three calls."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main(args: Any) -> dict[str, Any]:
    import ctranslate2

    kit.require(EN_CLIPS)
    audio = np.concatenate([decode(c) for c in EN_CLIPS])
    rows: list[dict[str, Any]] = []
    for threads in args.threads:
        backend = WhisperBackend(args.model, threads=threads, language="en")
        model = backend.model.model
        prompt, _ = backend.prompt()
        suppress = list(backend.tokenizer.non_speech_tokens)
        for seconds in (2, 5, 10):
            part = audio[3 * 16_000 : (3 + seconds) * 16_000]
            for name, full, min_frames in (("full", True, 0), ("fitted", False, FIT_MIN_FRAMES)):
                feats = ctranslate2.StorageView.from_array(backend._features(part, full, min_frames))
                enc_ms = best_of(model.encode, feats, to_cpu=False)
                encoded = model.encode(feats, to_cpu=False)
                gen = {beam: best_of(model.generate, encoded, [prompt], beam_size=beam, max_length=120,
                                     suppress_blank=True, suppress_tokens=suppress,
                                     return_scores=True, return_no_speech_prob=True)
                       for beam in (1, 5)}
                print(f"threads {threads}  {seconds:2d} s utterance  {name:6s} window  encoder"
                      f" {enc_ms:5.0f} ms  greedy {gen[1]:5.0f} ms  beam 5 {gen[5]:5.0f} ms", flush=True)
                rows.append({"threads": threads, "utterance_s": seconds, "window": name,
                             "encoder_ms": enc_ms, "greedy_ms": gen[1], "beam5_ms": gen[5]})
    return {"rows": rows}


if __name__ == "__main__":
    parser = kit.parser(__doc__, raw=True)
    parser.add_argument("--model", default=None, help="a CTranslate2 Whisper directory (default: bundled tiny.en)")
    parser.add_argument("--threads", nargs="*", type=int, default=[2, 1])
    kit.run(main, parser.parse_args())
