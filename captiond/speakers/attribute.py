"""Speaker turns + stored lines -> lines with speakers, split where the speaker changes [pure].

A line gets the speaker whose turns cover most of its time. A line whose time holds runs of
different speakers, each at least :data:`MIN_PIECE_MS` long, is split at the changes: by its
word times when the line has them (each word goes to the run holding its middle), else its
words are shared out in proportion to the runs' lengths. Shorter runs (a "yeah" under
someone's sentence, a turn boundary a little off) are absorbed by their neighbours, so a line
is not cut into scraps.

No I/O, no clock: values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: A run of one speaker inside a line shorter than this does not split it.
MIN_PIECE_MS = 1_000
#: A line no turn touches takes the nearest turn's speaker within this distance.
NEAREST_MS = 1_000


@dataclass(frozen=True)
class Turn:
    start_ms: int
    end_ms: int
    speaker: str


@dataclass(frozen=True)
class Word:
    start_ms: int
    end_ms: int
    word: str
    probability: float = 1.0


@dataclass(frozen=True)
class LineIn:
    """A stored line: ``key`` identifies it to the caller (the row id)."""

    key: int
    start_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...] = ()
    #: False: label the line whole, never split it (a translation track).
    splittable: bool = True


@dataclass(frozen=True)
class Piece:
    start_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...]
    speaker: str | None


@dataclass(frozen=True)
class Labelled:
    key: int
    pieces: tuple[Piece, ...]

    @property
    def split(self) -> bool:
        return len(self.pieces) > 1


def coverage(turns: Sequence[Turn], start_ms: int, end_ms: int) -> dict[str, int]:
    """Milliseconds of ``[start_ms, end_ms)`` each speaker's turns cover (a speaker's own
    overlapping turns count once)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for t in turns:
        lo, hi = max(t.start_ms, start_ms), min(t.end_ms, end_ms)
        if lo < hi:
            spans.setdefault(t.speaker, []).append((lo, hi))
    out: dict[str, int] = {}
    for speaker, parts in spans.items():
        parts.sort()
        total, cur_lo, cur_hi = 0, parts[0][0], parts[0][1]
        for lo, hi in parts[1:]:
            if lo > cur_hi:
                total += cur_hi - cur_lo
                cur_lo, cur_hi = lo, hi
            else:
                cur_hi = max(cur_hi, hi)
        out[speaker] = total + cur_hi - cur_lo
    return out


def _best(cov: dict[str, int]) -> str | None:
    if not cov:
        return None
    # Most time wins; a tie goes to the name first in order, so the result is deterministic.
    return min(cov, key=lambda s: (-cov[s], s))


def runs(turns: Sequence[Turn], start_ms: int, end_ms: int,
         min_piece_ms: int = MIN_PIECE_MS) -> list[tuple[int, int, str | None]]:
    """The line's time as runs of one speaker: at every moment the speaker whose turn holds
    it (of several, the one that covers most of the line), short runs absorbed."""
    if end_ms <= start_ms:
        return [(start_ms, end_ms, _best(coverage(turns, start_ms, max(end_ms, start_ms + 1))))]
    cov = coverage(turns, start_ms, end_ms)
    rank = {s: (-cov[s], s) for s in cov}
    cuts = {start_ms, end_ms}
    inside = [t for t in turns if t.start_ms < end_ms and t.end_ms > start_ms]
    for t in inside:
        cuts.update(c for c in (t.start_ms, t.end_ms) if start_ms < c < end_ms)
    points = sorted(cuts)
    out: list[list] = []
    for lo, hi in zip(points, points[1:], strict=False):
        here = [t.speaker for t in inside if t.start_ms <= lo and t.end_ms >= hi]
        who = min(here, key=lambda s: rank[s]) if here else None
        if out and out[-1][2] == who:
            out[-1][1] = hi
        else:
            out.append([lo, hi, who])
    # Silence between turns belongs to the talk around it.
    for i, r in enumerate(out):
        if r[2] is None and len(out) > 1:
            r[2] = out[i - 1][2] if i > 0 else out[i + 1][2]
    merged = _merge_same(out)
    # Absorb short runs, shortest first, into the neighbour that shares the most time.
    while len(merged) > 1:
        i = min(range(len(merged)), key=lambda k: merged[k][1] - merged[k][0])
        lo, hi, _ = merged[i]
        if hi - lo >= min_piece_ms:
            break
        if i == 0:
            merged[1][0] = lo
        elif i == len(merged) - 1:
            merged[i - 1][1] = hi
        else:
            left, right = merged[i - 1], merged[i + 1]
            if left[1] - left[0] >= right[1] - right[0]:
                left[1] = hi
            else:
                right[0] = lo
        del merged[i]
        merged = _merge_same(merged)
    return [(lo, hi, who) for lo, hi, who in merged]


def _merge_same(items: list[list]) -> list[list]:
    out: list[list] = []
    for r in items:
        if out and out[-1][2] == r[2]:
            out[-1][1] = r[1]
        else:
            out.append(list(r))
    return out


def _nearest(turns: Sequence[Turn], start_ms: int, end_ms: int) -> str | None:
    best: tuple[int, str] | None = None
    for t in turns:
        gap = max(t.start_ms - end_ms, start_ms - t.end_ms, 0)
        if gap <= NEAREST_MS and (best is None or (gap, t.speaker) < best):
            best = (gap, t.speaker)
    return best[1] if best else None


