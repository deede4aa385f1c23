"""How soon a line's first text can come, and how soon the local engine's first-text rule gives it.

Two figures per line, both in audio time from the line's energy onset (the same onset as
``local_latency.py``: 10 ms frames 15 dB above the quietest 50 ms before the line), plus the
decode's own time (measured here, one thread):

- **the engine**: the engine is fed the audio in 32 ms blocks and its decoder is let finish
  every block, so every partial the engine asks for is decoded as it would be on an idle
  machine; first text = where the audio stood when the line's first partial was asked for.
- **the model's limit**: the line's audio from its start is decoded the way a first partial
  is, ending every :data:`STEP_S` from :data:`SEARCH_BEFORE_S` before the VAD's onset; the
  limit is the first end whose text shares a word with the line's final (whatever the
  decoder's confidence), and the first from which every later end does too. No rule that
  shows only the speaker's words can be sooner, whatever its schedule, with the model's decode
  time on top.

It also tries first-text rules on those decodes (partials every 0.1 s or 0.2 s from the VAD's
onset). The engine's own partials fall a block or two off that grid, and Whisper's text from
a fraction of a second of speech changes with a few milliseconds more audio, so a rule's
figure here is its order of magnitude, not what the engine would show with it: the two-word
agreement rule, for one, gave FLEURS 0.77 s and AMI 0.76 s here against 0.86 s and 0.81 s,
but put in the engine it changed the first text of 1 line in 79.

Audio: the five English FLEURS clips, each with 2.5 s of trailing silence, then the joined
meeting (as ``local_latency.py`` plays it), and the AMI excerpts (all eleven, or those named
with ``--ami``; their onsets are less clear: overlapping talk, room noise). Prints medians and
p90s; with ``--verbose`` every line, with ``--lines FILE`` every line's decodes as JSON.

    python benchmarks/first_text.py [--ami dev00 trn03] [--set vad.threshold=0.4] [--verbose]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kit
import numpy as np
from kit import AMI, BLOCK, EN_CLIPS, RATE, decode, energy_onset, normalise, paced, shares_word

from captiond.audio.block import AudioBlock
from captiond.audio.segmenter import SpeechStarted
from captiond.engines.factory import whisper_backend
from captiond.engines.guards import LOGPROB_THRESHOLD, judge
from captiond.engines.local import LocalEngine
from captiond.engines.localcore import (
    FIRST_TEXT_INTERVAL_S,
    FIRST_TEXT_SURE_AFTER_S,
    DecodeRequest,
)
from captiond.events import ItemCommitted, ItemCompleted, ItemPartial

#: Silence after each piece: the same programme as local_latency.py.
TRAIL_S = kit.PROGRAMME_TRAIL_S
#: The model's limit is searched every this much audio ...
STEP_S = 0.05
#: ... from this long before the VAD's onset to this long after it.
SEARCH_BEFORE_S, SEARCH_AFTER_S = 0.3, 1.5


@dataclass
class Line:
    item: str
    source: str
    start: int = 0
    heard: int = 0
    end: int = 0  # where the engine cut it
    first_at: int | None = None  # audio position when the first partial was asked for
    first_text: str = ""
    final_at: int = 0  # audio position when the final came
    final: str = ""
    onset: int | None = None
    limit: int | None = None  # first decode end whose text shares a word with the final
    limit_kept: int | None = None  # ... from which on every decode does
    decode_s: list[float] = field(default_factory=list)
    # Every STEP_S from SEARCH_BEFORE_S before the VAD's onset: (decode end, text, avg logprob).
    grid: list[tuple[int, str, float]] = field(default_factory=list)

    @property
    def shown_at(self) -> int:
        """Where the audio stood when the line first showed text (its final if no partial)."""
        return self.first_at if self.first_at is not None else self.final_at


def programme(ami: list[str]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    trail = np.zeros(int(TRAIL_S * RATE), np.float32)
    named = [*zip([c.stem for c in EN_CLIPS] + ["joined"], kit.meeting_pieces()),
             *((name, decode(AMI / f"{name}.flac")) for name in ami)]
    parts: list[np.ndarray] = [np.zeros(RATE // 2, np.float32)]
    where: list[tuple[int, str]] = []
    at = len(parts[0])
    for name, audio in named:
        where.append((at, name))
        parts += [audio, trail]
        at += len(audio) + len(trail)
    return np.concatenate(parts), where


def run_engine(engine: LocalEngine, audio: np.ndarray) -> dict[str, Line]:
    """Every partial decoded as it is asked for; lines with their first partial's position."""
    lines: dict[str, Line] = {}
    now = [0]
    push = engine.frontend.push
    heard: list[int] = []

    def recording_push(block: AudioBlock) -> Any:
        now[0] = block.end
        for d in push(block):
            if isinstance(d, SpeechStarted):
                heard.append(d.heard)
            yield d

    engine.frontend.push = recording_push  # type: ignore[method-assign]

    def emit(e: object) -> None:
        if isinstance(e, ItemCommitted) and e.item_id not in lines:
            lines[e.item_id] = Line(e.item_id, "", e.audio_start_ms * RATE // 1000, heard[-1])
        elif isinstance(e, ItemCommitted):
            lines[e.item_id].end = e.audio_end_ms * RATE // 1000
        elif isinstance(e, ItemPartial) and lines[e.item_id].first_at is None:
            lines[e.item_id].first_at, lines[e.item_id].first_text = now[0], e.text
        elif isinstance(e, ItemCompleted):
            lines[e.item_id].final, lines[e.item_id].final_at = e.text, now[0]

    asyncio.run(engine.run(paced(audio, engine.backend, BLOCK / RATE), emit))
    return lines


def model_limit(engine: LocalEngine, audio: np.ndarray, line: Line) -> None:
    """The first decode ends (every STEP_S) whose text shares a word with the final."""
    backend = engine.backend
    step = int(STEP_S * RATE)
    ends = range(line.heard - int(SEARCH_BEFORE_S * RATE), min(line.end, line.heard + int(SEARCH_AFTER_S * RATE)), step)
    good: list[bool] = []
    for end in ends:
        t0 = time.perf_counter()
        piece = audio[line.start : end]
        d = backend.run(DecodeRequest(0, "partial", "limit", 0, len(piece), words=False), piece)
        text = "" if judge(d.new_text, no_speech_prob=d.no_speech_prob, avg_logprob=d.avg_logprob) else d.text
        line.decode_s.append(time.perf_counter() - t0)
        line.grid.append((end, text, d.avg_logprob))
        good.append(bool(text) and shares_word(text, line.final))
    if any(good):
        line.limit = ends[good.index(True)]
        if good[-1]:
            kept = len(good) - 1
            while kept > 0 and good[kept - 1]:
                kept -= 1
            line.limit_kept = ends[kept]


#: The agreement rule tried: a decode's first words are those of the decode before it.
AGREE_WORDS = 2


def first_words(text: str) -> list[str]:
    return normalise(text).split()[:AGREE_WORDS]


def sure(text: str, logprob: float, waited_s: float, before: list[str]) -> bool:
    return logprob >= LOGPROB_THRESHOLD or waited_s >= FIRST_TEXT_SURE_AFTER_S


def agreed(text: str, logprob: float, waited_s: float, before: list[str]) -> bool:
    words = first_words(text)
    return len(words) == AGREE_WORDS and bool(before) and first_words(before[-1]) == words


#: First-text rules tried on every line's decodes: each is asked of a decode with text.
RULES = {
    "any text": lambda text, logprob, waited, before: True,
    "sure or 0.7 s (the engine's)": sure,
    "sure, first two words agreed, or 0.7 s": lambda *a: sure(*a) or agreed(*a),
}


def simulate(line: Line, every_s: float, rule: Any) -> tuple[int, str]:
    """Where the audio stands when ``rule`` first shows text if partials come every
    ``every_s`` from the VAD's onset (the final's position and text if never), and the text."""
    k0, every = round(SEARCH_BEFORE_S / STEP_S), round(every_s / STEP_S)
    before: list[str] = []
    for end, text, logprob in line.grid[k0::every]:
        if text and rule(text, logprob, (end - line.heard) / RATE, before):
            return end, text
        before.append(text)
    return line.final_at, line.final


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: none"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"{name}: median {statistics.median(values):.2f} s, p90 {p90:.2f} s over {len(values)}"


def summary(values: list[float]) -> dict[str, Any]:
    """:func:`describe`'s figures for ``--json``."""
    if not values:
        return {"n": 0}
    values = sorted(values)
    return {"median_s": statistics.median(values),
            "p90_s": values[min(len(values) - 1, int(0.9 * len(values)))], "n": len(values)}


def main(args: Any) -> dict[str, Any]:
    cfg = kit.settings(args.set)
    kit.require([*EN_CLIPS, *(AMI / f"{name}.flac" for name in args.ami)])
    backend = whisper_backend(cfg)
    audio, where = programme(args.ami)
    engine = kit.local_engine(cfg, backend, partials=True)
    lines = [x for x in run_engine(engine, audio).values() if x.final]
    for line in lines:
        line.source = next(name for at, name in reversed(where) if at <= line.heard)
        onset = energy_onset(audio, line.start / RATE, line.heard / RATE + 0.3)
        line.onset = None if onset is None else int(onset * RATE)
        model_limit(engine, audio, line)
    if args.lines:
        args.lines.write_text(json.dumps([asdict(x) for x in lines]))
    decode_s = statistics.median(s for x in lines for s in x.decode_s)
    print(f"settings {' '.join(args.set) or 'defaults'}; a first partial's decode takes {decode_s:.3f} s"
          " (median, added to every figure below)")
    figures: dict[str, Any] = {"settings": args.set, "first_partial_decode_s": decode_s}
    for group, pick in (("FLEURS", lambda x: not x.source.startswith(("dev", "trn"))),
                        ("AMI", lambda x: x.source.startswith(("dev", "trn")))):
        chosen = [x for x in lines if pick(x)]
        wrong = [x for x in chosen if x.first_at is not None and not shares_word(x.first_text, x.final)]
        print(f"{group}: {len(chosen)} lines; first partials sharing no word with their final:"
              f" {len(wrong)} of {sum(x.first_at is not None for x in chosen)}")
        fig = figures[group] = {"lines": len(chosen), "first_partials_sharing_no_word": len(wrong),
                                "first_partials": sum(x.first_at is not None for x in chosen)}
        for ref_name, ref in (("energy onset", "onset"), ("VAD onset", "heard")):
            base = [(x, getattr(x, ref)) for x in chosen if getattr(x, ref) is not None]
            print(f"  from the {ref_name}:")
            engine_s = [(x.shown_at - b) / RATE + decode_s for x, b in base]
            limit_s = [(x.limit - b) / RATE + decode_s for x, b in base if x.limit is not None]
            kept_s = [(x.limit_kept - b) / RATE + decode_s for x, b in base
                      if x.limit_kept is not None]
            print("    " + describe("engine's first text", engine_s))
            print("    " + describe("model's limit (any right word)", limit_s))
            print("    " + describe("model's limit (right from then on)", kept_s))
            fig[f"from the {ref_name}"] = {"engine": summary(engine_s), "limit": summary(limit_s),
                                           "limit_kept": summary(kept_s)}
        print("  rules for first text, from the energy onset (lines without text before their final"
              " count at the final):")
        for every_s in sorted({0.1, FIRST_TEXT_INTERVAL_S, 0.2}):
            for name, rule in RULES.items():
                shown = [(x, *simulate(x, every_s, rule)) for x in chosen if x.onset is not None]
                bad = sum(not shares_word(text, x.final) for x, _, text in shown)
                delays = [(at - x.onset) / RATE + decode_s for x, at, _ in shown]
                print(f"    every {every_s:.2f} s, {name:48s}: " + describe("", delays)[2:]
                      + f"; {bad} sharing no word")
                fig.setdefault("rules", []).append({"every_s": every_s, "rule": name,
                                                    **summary(delays), "sharing_no_word": bad})
        if args.verbose:
            for x in chosen:
                def at(pos: int | None, x: Line = x) -> str:
                    return "   -  " if pos is None or x.onset is None else f"{(pos - x.onset) / RATE:5.2f} "
                print(f"    {x.source:16s} {x.start / RATE:7.2f} vad {at(x.heard)} limit {at(x.limit)}"
                      f"kept {at(x.limit_kept)} engine {at(x.first_at)} {x.first_text[:28]!r} -> {x.final[:40]!r}")
    return figures


if __name__ == "__main__":
    parser = kit.parser(__doc__, overrides=True)
    parser.add_argument("--ami", nargs="*", default=kit.ami_names(),
                        help="AMI excerpts (default: all)")
    parser.add_argument("--verbose", action="store_true", help="every line")
    parser.add_argument("--lines", type=Path, help="write every line's decodes here (JSON)")
    kit.run(main, parser.parse_args())
