"""Subtitle cues from transcript lines, within the limits professional subtitlers use [pure].

The conventions (Netflix Timed Text Style Guide, BBC subtitle guidelines) as :class:`CueLimits`:

* at most 42 characters per line and 2 lines per cue;
* lines broken at natural points: after sentence punctuation, after a comma, before a
  conjunction, never between an article (or preposition) and the word it belongs to when
  another break fits;
* a cue lasts between 5/6 s and 7 s, and cues are at least 2 frames (~83 ms) apart;
* reading speed at most 17 characters per second where the timing allows it;
* cues sorted by start time, never overlapping, every end after its start.

Building happens in two steps so the live writer can cache the first one per line:

1. :func:`segment_line` splits one transcript line into :class:`Chunk` values (text broken
   into lines, speech start/end). Long utterances are split at word timings when the engine
   gave them, otherwise at times proportional to the text length.
2. :func:`time_chunks` places all chunks of a transcript on one time line: minimum duration,
   reading-speed extension, gaps, no overlaps (overlapping speech from two channels is
   delayed, never stacked).

:func:`check` is an independent quality check of any cue list: it reports every cue over a
limit and why (for instance a 60-character word cannot fit a 42-character line, or two
speakers talking at once leave no room for the reading speed).

Nothing here reads a clock, a file or the database.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Any


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list)."""
    return frozenset(text.split())

#: Netflix/BBC defaults. Two frames at 24 fps are 83 ms.
MAX_LINE_CHARS = 42
MAX_LINES = 2
MIN_DURATION_MS = 833
MAX_DURATION_MS = 7_000
MIN_GAP_MS = 83
MAX_CPS = 17.0
#: A gap shorter than this between two cues is closed (down to the minimum gap) so the text
#: does not flicker off and on again; Netflix asks for either 2 frames or at least ~0.5 s.
CHAIN_GAP_MS = 500
#: A cue shown this much later than its speech (because another speaker's cue was still up)
#: is reported by :func:`check`.
MAX_DELAY_MS = 1_000
#: Speech of one chunk may last this much longer than a cue may be shown: the cue then ends
#: (at ``max_duration_ms``) a little before its last word is spoken, which reads better than
#: an extra cue cut at an awkward place.
SPAN_SLACK_MS = 1_000
#: Tolerance when comparing a reading speed with the limit (times are whole milliseconds).
CPS_EPSILON = 0.05

# Costs the segmenter minimises: one unit per cue, plus the cost of where it breaks.
_CUE_COST = 1.0
_SHORT_CUE_CHARS = 12
_SHORT_CUE_COST = 0.8
_LINE_BREAK_WEIGHT = 10.0
_BALANCE_WEIGHT = 0.1
_TOP_HEAVY_COST = 0.5

_SENTENCE_END_CHARS = frozenset(".!?…")
_CLAUSE_END_CHARS = frozenset(",;:–—")
_CLOSERS = "\"'”’)]"
#: A break before these reads naturally.
_CONJUNCTIONS = _words(
"and but or nor so yet because although though while whereas which who whom whose "
    "that when where if unless until since then however after before"
)
#: A break after these separates words that belong together (article and noun, preposition
#: and object, subject pronoun and verb).
_BINDING = _words(
"a an the this that these those my your his her its our their some any no every each "
    "of to in on at by for with from into onto about over under than as "
    "i we you he she they it i'm we're you're i'll we'll you'll i've we've not very "
    "mr mrs ms dr"
)
#: A break before these starts a new phrase (preposition, article): better than most.
_PHRASE_STARTS = _words(
    "a an the this these those my your his her our their of to in on at by for with from into "
    "about over under after before during without within between through"
)
_TRAILING_PUNCT = "\"'”’)],.;:!?…"