def label_line(turns: Sequence[Turn], line: LineIn,
               min_piece_ms: int = MIN_PIECE_MS) -> Labelled:
    """One line: its speaker, or its pieces when it spans a change of speaker."""
    cov = coverage(turns, line.start_ms, line.end_ms)
    whole = _best(cov) or _nearest(turns, line.start_ms, line.end_ms)
    one = Labelled(line.key, (Piece(line.start_ms, line.end_ms, line.text, line.words, whole),))
    if not line.splittable or not cov:
        return one
    parts = runs(turns, line.start_ms, line.end_ms, min_piece_ms)
    if len(parts) < 2:
        return one
    tokens = line.text.split()
    if line.words:
        groups = _by_word_times(line.words, parts)
        if sum(1 for g in groups if g) < 2:
            return one
        pieces = []
        for (lo, hi, who), group in zip(parts, groups, strict=True):
            if group:
                pieces.append(Piece(lo, hi, " ".join(w.word.strip() for w in group),
                                    tuple(group), who))
        return _settled(turns, line, pieces, one)
    if len(tokens) < 2:
        return one
    counts = _share(len(tokens), [hi - lo for lo, hi, _ in parts])
    pieces, at = [], 0
    for (lo, hi, who), n in zip(parts, counts, strict=True):
        if n:
            pieces.append(Piece(lo, hi, " ".join(tokens[at:at + n]), (), who))
            at += n
    if len(pieces) < 2:
        return one
    return _settled(turns, line, pieces, one)


def _settled(turns: Sequence[Turn], line: LineIn, pieces: list[Piece], one: Labelled
             ) -> Labelled:
    """Pieces laid end to end, each labelled with the speaker covering most of its final
    span (absorbing a short run can change that), neighbours of one speaker joined."""
    laid = _joined(pieces, line)
    relabelled = [Piece(p.start_ms, p.end_ms, p.text, p.words,
                        _best(coverage(turns, p.start_ms, p.end_ms)) or p.speaker) for p in laid]
    final = _joined(relabelled, line)
    if len(final) < 2:
        return one
    return Labelled(line.key, final)


def _joined(pieces: list[Piece], line: LineIn) -> tuple[Piece, ...]:
    """Pieces that cover the line end to end (a run left without words gives its time to the
    piece before it), neighbours of one speaker joined."""
    out: list[Piece] = []
    for p in pieces:
        if out and out[-1].speaker == p.speaker:
            prev = out[-1]
            out[-1] = Piece(prev.start_ms, p.end_ms, f"{prev.text} {p.text}".strip(),
                            prev.words + p.words, p.speaker)
        else:
            out.append(p)
    first, last = out[0], out[-1]
    out[0] = Piece(line.start_ms, first.end_ms, first.text, first.words, first.speaker)
    out[-1] = Piece(out[-1].start_ms, line.end_ms, last.text, last.words, last.speaker)
    for i in range(1, len(out)):
        prev = out[i - 1]
        out[i - 1] = Piece(prev.start_ms, out[i].start_ms, prev.text, prev.words, prev.speaker)
    return tuple(out)


def _by_word_times(words: Sequence[Word], parts: Sequence[tuple[int, int, str | None]]
                   ) -> list[list[Word]]:
    groups: list[list[Word]] = [[] for _ in parts]
    for w in words:
        mid = (w.start_ms + w.end_ms) // 2
        k = next((i for i, (lo, hi, _) in enumerate(parts) if mid < hi), len(parts) - 1)
        groups[k].append(w)
    return groups


def _share(n: int, weights: Sequence[int]) -> list[int]:
    """``n`` items shared in proportion to ``weights`` (largest remainders), in order."""
    total = sum(weights) or 1
    exact = [n * w / total for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    return counts


def attribute(turns: Iterable[Turn], lines: Iterable[LineIn],
              min_piece_ms: int = MIN_PIECE_MS) -> list[Labelled]:
    """Every line labelled (and split where it spans a change), in the order given."""
    ordered = sorted(turns, key=lambda t: (t.start_ms, t.end_ms, t.speaker))
    return [label_line(_near(ordered, ln), ln, min_piece_ms) for ln in lines]


def _near(turns: list[Turn], line: LineIn) -> list[Turn]:
    lo, hi = line.start_ms - NEAREST_MS, line.end_ms + NEAREST_MS
    return [t for t in turns if t.end_ms >= lo and t.start_ms <= hi]


def correct_share(truth: Sequence[Turn], labelled: Iterable[Labelled]) -> tuple[int, int]:
    """(ms of line time whose label is a speaker talking then, ms of line time that has
    someone talking): the share of line time attributed to the right speaker."""
    right = total = 0
    for item in labelled:
        for p in item.pieces:
            cov = coverage(truth, p.start_ms, p.end_ms)
            if not cov:
                continue
            # Time with anyone talking in the piece, then the part the labelled one talks.
            anyone = sum(coverage([Turn(t.start_ms, t.end_ms, "_") for t in truth],
                                  p.start_ms, p.end_ms).values())
            total += anyone
            right += cov.get(p.speaker, 0) if p.speaker else 0
    return right, total
