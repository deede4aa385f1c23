"""Minutes as data: summary, topics, decisions, actions, open questions, each citing lines [pure].

Every item cites transcript lines by id (the line's position among the session's original
lines that have text, as :class:`~captiond.exports.topics.TextLine` numbers them) together with
the line's start time, so stored minutes can be checked against the transcript they came from
(:func:`check_cites`): a cite whose line is gone is re-found by its start time or dropped, and
a decision, action or question left with no cite is dropped (nobody could check it).

The JSON form (``captiond-minutes`` version 1), stored with the session and exported with
``captiond export --format minutes-json``::

    {"format": "captiond-minutes", "version": 1, "source": "offline" | "openai",
     "model": str | null, "language": str | null, "generated_at": iso8601,
     "summary": [{"text", "cites"}],
     "topics": [{"title", "start_ms", "end_ms", "summary", "keywords", "speakers", "cites"}],
     "decisions": [{"text", "speaker", "cites"}],
     "actions": [{"task", "owner", "due", "cites"}],
     "questions": [{"text", "cites"}],
     "notes": [str],          # why these are offline minutes, cites dropped, parts merged...
     "cost_usd": float, "input_tokens": int, "output_tokens": int}

where ``cites`` is ``[{"line": id, "start_ms": int, "at": "00:01:05"}]`` (``at`` is the stamp
the Markdown minutes print for that line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from captiond.exports.actions import Finding
from captiond.exports.topics import TextLine, sections
from captiond.timefmt import clock

FORMAT = "captiond-minutes"
VERSION = 1
Source = Literal["offline", "openai"]
#: Bounds on what stored minutes may hold (a runaway model answer is cut, and said so).
MAX_ITEMS = 200
MAX_CITES = 20
MAX_TEXT_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class Cite:
    line: int
    start_ms: int


@dataclass(frozen=True)
class Item:
    """A summary point, decision, action or open question."""

    text: str
    cites: tuple[Cite, ...]
    owner: str | None = None
    due: str | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class Topic:
    title: str
    start_ms: int
    end_ms: int
    summary: str
    cites: tuple[Cite, ...]
    keywords: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Minutes:
    source: Source
    summary: tuple[Item, ...] = ()
    topics: tuple[Topic, ...] = ()
    decisions: tuple[Item, ...] = ()
    actions: tuple[Item, ...] = ()
    questions: tuple[Item, ...] = ()
    notes: tuple[str, ...] = ()
    model: str | None = None
    language: str | None = None
    generated_at: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def stamps(lines: Sequence[TextLine]) -> dict[int, str]:
    """The stamp printed before each line, unique in the session: ``00:01:05``; a second
    line in the same second gets tenths (``00:01:05.4``), a third a counter."""
    out: dict[int, str] = {}
    used: set[str] = set()
    for ln in lines:
        stamp = clock(ln.start_ms)
        if stamp in used:
            stamp = f"{stamp}.{ln.start_ms % 1000 // 100}"
        base, n = stamp, 2
        while stamp in used:
            stamp, n = f"{base}-{n}", n + 1
        used.add(stamp)
        out[ln.id] = stamp
    return out


def text_lines(rows: Sequence[Any]) -> list[TextLine]:
    """Stored rows (with text) as numbered lines; ``speaker`` is read when the row has one."""
    out: list[TextLine] = []
    for r in rows:
        if not r.text:
            continue
        speaker = getattr(r, "speaker", None) or None
        out.append(TextLine(len(out), r.audio_start_ms, r.audio_end_ms, r.text, speaker))
    return out


def _cite(ln: TextLine) -> Cite:
    return Cite(ln.id, ln.start_ms)


def _title(keywords: Sequence[str], summary: str) -> str:
    if keywords:
        text = ", ".join(keywords)
        return text[:1].upper() + text[1:]
    words = summary.split()
    return " ".join(words[:6]) + ("…" if len(words) > 6 else "") if words else "Untitled"


def offline(lines: Sequence[TextLine], findings: Sequence[Finding], *, duration_ms: int = 0,
            generated_at: str = "", notes: Sequence[str] = ()) -> Minutes:
    """Minutes without a model: topic sections, decisions and actions found by rules."""
    by_id = {ln.id: ln for ln in lines}
    topics = []
    for s in sections(lines, duration_ms):
        anchor = by_id[s.summary_line] if s.summary_line is not None else by_id[s.first]
        topics.append(Topic(_title(s.keywords, s.summary), s.start_ms, s.end_ms, s.summary,
                            (_cite(anchor),), s.keywords, s.speakers))
    decisions, actions = [], []
    for f in findings:
        ln = by_id.get(f.line_index)
        if ln is None:
            continue
        if f.kind == "decision":
            decisions.append(Item(f.text, (_cite(ln),), speaker=f.speaker))
        else:
            # "I'll ..." is the speaker's own task: their name when the line has one, else
            # nobody is named (never a placeholder)
            actions.append(Item(f.text, (_cite(ln),), owner=f.owner, due=f.due,
                                speaker=f.speaker))
    return Minutes("offline", topics=tuple(topics), decisions=tuple(decisions),
                   actions=tuple(actions), notes=tuple(notes), generated_at=generated_at)


def check_cites(m: Minutes, lines: Sequence[TextLine]) -> tuple[Minutes, list[str]]:
    """Minutes whose every cite names an existing line, and what had to be changed.

    A cite whose id and start time disagree is moved to the line that starts at that time
    (or, failing that, kept on the id when the id exists and no time was given); otherwise it
    is dropped. Decisions, actions and questions left without a cite are dropped; topics and
    summary points keep their text (their time range still places them).
    """
    by_id = {ln.id: ln for ln in lines}
    by_start: dict[int, TextLine] = {}
    for ln in lines:
        by_start.setdefault(ln.start_ms, ln)
    problems: list[str] = []

    def fix(cites: Sequence[Cite], what: str) -> tuple[Cite, ...]:
        out: list[Cite] = []
        for c in cites[:MAX_CITES]:
            ln = by_id.get(c.line)
            if ln is not None and (c.start_ms < 0 or ln.start_ms == c.start_ms):
                good = _cite(ln)
            elif c.start_ms in by_start:
                good = _cite(by_start[c.start_ms])
                problems.append(f"{what}: cite of line {c.line} moved to line {good.line}")
            else:
                problems.append(f"{what}: cite of line {c.line} dropped (no such line)")
                continue
            if good not in out:
                out.append(good)
        return tuple(out)

    def items(seq: Sequence[Item], kind: str, required: bool) -> tuple[Item, ...]:
        kept = []
        for i, it in enumerate(seq[:MAX_ITEMS]):
            cites = fix(it.cites, f"{kind} {i + 1}")
            if required and not cites:
                problems.append(f"{kind} {i + 1} dropped: it cites no line of the transcript")
                continue
            kept.append(replace(it, cites=cites, text=it.text[:MAX_TEXT_CHARS]))
        return tuple(kept)

    topics = tuple(replace(t, cites=fix(t.cites, f"topic {i + 1}"))
                   for i, t in enumerate(m.topics[:MAX_ITEMS]))
    out = replace(m, summary=items(m.summary, "summary point", False), topics=topics,
                  decisions=items(m.decisions, "decision", True),
                  actions=items(m.actions, "action", True),
                  questions=items(m.questions, "question", True))
    return out, problems


# -- JSON ---------------------------------------------------------------------------------


def _cites_json(cites: Sequence[Cite], at: Mapping[int, str]) -> list[dict[str, Any]]:
    return [{"line": c.line, "start_ms": c.start_ms, "at": at.get(c.line, clock(c.start_ms))}
            for c in cites]


def to_json(m: Minutes, lines: Sequence[TextLine] = ()) -> dict[str, Any]:
    at = stamps(lines)
    return {
        "format": FORMAT, "version": VERSION, "source": m.source, "model": m.model,
        "language": m.language, "generated_at": m.generated_at,
        "summary": [{"text": s.text, "cites": _cites_json(s.cites, at)} for s in m.summary],
        "topics": [{"title": t.title, "start_ms": t.start_ms, "end_ms": t.end_ms,
                    "summary": t.summary, "keywords": list(t.keywords),
                    "speakers": list(t.speakers), "cites": _cites_json(t.cites, at)}
                   for t in m.topics],
        "decisions": [{"text": d.text, "speaker": d.speaker, "cites": _cites_json(d.cites, at)}
                      for d in m.decisions],
        "actions": [{"task": a.text, "owner": a.owner, "due": a.due,
                     "cites": _cites_json(a.cites, at)} for a in m.actions],
        "questions": [{"text": q.text, "cites": _cites_json(q.cites, at)} for q in m.questions],
        "notes": list(m.notes), "cost_usd": round(m.cost_usd, 6),
        "input_tokens": m.input_tokens, "output_tokens": m.output_tokens,
    }


def _cites(raw: Any) -> tuple[Cite, ...]:
    return tuple(Cite(int(c["line"]), int(c.get("start_ms", -1))) for c in raw or ())


def from_json(data: Mapping[str, Any]) -> Minutes:
    """Stored minutes back as :class:`Minutes` (raises ValueError on another format)."""
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ValueError(f"not {FORMAT} version {VERSION} minutes")
    return Minutes(
        source=data["source"], model=data.get("model"), language=data.get("language"),
        generated_at=data.get("generated_at", ""),
        summary=tuple(Item(s["text"], _cites(s["cites"])) for s in data.get("summary", ())),
        topics=tuple(Topic(t["title"], t["start_ms"], t["end_ms"], t["summary"],
                           _cites(t["cites"]), tuple(t.get("keywords", ())),
                           tuple(t.get("speakers", ()))) for t in data.get("topics", ())),
        decisions=tuple(Item(d["text"], _cites(d["cites"]), speaker=d.get("speaker"))
                        for d in data.get("decisions", ())),
        actions=tuple(Item(a["task"], _cites(a["cites"]), owner=a.get("owner"),
                           due=a.get("due")) for a in data.get("actions", ())),
        questions=tuple(Item(q["text"], _cites(q["cites"])) for q in data.get("questions", ())),
        notes=tuple(data.get("notes", ())), cost_usd=float(data.get("cost_usd", 0.0)),
        input_tokens=int(data.get("input_tokens", 0)),
        output_tokens=int(data.get("output_tokens", 0)))