@dataclass(frozen=True, slots=True)
class CueLimits:
    """The limits a cue must keep. Times in milliseconds, reading speed in characters/second."""

    max_line_chars: int = MAX_LINE_CHARS
    max_lines: int = MAX_LINES
    min_duration_ms: int = MIN_DURATION_MS
    max_duration_ms: int = MAX_DURATION_MS
    min_gap_ms: int = MIN_GAP_MS
    max_cps: float = MAX_CPS

    def __post_init__(self) -> None:
        if self.max_line_chars < 10:
            raise ValueError(f"max_line_chars must be at least 10, got {self.max_line_chars}")
        if not 1 <= self.max_lines <= 3:
            raise ValueError(f"max_lines must be 1, 2 or 3, got {self.max_lines}")
        if not 0 < self.min_duration_ms < self.max_duration_ms:
            raise ValueError(
                f"min_duration_ms ({self.min_duration_ms}) must be positive and below "
                f"max_duration_ms ({self.max_duration_ms})"
            )
        if self.min_gap_ms < 0:
            raise ValueError(f"min_gap_ms must not be negative, got {self.min_gap_ms}")
        if self.max_cps <= 0:
            raise ValueError(f"max_cps must be positive, got {self.max_cps}")

    @classmethod
    def from_settings(cls, cfg: Mapping[str, Any]) -> CueLimits:
        """Limits from the ``export.*`` settings of a :class:`captiond.config.Config`."""
        return cls(
            max_line_chars=int(cfg["export.max_line_chars"]),
            max_lines=int(cfg["export.max_lines"]),
            min_duration_ms=int(cfg["export.min_duration_ms"]),
            max_duration_ms=int(cfg["export.max_duration_ms"]),
            min_gap_ms=int(cfg["export.min_gap_ms"]),
            max_cps=float(cfg["export.max_cps"]),
        )


@dataclass(frozen=True, slots=True)
class TimedWord:
    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class SourceLine:
    """One final transcript line: what the cue builder needs of a stored segment."""

    start_ms: int
    end_ms: int
    text: str
    words: tuple[TimedWord, ...] = ()
    speaker: str | None = None
    track: str = "original"
    channel: str = ""

    @classmethod
    def from_row(cls, row: Any) -> SourceLine:
        """From a stored ``SegmentRow`` (words are dicts) or a :class:`captiond.events.Line`."""
        start = getattr(row, "audio_start_ms", None)
        if start is None:
            start = row.start_ms
        end = getattr(row, "audio_end_ms", None)
        if end is None:
            end = row.end_ms
        return cls(
            start_ms=int(start),
            end_ms=int(end),
            text=row.text or "",
            words=words_from(getattr(row, "words", None)),
            speaker=getattr(row, "speaker", None),
            track=getattr(row, "track", "original") or "original",
            channel=getattr(row, "channel", "") or "",
        )


