"""Markdown meeting minutes from a Jinja2 template the user may override.

Templates are looked up first in the user's folder (``export.templates_dir``, default
``~/.config/captiond/templates``), then in captiond's ``templates/``. A user template can
extend or include the shipped one by its ``default:`` name, as in Datasette::

    {% extends "default:minutes.md.j2" %}
    {% block actions %}{{ super() }}
    _Reviewed by the chair._
    {% endblock %}

The template gets plain values (see :func:`minutes_context`); text from the transcript must go
through the ``md`` filter, which escapes Markdown so a transcript cannot inject links, HTML or
headings into the minutes.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from captiond.exports.actions import Finding
from captiond.exports.document import SessionExport
from captiond.resources import templates_dir
from captiond.timefmt import clock


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list)."""
    return frozenset(text.split())

TEMPLATE = "minutes.md.j2"
#: Outline sections: about this many for a session of any length, each a round length.
OUTLINE_SECTIONS = 8
SECTION_LENGTHS_MS = (60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000)
KEYWORDS_PER_SECTION = 4
GIST_MAX_CHARS = 140

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&!{}])")
_WORD = re.compile(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'’\-]{3,}")
_STOPWORDS = _words(
    """about above after again against also although always another anyone anything around
    because been before being below between both cannot could didn't does doesn't doing done
    don't down during each else even every everyone everything fine first from further going
    gonna good great have haven't having here hers into it's itself just kind know last let's
    like little look looks lot make many maybe mean more most much must need next nice okay once
    only other ought ours over really right same say says should some something still such sure
    take than thank thanks that that's their theirs them then there there's these they they're
    thing things think this those though through time today together told too under until very
    want wanted was wasn't we'll we're we've well were weren't what what's when where which
    while will with won't would yeah year years yes you'll you're your yours actually alright
    thing guess pretty probably whatever anyway able back come came coming right people said
    quite these week yeah okay yeah going want gets getting"""
)


def md(text: Any) -> str:
    """Escape Markdown (and inline HTML) in transcript text; whitespace collapsed."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text or "").split()))


#: Wall time is shown beside the audio time when they differ by more than this.
WALL_DIFFERS_MS = 2_000


def differs(wall_ms: int | None, audio_ms: int) -> bool:
    """Whether wall-clock time is worth showing beside the audio time."""
    return wall_ms is not None and abs(wall_ms - audio_ms) > WALL_DIFFERS_MS


def duration_text(ms: int) -> str:
    minutes, seconds = divmod(max(0, ms) // 1000, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def user_templates_dir(setting: str = "", env: Mapping[str, str] | None = None) -> Path:
    if setting:
        return Path(setting).expanduser()
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "captiond" / "templates"


def environment(user_dir: Path | None = None) -> jinja2.Environment:
    """Templates from ``user_dir`` first, then the shipped ones (also as ``default:NAME``)."""
    shipped = jinja2.FileSystemLoader(str(templates_dir()))
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None and user_dir.is_dir():
        loaders.append(jinja2.FileSystemLoader(str(user_dir)))
    loaders += [jinja2.PrefixLoader({"default": shipped}, delimiter=":"), shipped]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=False,  # Markdown, not HTML: the `md` filter escapes what matters
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = md
    env.filters["clock"] = clock
    return env


def _anchors(rows: Sequence[Any], prefix: str) -> list[str]:
    """A unique anchor per line, stable for the same transcript: ``t83000``, ``t83000-2``."""
    seen: Counter[int] = Counter()
    out = []
    for r in rows:
        seen[r.audio_start_ms] += 1
        n = seen[r.audio_start_ms]
        out.append(f"{prefix}{r.audio_start_ms}" + (f"-{n}" if n > 1 else ""))
    return out


def _section_ms(duration_ms: int) -> int:
    for length in SECTION_LENGTHS_MS:
        if duration_ms <= length * OUTLINE_SECTIONS:
            return length
    return SECTION_LENGTHS_MS[-1]


def _gist(texts: Sequence[str]) -> str:
    """The first sentence of some substance in a section (at least six words)."""
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            if len(sentence.split()) >= 6:
                return sentence if len(sentence) <= GIST_MAX_CHARS else (
                    sentence[: GIST_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…")
    return texts[0][:GIST_MAX_CHARS] if texts else ""


def outline(rows: Sequence[Any], anchors: Sequence[str], findings: Sequence[Finding],
            duration_ms: int) -> list[dict[str, Any]]:
    """Time sections with speakers, distinctive keywords and a gist."""
    if not rows:
        return []
    length = _section_ms(max(duration_ms, rows[-1].audio_end_ms))
    sections: dict[int, dict[str, Any]] = {}
    names = {r.speaker.lower() for r in rows if r.speaker}
    for row, anchor in zip(rows, anchors):
        k = row.audio_start_ms // length
        sec = sections.setdefault(k, {"start_ms": k * length, "end_ms": (k + 1) * length,
                                      "anchor": anchor, "speakers": [], "texts": [],
                                      "words": Counter(), "lines": 0})
        sec["lines"] += 1
        sec["texts"].append(row.text)
        if row.speaker and row.speaker not in sec["speakers"]:
            sec["speakers"].append(row.speaker)
        sec["words"].update(
            w for w in (x.lower() for x in _WORD.findall(row.text))
            # contractions and the speakers' names say nothing about the topic
            if w not in _STOPWORDS and w not in names and "'" not in w and "’" not in w)
    # distinctive words: frequent here, rare in other sections
    spread: Counter[str] = Counter()
    for sec in sections.values():
        spread.update(sec["words"].keys())
    total = len(sections)
    out = []
    for k in sorted(sections):
        sec = sections[k]
        scored = sorted(sec["words"].items(),
                        key=lambda kv: (-kv[1] * (1 + total - spread[kv[0]]), kv[0]))
        keywords = [w for w, c in scored if c > 1 or total == 1][:KEYWORDS_PER_SECTION]
        items = [f for f in findings if sec["start_ms"] <= f.start_ms < sec["end_ms"]]
        out.append({
            "start_ms": sec["start_ms"],
            "end_ms": min(sec["end_ms"], max(duration_ms, rows[-1].audio_end_ms)),
            "anchor": sec["anchor"],
            "speakers": sec["speakers"],
            "keywords": keywords,
            "gist": _gist(sec["texts"]),
            "lines": sec["lines"],
            "decisions": sum(1 for f in items if f.kind == "decision"),
            "actions": sum(1 for f in items if f.kind == "action"),
        })
    return out


def _local(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def minutes_context(doc: SessionExport, findings: Sequence[Finding]) -> dict[str, Any]:
    """Everything the template may use: plain dicts, lists and strings."""
    rows = [r for r in doc.original if r.text]
    anchors = _anchors(rows, "t")

    def link(f: Finding) -> str:
        # line_index counts the original lines that have text, as ``rows`` does
        return anchors[f.line_index] if 0 <= f.line_index < len(anchors) else ""

    def line_dict(r: Any, anchor: str) -> dict[str, Any]:
        return {"start_ms": r.audio_start_ms, "end_ms": r.audio_end_ms, "anchor": anchor,
                "speaker": r.speaker, "channel": r.channel, "text": r.text}

    translations = []
    for lang, trows in doc.translations.items():
        trows = [r for r in trows if r.text]
        translations.append({"language": lang, "lines": [
            line_dict(r, a) for r, a in zip(trows, _anchors(trows, f"{lang}-"))]})
    return {
        "session": {
            "id": doc.id,
            "title": doc.title or f"Meeting {doc.started_at.astimezone():%Y-%m-%d %H:%M}",
            "status": doc.status,
            "running": doc.status == "running",
            "source": doc.source,
            "date": f"{doc.started_at.astimezone():%A %d %B %Y}",
            "started": _local(doc.started_at),
            "ended": _local(doc.ended_at),
            "duration": duration_text(doc.duration_ms),
            # Wall time only where it tells something: a recording transcribed faster (or a
            # session that waited) is not as long as its audio.
            "wall": duration_text(doc.wall_ms)
            if doc.wall_ms is not None and differs(doc.wall_ms, doc.duration_ms) else None,
            "engines": doc.engines,
            "languages": doc.languages,
            "channels": doc.channels,
            "speakers": doc.speakers,
        },
        "outline": outline(rows, anchors, findings, doc.duration_ms),
        "decisions": [{"text": f.text, "start_ms": f.start_ms, "anchor": link(f),
                       "speaker": f.speaker} for f in findings if f.kind == "decision"],
        "actions": [{"task": f.text, "owner": f.owner, "due": f.due, "start_ms": f.start_ms,
                     "anchor": link(f), "speaker": f.speaker, "self_assigned": f.self_assigned}
                    for f in findings if f.kind == "action"],
        "lines": [line_dict(r, a) for r, a in zip(rows, anchors)],
        "translations": translations,
        "gaps": [{"start_ms": g.start_ms, "end_ms": g.end_ms, "channel": g.channel,
                  "reason": g.reason} for g in doc.gaps],
    }


def render_minutes(doc: SessionExport, findings: Sequence[Finding] | None = None, *,
                   env: jinja2.Environment | None = None, template: str = TEMPLATE) -> str:
    env = env or environment(user_templates_dir())
    findings = doc.findings() if findings is None else findings
    return env.get_template(template).render(**minutes_context(doc, findings))
