"""Topic sections, their most central line and their keywords, from transcript text [pure].

No model and no network. Sections follow the content, not the clock: a TextTiling-style
cohesion curve (Hearst 1997) compares the words of the lines before and after each point of
the meeting, and the deepest valleys of that curve (where the vocabulary changes most) become
section boundaries. A section's summary is the line most similar to the section as a whole
(TF-IDF cosine to the section's other lines), never a back-channel or a filler, and never the
section's first line when another line qualifies (the boundary line is where one topic ends
and the next begins; it is the least reliable witness of either).

Fillers and back-channels ("mm-hmm", "yeah", "okay", "um", "right", "so"...) and common
function words of English, German, French, Spanish and Portuguese are never keywords and
never count as content.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list)."""
    return frozenset(text.split())


#: Back-channels, hesitations and discourse fillers: never content, never keywords.
FILLERS = _words(
    """mm mmm mm-hmm mhm mhmm hmm hm uh-huh uh huh um umm uh erm er ah oh ooh eh yeah yep yup
    yes yeah-yeah okay ok alright right so well like just sure cool nice great wow really
    actually basically literally anyway anyways you know i mean sort kind gonna wanna gotta
    hmm-mm ja genau also äh ähm euh bah ben voilà bueno pues eh vale tá né então"""
)
_STOP = _words(
    """the and for are but not you all any can had her was one our out his has him how its
    who did get may see two way use she too own say says said been from have this that with
    they will your what when were them then than there their these those into more some such
    only other also just about after again against because before being below between both
    could does doing down during each even every everyone everything first further going
    here hers itself know last let lets little look looks lot make many maybe mean most much
    must need next once ought ours over quite same should something still take tell thing
    things think though through time today together told under until very want wanted
    where which while would year years able back come came coming people week gets getting
    thank thanks guess pretty probably whatever good fine don't didn't doesn't i'm i'll i've
    i'd it's that's there's they're we're we've we'll you're you'll what's let's can't won't
    isn't aren't wasn't weren't haven't hasn't yes yeah okay also why yourself myself our
    having doing being saying going done got put want give given getting bit stuff wait thing one two three four five
    der die das und ist nicht mit von den dem des ein eine einer eines auf für sie ich wir
    ihr sich auch aus bei nach wie wenn noch nur oder aber zum zur dass sollten werden wird
    les des une est pas que qui dans pour sur par avec sont été ces mais ont cela ait été
    los las una por con para del que como sus ello puede dado cualquier sobre
    uma com para dos das não nos nem mas estava meus estão neste embora"""
)
_TOKEN = re.compile(r"[^\W\d_][\w'’\-]*", re.UNICODE)

#: Content words a line needs to count as content (back-channels have none).
MIN_CONTENT_TOKENS = 2
#: Words a line needs to be a section's summary.
SUMMARY_MIN_WORDS = 6
SUMMARY_MAX_CHARS = 160
#: TextTiling: content words compared on each side of a candidate boundary.
WINDOW_TOKENS = 20
#: Least content words in a section (a smaller one is merged into its neighbour).
MIN_SECTION_TOKENS = 15
#: At most one section per this much audio, and never more than MAX_SECTIONS.
MS_PER_SECTION = 25_000
MAX_SECTIONS = 40
KEYWORDS = 4
#: Weight of dissimilarity beside depth (orders gaps on a flat cohesion curve).
TIE = 0.01
#: Longest line text looked at (bounded work on a runaway line).
MAX_LINE_CHARS = 5_000


@dataclass(frozen=True, slots=True)
class TextLine:
    """One transcript line: its id (position among the lines with text), times and text."""

    id: int
    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """Lines ``first``..``last`` (ids, inclusive) about one topic."""

    first: int
    last: int
    start_ms: int
    end_ms: int
    summary: str
    summary_line: int | None
    keywords: tuple[str, ...]
    speakers: tuple[str, ...]


def _stem(word: str) -> str:
    """Plural and possessive endings off, so 'buttons' and 'button' count as one word."""
    word = re.sub(r"['’]s$", "", word)
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    return word


def tokens(text: str) -> list[str]:
    """Content words of ``text`` (lowercase, stemmed), fillers and function words left out."""
    out = []
    for raw in _TOKEN.findall(text[:MAX_LINE_CHARS].lower()):
        raw = raw.strip("-'’")
        if len(raw) < 3 or raw in FILLERS or raw in _STOP or "_" in raw:
            continue
        out.append(_stem(raw))
    return out


def is_filler(word: str) -> bool:
    """Whether a word is a filler or back-channel (never a keyword)."""
    return word.lower().strip(".,!?;:-'’") in FILLERS


def is_backchannel(text: str) -> bool:
    """A line with (almost) no content: "Mm-hmm", "Yeah okay", "Right right"."""
    return len(tokens(text)) < MIN_CONTENT_TOKENS


