"""Export speed: an eight-hour synthetic session (~10,000 lines) to SRT, WebVTT, Markdown, JSON.

Usage: ``python benchmarks/export_speed.py [--lines 10000] [--hours 8]``

Fills a real SQLite store in a temporary folder (seeded, so every run exports the same
transcript), then times each export the way ``captiond export`` does it: read the finals from
the store, build cues / minutes / JSON, write the file. Prints seconds (best of --repeat) and
the peak Python memory of one run (tracemalloc, measured in a separate run because tracing
slows Python down), plus the process's peak RSS. Target: at most 1 s per format.
"""

from __future__ import annotations

import json
import random
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kit

from captiond.events import Line, LineStatus, Word
from captiond.exports.cues import CueLimits, build_cues, check
from captiond.exports.document import load_session, to_json
from captiond.exports.files import atomic_write
from captiond.exports.minutes import environment, render_minutes
from captiond.exports.subtitles import iter_srt, iter_vtt
from captiond.transcript.store import Store

VOCAB = ["the", "a", "we", "our", "team", "release", "budget", "customer", "export", "feature", "database", "migration", "test", "should", "could", "will", "need", "think", "know", "plan", "week", "quarter", "numbers", "review", "design", "option", "because", "and", "but", "so", "then", "when", "which", "really", "probably", "maybe", "important", "question", "answer", "documentation", "deadline", "vendor", "contract", "pricing", "tier", "latency", "memory", "server", "client", "dashboard", "metrics", "onboarding", "hiring", "roadmap", "priority", "backlog", "sprint", "estimate"]
PHRASES = (
    "Alice will update the documentation by Friday.",
    "We decided to go with the managed database.",
    "Bob, can you review the pull request before the release?",
    "I'll send the notes tomorrow morning.",
)
SPEAKERS = ("Alice", "Bob", "Carol")
WORDS_PER_S = 2.5
WRITE_BATCH = 500


def synthetic_lines(count: int, hours: float, seed: int = 5) -> list[Line]:
    """``count`` utterances spread over ``hours``: speech at WORDS_PER_S with pauses between."""
    rng = random.Random(seed)
    drafts = []
    cursor = 0.0
    for _ in range(count):
        if rng.random() < 0.03:
            text = rng.choice(PHRASES)
        else:
            n = max(1, min(60, int(rng.lognormvariate(1.5, 0.7))))
            tokens = [rng.choice(VOCAB) for _ in range(n)]
            tokens[0] = tokens[0].capitalize()
            text = " ".join(tokens) + rng.choice(".,?.")[:1]
        speech_ms = len(text.split()) / WORDS_PER_S * 1000
        drafts.append((cursor, speech_ms, text))
        cursor += speech_ms + rng.uniform(200, 1_500)
    scale = hours * 3_600_000 / cursor  # stretch or squeeze onto the session length
    lines = []
    for i, (at, speech_ms, text) in enumerate(drafts):
        start = int(at * scale)
        end = start + int(speech_ms * scale)
        n_words = len(text.split())
        words: tuple[Word, ...] = ()
        if i % 2 == 0:  # half with word timings, as the local engine stores them
            step = (end - start) // n_words
            words = tuple(Word(f" {t}", start + k * step, start + (k + 1) * step - 30, 0.9)
                          for k, t in enumerate(text.split()))
        lines.append(Line(f"loc-{i}", f"loc-{i - 1}" if i else None, i, start, end, text,
                          LineStatus.FINAL, words=words, speaker=SPEAKERS[i % 3],
                          channel="mic" if i % 5 else "system", engine="local", language="en"))
    return lines


def main(args: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {"formats": {}}

    with tempfile.TemporaryDirectory(prefix="captiond-bench-") as tmp:
        folder = Path(tmp)
        store = Store.open(f"sqlite:///{folder / 'bench.db'}")
        sid = store.begin_session(source="synthetic", engine="local", language="en",
                                  title="Eight-hour synthetic session")
        lines = synthetic_lines(args.lines, args.hours)
        t0 = time.perf_counter()
        for k in range(0, len(lines), WRITE_BATCH):
            store.write_lines(sid, lines[k:k + WRITE_BATCH])
        store.end_session(sid)
        fill_s = time.perf_counter() - t0
        words = sum(len(ln.text.split()) for ln in lines)
        print(f"session: {len(lines)} lines, {words} words, {args.hours:g} h of audio "
              f"(store filled in {fill_s:.2f} s)")
        figures.update(lines=len(lines), words=words, hours=args.hours, fill_s=fill_s)
        limits = CueLimits()
        env = environment(None)
        counts: dict[str, int] = {}

        def subtitles(fmt: str) -> Callable[[], None]:
            def run() -> None:
                doc = load_session(store, sid, lang="original")
                cues = build_cues(doc.source_lines(), limits)
                counts[fmt] = len(cues)
                chunks = iter_srt(cues) if fmt == "srt" else iter_vtt(cues)
                atomic_write(folder / f"out.{fmt}", chunks)
            return run

        def markdown() -> None:
            doc = load_session(store, sid)
            atomic_write(folder / "out.md", [render_minutes(doc, env=env)])

        def as_json() -> None:
            doc = load_session(store, sid)
            atomic_write(folder / "out.json", [json.dumps(to_json(doc), ensure_ascii=False,
                                                          indent=2)])

        jobs = {"srt": subtitles("srt"), "vtt": subtitles("vtt"), "md": markdown,
                "json": as_json}
        print(f"{'format':6} {'best s':>7} {'mean s':>7} {'peak MiB':>9} {'size KiB':>9}")
        for name, job in jobs.items():
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                job()
                times.append(time.perf_counter() - t)
            tracemalloc.start()
            job()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            size = (folder / f"out.{name}").stat().st_size
            print(f"{name:6} {min(times):7.3f} {sum(times) / len(times):7.3f} "
                  f"{peak / 2**20:9.1f} {size / 1024:9.0f}")
            figures["formats"][name] = {"best_s": min(times), "mean_s": sum(times) / len(times),
                                        "peak_mib": peak / 2**20, "size_kib": size / 1024}
        # where the time goes in a subtitle export
        doc = load_session(store, sid, lang="original")
        t = time.perf_counter()
        doc = load_session(store, sid, lang="original")
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        cues = build_cues(doc.source_lines(), limits)
        build_s = time.perf_counter() - t
        problems = check(cues, limits)
        unexplained = [p for p in problems if not p.cause]
        print(f"srt/vtt breakdown: read store {read_s:.3f} s, build {counts['srt']} cues "
              f"{build_s:.3f} s; QC: {len(problems)} flagged, {len(unexplained)} unexplained")
        figures.update(read_s=read_s, build_s=build_s, cues=counts["srt"],
                       qc_flagged=len(problems), qc_unexplained=len(unexplained))
        store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS: {rss:.0f} MiB")
    figures["peak_rss_mib"] = rss
    return figures


if __name__ == "__main__":
    parser = kit.parser(__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    kit.run(main, parser.parse_args())
