"""What live translation costs captiond itself, per language: the pure protocol's work for
each 32 ms audio block (PCM16 -> base64 -> session.input_audio_buffer.append) and for each
server delta (JSON -> segmenter -> line events), and the reconciler on top.

    python benchmarks/translate_overhead.py

Prints figures; asserts nothing (timing belongs here, not in tests).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import kit
import numpy as np

from captiond.audio.block import float_to_pcm16
from captiond.realtime.translate import TranslateSettings, TranslationProtocol
from captiond.transcript.reconciler import Reconciler

BLOCKS = 20_000  # 32 ms each: ~10.7 minutes of audio
DELTAS = 20_000
WORDS = "uno dos tres cuatro cinco seis siete ocho nueve diez once doce.".split()


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main(args: argparse.Namespace) -> dict[str, Any]:
    p = TranslationProtocol(TranslateSettings("es"), item_prefix="tr-es-",
                            buffer_bytes=300 * 48_000, resend_bytes=10 * 48_000,
                            rotate_before_s=300)
    h = p.connection_opened()
    p.receive(h, json.dumps({"type": "session.created", "session": {"expires_at": 2**31}}), 0, 0)
    p.receive(h, json.dumps({"type": "session.updated", "session": {}}), 0, 0)
    rng = np.random.default_rng(1)
    block = float_to_pcm16((rng.standard_normal(768) * 0.1).astype(np.float32))
    audio_t: list[float] = []
    for i in range(BLOCKS):
        t0 = time.perf_counter()
        p.audio(block, i * 768, 0.0)
        audio_t.append(time.perf_counter() - t0)
    rec = Reconciler(track="es")
    delta_t: list[float] = []
    for i in range(DELTAS):
        raw = json.dumps({"type": "session.output_transcript.delta", "event_id": "e",
                          "delta": " " + WORDS[i % len(WORDS)], "elapsed_ms": 200 * (i // 2 + 1)})
        t0 = time.perf_counter()
        for ev in p.receive(h, raw, i * 0.1, 0).events:
            rec.apply(ev)
        delta_t.append(time.perf_counter() - t0)
    audio_s = BLOCKS * 0.032
    print(f"audio block (32 ms) -> append event: p50 {statistics.median(audio_t) * 1e6:.0f} us, "
          f"p99 {pct(audio_t, 0.99) * 1e6:.0f} us")
    print(f"output delta -> line events + reconciler: p50 {statistics.median(delta_t) * 1e6:.0f} us, "
          f"p99 {pct(delta_t, 0.99) * 1e6:.0f} us")
    print(f"protocol CPU per audio second (audio path only): "
          f"{sum(audio_t) / audio_s * 1000:.2f} ms/s; lines made: {p.segmenter.lines}")
    return {"audio_block_us": {"p50": statistics.median(audio_t) * 1e6,
                               "p99": pct(audio_t, 0.99) * 1e6},
            "delta_us": {"p50": statistics.median(delta_t) * 1e6, "p99": pct(delta_t, 0.99) * 1e6},
            "protocol_ms_per_audio_s": sum(audio_t) / audio_s * 1000,
            "lines": p.segmenter.lines}


if __name__ == "__main__":
    kit.run(main, kit.parser(__doc__).parse_args())