_LEAD = re.compile(
    r"^(?:(?:mm-hmm|mhm|mm|hmm|uh-huh|um+|uh+|erm|er|ah|oh|okay|ok|alright|all right|so|well|"
    r"right|yeah|yep|yes|and|but|like|anyway|now|actually|basically|i mean|you know)\b[,.!]?\s+)+",
    re.IGNORECASE)
_HESITATION = re.compile(r"(?<![\w'’])(?:um+|uh+|erm+|uhm+|ähm|äh|euh)(?![\w'’])[,.]?\s*",
                         re.IGNORECASE)


def clean_summary(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """A line as a summary: leading fillers and hesitations out, first letter up, bounded."""
    s = _HESITATION.sub("", " ".join(text.split()))
    s = _LEAD.sub("", s).strip(" ,.")
    if not s:
        return ""
    s = s[:1].upper() + s[1:]
    if len(s) > limit:
        s = s[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return s


def _cosine(a: Counter[str] | dict[str, float], b: Counter[str] | dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def _window(units: Sequence[list[str]], start: int, step: int) -> Counter[str]:
    """Content words of the units from ``start`` going ``step`` until WINDOW_TOKENS."""
    out: Counter[str] = Counter()
    n = 0
    i = start
    while 0 <= i < len(units) and n < WINDOW_TOKENS:
        out.update(units[i])
        n += len(units[i])
        i += step
    return out


def similarities(units: Sequence[list[str]]) -> list[float]:
    """For each gap before unit i (i = 1..n-1): cosine of the words on either side."""
    return [_cosine(_window(units, i - 1, -1), _window(units, i, 1))
            for i in range(1, len(units))]


def depth_scores(sims: Sequence[float]) -> list[float]:
    """For each gap: how deep a cohesion valley it sits in (0 on a flat curve)."""
    depths = []
    for g, s in enumerate(sims):
        left = s
        for j in range(g - 1, -1, -1):
            if sims[j] < left:
                break
            left = sims[j]
        right = s
        for j in range(g + 1, len(sims)):
            if sims[j] < right:
                break
            right = sims[j]
        depths.append((left - s) + (right - s))
    return depths


def boundaries(units: Sequence[list[str]], max_sections: int) -> list[int]:
    """Unit indexes where a new section starts (sorted; 0 not included)."""
    if len(units) < 2 or max_sections <= 1:
        return []
    sims = similarities(units)
    # On a flat curve (lines that share no words at all, as unrelated sentences) depth says
    # nothing; a gap with no shared word is then a boundary, the least similar first.
    depths = [d + TIE * (1.0 - s) for d, s in zip(depth_scores(sims), sims)]
    mean = sum(depths) / len(depths)
    sd = math.sqrt(sum((d - mean) ** 2 for d in depths) / len(depths))
    cutoff = mean - sd / 2  # Hearst's liberal cutoff; the size rule below prunes
    counts = [len(u) for u in units]
    before = [0]
    for c in counts:
        before.append(before[-1] + c)
    total = before[-1]
    chosen: list[int] = []
    for g in sorted(range(len(depths)), key=lambda g: (-depths[g], g)):
        if (depths[g] <= TIE and sims[g] > 0) or depths[g] < cutoff or len(chosen) + 1 >= max_sections:
            continue
        i = g + 1  # the unit that would start the new section
        edges = sorted([0, *chosen, len(units)])
        lo = max(e for e in edges if e < i)
        hi = min(e for e in edges if e > i)
        if (before[i] - before[lo] >= MIN_SECTION_TOKENS
                and before[hi] - before[i] >= MIN_SECTION_TOKENS
                and total >= 2 * MIN_SECTION_TOKENS):
            chosen.append(i)
    return sorted(chosen)


def _idf(docs: Sequence[list[str]]) -> dict[str, float]:
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    n = len(docs)
    return {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}


def _tfidf(words: Sequence[str], idf: dict[str, float]) -> dict[str, float]:
    return {w: c * idf.get(w, 1.0) for w, c in Counter(words).items()}


def _word_count(text: str) -> int:
    """Words of two letters or more (spelled-out letters such as "N_ E_" are not words)."""
    return sum(1 for w in _TOKEN.findall(text) if len(w) > 1 and "_" not in w)


def _summary_line(lines: Sequence[TextLine], words: dict[int, list[str]],
                  idf: dict[str, float]) -> TextLine | None:
    """The line closest to the rest of its section; the first line only if nothing else is."""
    candidates = [ln for ln in lines if len(words[ln.id]) >= MIN_CONTENT_TOKENS
                  and _word_count(clean_summary(ln.text)) >= SUMMARY_MIN_WORDS]
    if len(candidates) > 1 and candidates[0].id == lines[0].id:
        candidates = candidates[1:]
    if not candidates:
        content = [ln for ln in lines if len(words[ln.id]) >= MIN_CONTENT_TOKENS]
        if len(content) > 1 and content[0].id == lines[0].id:
            content = content[1:]
        return max(content, key=lambda ln: (len(words[ln.id]), -ln.id), default=None)
    # cosine of each line with the rest of its section, in TF-IDF weights, computed from the
    # section's totals (O(words of the line) per line, not O(words of the section))
    section = _tfidf([w for ln in lines for w in words[ln.id]], idf)
    total_sq = sum(v * v for v in section.values())
    best, best_score = None, -1.0
    for ln in candidates:
        own = _tfidf(words[ln.id], idf)
        dot = sum(v * (section[k] - v) for k, v in own.items())
        own_sq = sum(v * v for v in own.values())
        rest_sq = total_sq - 2 * sum(v * section[k] for k, v in own.items()) + own_sq
        score = dot / math.sqrt(own_sq * rest_sq) if own_sq > 0 and rest_sq > 1e-12 else 0.0
        score += 1e-6 * len(words[ln.id])
        if score > best_score:
            best, best_score = ln, score
    return best


def _best_sentence(text: str, section: Counter[str], idf: dict[str, float]) -> str:
    """Of a long line, the sentence that carries most of the section's words."""
    parts = [p for p in re.split(r"(?<=[.!?])\s+", text[:MAX_LINE_CHARS]) if p.strip()]
    if len(text) <= SUMMARY_MAX_CHARS or len(parts) < 2:
        return text
    weight = _tfidf(list(section.elements()), idf)
    good = [p for p in parts if _word_count(p) >= SUMMARY_MIN_WORDS] or parts
    return max(good, key=lambda p: sum(weight.get(w, 0.0) for w in set(tokens(p))))


def _keywords(counts: Counter[str], spread: Counter[str], n_sections: int,
              surface: dict[str, Counter[str]], names: set[str], single: bool) -> list[str]:
    scored = []
    for w, c in counts.items():
        if w in names or (c < 2 and not single):
            continue
        idf = math.log((1 + n_sections) / (1 + spread[w])) + 1.0
        scored.append((-c * idf, w))
    out = []
    for _, w in sorted(scored)[:KEYWORDS]:
        out.append(surface[w].most_common(1)[0][0])
    return out


def sections(lines: Sequence[TextLine], duration_ms: int | None = None) -> list[Section]:
    """Topic sections over ``lines`` (in time order, every line in exactly one section)."""
    if not lines:
        return []
    words = {ln.id: tokens(ln.text) for ln in lines}
    surface: dict[str, Counter[str]] = {}
    for ln in lines:
        for raw in _TOKEN.findall(ln.text[:MAX_LINE_CHARS]):
            low = raw.lower().strip("-'’")
            if len(low) >= 3 and low not in FILLERS and low not in _STOP and "_" not in low:
                surface.setdefault(_stem(low), Counter())[raw.strip("-'’")] += 1
    content = [ln for ln in lines if len(words[ln.id]) >= MIN_CONTENT_TOKENS]
    span = max(duration_ms or 0, lines[-1].end_ms - lines[0].start_ms)
    max_sections = max(1, min(MAX_SECTIONS, span // MS_PER_SECTION))
    cuts = boundaries([words[ln.id] for ln in content], max_sections)
    starts = [content[i].id for i in cuts]
    groups: list[list[TextLine]] = [[]]
    for ln in lines:
        if starts and ln.id == starts[0] and groups[-1]:
            groups.append([])
            starts.pop(0)
        groups[-1].append(ln)
    idf = _idf([words[ln.id] for ln in content] or [[]])
    section_counts = [Counter(w for ln in g for w in words[ln.id]) for g in groups]
    spread: Counter[str] = Counter()
    for c in section_counts:
        spread.update(c.keys())
    names = {n.lower() for ln in lines if ln.speaker for n in ln.speaker.split()}
    out = []
    for g, counts in zip(groups, section_counts):
        best = _summary_line(g, words, idf)
        speakers: list[str] = []
        for ln in g:
            if ln.speaker and ln.speaker not in speakers:
                speakers.append(ln.speaker)
        summary = ""
        if best is not None:
            summary = clean_summary(_best_sentence(best.text, counts, idf))
        out.append(Section(
            first=g[0].id, last=g[-1].id, start_ms=g[0].start_ms,
            end_ms=max(ln.end_ms for ln in g),
            summary=summary,
            summary_line=best.id if best else None,
            keywords=tuple(_keywords(counts, spread, len(groups), surface, names,
                                     single=len(g) == 1)),
            speakers=tuple(speakers)))
    return out