def words_from(raw: Iterable[Any] | None) -> tuple[TimedWord, ...]:
    """Word timings from stored JSON dicts or :class:`captiond.events.Word` objects."""
    if not raw:
        return ()
    out = []
    for w in raw:
        if isinstance(w, Mapping):
            text, start, end = w.get("text"), w.get("start_ms"), w.get("end_ms")
        else:
            text, start, end = (getattr(w, "text", None), getattr(w, "start_ms", None),
                                getattr(w, "end_ms", None))
        if not isinstance(text, str) or start is None or end is None:
            return ()  # malformed timings: fall back to proportional splitting
        out.append(TimedWord(text, int(start), int(end)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one line that becomes one cue: its text lines and when it was spoken."""

    start_ms: int
    end_ms: int
    lines: tuple[str, ...]
    speaker: str | None = None

    @property
    def chars(self) -> int:
        return reading_chars(self.lines)


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle. ``speech_start_ms`` is when its words were spoken (``start_ms`` may be
    later when another cue was still on screen)."""

    start_ms: int
    end_ms: int
    lines: tuple[str, ...]
    speaker: str | None = None
    speech_start_ms: int = field(default=-1, compare=False)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def cps(self) -> float:
        return reading_chars(self.lines) * 1000.0 / max(1, self.duration_ms)


def reading_chars(lines: Sequence[str]) -> int:
    """Characters a viewer reads: all lines, with one space where a line breaks."""
    return sum(len(line) for line in lines) + max(0, len(lines) - 1)


def reading_ms(chars: int, max_cps: float) -> int:
    return math.ceil(chars * 1000.0 / max_cps)


# -- step 1: one line into chunks ---------------------------------------------------------


def _token_times(line: SourceLine, tokens: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each token: from the word timings when they spell the same text,
    otherwise spread over the line proportionally to the characters."""
    start = max(0, line.start_ms)
    end = max(start, line.end_ms)
    if line.words:
        times = _times_from_words(line.words, tokens, start, end)
        if times is not None:
            return times
    total = sum(len(t) + 1 for t in tokens)
    span = end - start
    out = []
    cum = 0
    for t in tokens:
        a = start + span * cum // total
        cum += len(t) + 1
        b = start + span * (cum - 1) // total
        out.append((a, max(a, b)))
    return out


def _times_from_words(
    words: Sequence[TimedWord], tokens: list[str], start: int, end: int
) -> list[tuple[int, int]] | None:
    # Engines tokenise differently from the text (" don't" vs "do" "n't", leading spaces), so
    # map by position in the text without white space; give up if the letters differ.
    pieces = ["".join(w.text.split()) for w in words]
    if "".join(pieces) != "".join(tokens):
        return None
    bounds: list[int] = []  # character offset where each word starts
    spans: list[tuple[int, int]] = []
    offset = 0
    last = start
    for piece, w in zip(pieces, words):
        if not piece:
            continue
        ws = min(max(w.start_ms, last, start), end)
        we = min(max(w.end_ms, ws), end)
        bounds.append(offset)
        spans.append((ws, we))
        offset += len(piece)
        last = ws

    def at(pos: int, *, ending: bool) -> int:
        k = bisect.bisect_right(bounds, pos - (1 if ending else 0)) - 1
        k = max(0, min(k, len(bounds) - 1))
        length = (bounds[k + 1] if k + 1 < len(bounds) else offset) - bounds[k]
        ws, we = spans[k]
        return ws + (we - ws) * (pos - bounds[k]) // max(1, length)

    out = []
    pos = 0
    for t in tokens:
        a = at(pos, ending=False)
        pos += len(t)
        out.append((a, max(a, at(pos, ending=True))))
    return out


def break_cost(before: str, after: str) -> float:
    """How bad a break between two words reads (0: after a sentence)."""
    end = before.rstrip(_CLOSERS)[-1:]
    if end in _SENTENCE_END_CHARS:
        return 0.0
    if end in _CLAUSE_END_CHARS:
        return 0.3
    if after.lower().strip(_TRAILING_PUNCT) in _CONJUNCTIONS:
        return 0.5
    if before.lower() in _BINDING:
        return 3.0
    if before[:1].isupper() and after[:1].isupper():
        return 2.0  # likely a name: "Ada / Lovelace"
    if after.lower() in _PHRASE_STARTS:
        return 0.7
    return 1.0


def _line_reach(lengths: list[int], max_chars: int) -> list[int]:
    """For each token i, the end (exclusive) of the longest line starting at i (at least i+1)."""
    n = len(lengths)
    prefix = [0]
    for length in lengths:
        prefix.append(prefix[-1] + length)
    reach = [n] * (n + 1)
    k = 0
    for i in range(n):
        k = max(k, i + 1)
        # tokens i..k (inclusive) with single spaces between them
        while k < n and prefix[k + 1] - prefix[i] + (k - i) <= max_chars:
            k += 1
        reach[i] = k
    return reach


def break_lines(tokens: Sequence[str], limits: CueLimits) -> tuple[str, ...]:
    """The text of a chunk broken into at most ``max_lines`` lines at the most natural points,
    preferring a balanced or bottom-heavy shape. A chunk that cannot fit (one very long word)
    stays on as few lines as the words allow."""
    n = len(tokens)
    prefix = [0]
    for t in tokens:
        prefix.append(prefix[-1] + len(t))

    def width(a: int, b: int) -> int:  # tokens a..b-1 joined by spaces
        return prefix[b] - prefix[a] + (b - a - 1)

    if n == 1 or width(0, n) <= limits.max_line_chars:
        return (" ".join(tokens),)
    costs = [0.0] + [break_cost(tokens[c - 1], tokens[c]) for c in range(1, n)]
    best: tuple[float, tuple[int, ...]] | None = None
    for breaks in range(1, limits.max_lines):
        for cut in combinations(range(1, n), breaks):
            edges = (0, *cut, n)
            lengths = [width(a, b) for a, b in pairwise(edges)]
            if max(lengths) > limits.max_line_chars:
                continue
            cost = sum(costs[c] for c in cut) * _LINE_BREAK_WEIGHT
            mean = sum(lengths) / len(lengths)
            cost += _BALANCE_WEIGHT * sum(abs(x - mean) for x in lengths)
            if lengths[0] > lengths[-1]:
                cost += _TOP_HEAVY_COST
            if best is None or cost < best[0]:
                best = (cost, cut)
        if best is not None:
            break  # fewer lines always win
    if best is None:  # does not fit: greedy wrap, long words alone on their line
        out: list[str] = []
        current: list[str] = []
        for t in tokens:
            if current and len(" ".join([*current, t])) > limits.max_line_chars:
                out.append(" ".join(current))
                current = []
            current.append(t)
        out.append(" ".join(current))
        return tuple(out)
    edges = (0, *best[1], n)
    return tuple(" ".join(tokens[a:b]) for a, b in pairwise(edges))


def segment_line(line: SourceLine, limits: CueLimits = CueLimits()) -> list[Chunk]:
    """Split one transcript line into chunks that each fit a cue.

    Every chunk fits ``max_lines`` lines of ``max_line_chars`` and was spoken within
    ``max_duration_ms`` (+ :data:`SPAN_SLACK_MS`), unless it is a single word too long for
    that. Among the splits that fit, the one with the fewest cues and the most natural break points wins.
    """
    tokens = line.text.split()
    if not tokens:
        return []
    text = " ".join(tokens)
    if len(text) <= limits.max_line_chars:
        # The common case, kept cheap: a short line is one cue on one line.
        start = max(0, line.start_ms)
        end = max(start, line.end_ms)
        spoken = [w for w in line.words if w.text.strip()]
        if spoken and "".join("".join(w.text.split()) for w in spoken) == "".join(tokens):
            first = min(max(spoken[0].start_ms, start), end)
            end = min(max(spoken[-1].end_ms, first), end)
            start = first
        if end - start <= limits.max_duration_ms + SPAN_SLACK_MS:
            return [Chunk(start, end, (text,), line.speaker)]
    times = _token_times(line, tokens)
    lengths = [len(t) for t in tokens]
    n = len(tokens)
    # reach[j]: tokens j..reach[j]-1 fit in max_lines lines (greedy wrapping is optimal for
    # the number of lines).
    one = _line_reach(lengths, limits.max_line_chars)
    reach = list(range(n + 1))
    for j in range(n):
        k = j
        for _ in range(limits.max_lines):
            if k >= n:
                break
            k = one[k]
        reach[j] = max(k, j + 1)
    max_span = limits.max_duration_ms + SPAN_SLACK_MS

    if reach[0] >= n and times[-1][1] - times[0][0] <= max_span:
        cuts = [0, n]  # the usual case: the whole line is one cue
    else:
        inf = float("inf")
        best = [inf] * (n + 1)
        back = [0] * (n + 1)
        best[0] = 0.0
        costs = [0.0] + [break_cost(tokens[c - 1], tokens[c]) for c in range(1, n)] + [0.0]
        for j in range(n):
            if best[j] == inf:
                continue
            base = best[j]
            t0 = times[j][0]
            chars = -1
            for i in range(j + 1, reach[j] + 1):
                chars += lengths[i - 1] + 1
                if i > j + 1 and times[i - 1][1] - t0 > max_span:
                    break
                cost = base + _CUE_COST + costs[i]
                if chars < _SHORT_CUE_CHARS and not (j == 0 and i == n):
                    cost += _SHORT_CUE_COST
                if cost < best[i]:
                    best[i] = cost
                    back[i] = j
        cuts = [n]
        while cuts[-1] > 0:
            cuts.append(back[cuts[-1]])
        cuts.reverse()
    chunks = []
    for a, b in pairwise(cuts):
        chunks.append(
            Chunk(
                start_ms=times[a][0],
                end_ms=times[b - 1][1],
                lines=break_lines(tokens[a:b], limits),
                speaker=line.speaker,
            )
        )
    return chunks


# -- step 2: chunks onto one time line ----------------------------------------------------


def order_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """Chunks by speech start; chunks that start together keep their given order."""
    return sorted(chunks, key=lambda c: c.start_ms)


def time_chunks(chunks: Sequence[Chunk], limits: CueLimits = CueLimits()) -> list[Cue]:
    """Cues for chunks in start order (see :func:`order_chunks`).

    Each cue starts when its words were spoken (or ``min_gap_ms`` after the cue before, when
    speech overlaps), lasts at least ``min_duration_ms`` and long enough to read at
    ``max_cps`` unless the next cue or ``max_duration_ms`` comes first, and ends at least
    ``min_gap_ms`` before the next cue. Short gaps between cues are closed to avoid flicker.
    """
    gap = limits.min_gap_ms
    out: list[Cue] = []
    prev_end: int | None = None
    n = len(chunks)
    for i, c in enumerate(chunks):
        start = max(0, c.start_ms)
        if prev_end is not None:
            start = max(start, prev_end + gap)
        need = max(limits.min_duration_ms, reading_ms(c.chars, limits.max_cps))
        latest = start + limits.max_duration_ms
        desired = min(max(c.end_ms, start + need), latest)
        end = desired
        if i + 1 < n:
            limit = chunks[i + 1].start_ms - gap
            if desired < limit < desired + CHAIN_GAP_MS:
                end = min(limit, latest)
            else:
                end = min(desired, max(limit, start + limits.min_duration_ms))
        out.append(Cue(start, end, c.lines, c.speaker, speech_start_ms=c.start_ms))
        prev_end = end
    return out


def build_cues(lines: Iterable[SourceLine], limits: CueLimits = CueLimits()) -> list[Cue]:
    """Cues for transcript lines (any order; lines with no text are skipped)."""
    chunks: list[Chunk] = []
    for line in lines:
        chunks.extend(segment_line(line, limits))
    return time_chunks(order_chunks(chunks), limits)


# -- quality check -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """A cue over a limit. ``cue`` is the 1-based cue number; ``cause`` says why it could not
    be helped (empty when nothing explains it: a bug, or cues not made by this builder)."""

    cue: int
    rule: str
    detail: str
    cause: str = ""

    def __str__(self) -> str:
        why = f" ({self.cause})" if self.cause else ""
        return f"cue {self.cue}: {self.rule}: {self.detail}{why}"


def check(cues: Sequence[Cue], limits: CueLimits = CueLimits()) -> list[Violation]:
    """Every limit each cue breaks, with the reason when the transcript made it unavoidable."""
    out: list[Violation] = []
    gap = limits.min_gap_ms
    for index, cue in enumerate(cues):
        number = index + 1
        nxt = cues[index + 1] if index + 1 < len(cues) else None
        prev = cues[index - 1] if index > 0 else None
        if not cue.text.strip():
            out.append(Violation(number, "empty", "the cue has no text"))
        if cue.end_ms <= cue.start_ms:
            out.append(Violation(number, "timing", f"ends at {cue.end_ms} ms, not after its "
                                 f"start {cue.start_ms} ms"))
            continue
        words = cue.text.split()
        longest = max(words, key=len) if words else ""
        if len(cue.lines) > limits.max_lines:
            cause = ("a word is longer than a line"
                     if len(longest) > limits.max_line_chars else "")
            out.append(Violation(number, "lines", f"{len(cue.lines)} lines, at most "
                                 f"{limits.max_lines}", cause))
        for line in cue.lines:
            if len(line) > limits.max_line_chars:
                lw = max(line.split(), key=len) if line.split() else ""
                cause = (f"the word '{lw[:20]}…' has {len(lw)} characters"
                         if len(lw) > limits.max_line_chars else "")
                out.append(Violation(number, "line_length", f"{len(line)} characters, at most "
                                     f"{limits.max_line_chars}", cause))
        if cue.duration_ms < limits.min_duration_ms:
            out.append(Violation(number, "duration", f"{cue.duration_ms} ms, at least "
                                 f"{limits.min_duration_ms} ms"))
        if cue.duration_ms > limits.max_duration_ms:
            out.append(Violation(number, "duration", f"{cue.duration_ms} ms, at most "
                                 f"{limits.max_duration_ms} ms"))
        if cue.cps > limits.max_cps + CPS_EPSILON:
            if nxt is not None and cue.end_ms + gap >= nxt.start_ms:
                cause = "the next cue follows at once: speech too fast or overlapping"
            elif cue.duration_ms >= limits.max_duration_ms:
                cause = f"reading it needs more than {limits.max_duration_ms} ms"
            else:
                cause = ""
            out.append(Violation(number, "reading_speed", f"{cue.cps:.1f} characters/s, at "
                                 f"most {limits.max_cps:g}", cause))
        if prev is not None:
            if cue.start_ms < prev.start_ms:
                out.append(Violation(number, "order", f"starts at {cue.start_ms} ms, before "
                                     f"cue {index} at {prev.start_ms} ms"))
            elif cue.start_ms < prev.end_ms:
                out.append(Violation(number, "overlap", f"starts {prev.end_ms - cue.start_ms}"
                                     f" ms before cue {index} ends"))
            elif cue.start_ms - prev.end_ms < gap:
                out.append(Violation(number, "gap", f"{cue.start_ms - prev.end_ms} ms after "
                                     f"cue {index}, at least {gap} ms"))
        if cue.speech_start_ms >= 0 and cue.start_ms - cue.speech_start_ms > MAX_DELAY_MS:
            out.append(Violation(
                number, "delayed",
                f"shown {cue.start_ms - cue.speech_start_ms} ms after it was spoken",
                "the cue before was still on screen: overlapping speech"))
    return out


def qc_report(cues: Sequence[Cue], limits: CueLimits = CueLimits(), *, max_items: int = 50
              ) -> str:
    """A short human report of :func:`check` (at most ``max_items`` cues listed)."""
    problems = check(cues, limits)
    head = (f"{len(cues)} cues; limits: {limits.max_line_chars} characters x "
            f"{limits.max_lines} lines, {limits.min_duration_ms}-{limits.max_duration_ms} ms, "
            f"gap >= {limits.min_gap_ms} ms, <= {limits.max_cps:g} characters/s")
    if not problems:
        return f"{head}\nall cues within the limits\n"
    by_rule: dict[str, int] = {}
    for p in problems:
        by_rule[p.rule] = by_rule.get(p.rule, 0) + 1
    summary = ", ".join(f"{rule} {count}" for rule, count in sorted(by_rule.items()))
    lines = [head, f"{len(problems)} problems: {summary}"]
    lines.extend(str(p) for p in problems[:max_items])
    if len(problems) > max_items:
        lines.append(f"... and {len(problems) - max_items} more")
    return "\n".join(lines) + "\n"
