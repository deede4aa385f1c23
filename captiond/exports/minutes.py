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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from captiond.exports.actions import Finding
from captiond.exports.digest import Cite, Minutes, check_cites, offline, stamps, text_lines
from captiond.exports.document import SessionExport
from captiond.resources import templates_dir
from captiond.timefmt import clock

TEMPLATE = "minutes.md.j2"

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&!{}])")

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


def _local(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def minutes_context(doc: SessionExport, findings: Sequence[Finding] | None = None,
                    minutes: Minutes | None = None) -> dict[str, Any]:
    """Everything the template may use: plain dicts, lists and strings.

    ``minutes``: stored minutes (their cites are checked against this transcript); without
    them, offline minutes are made from the transcript and ``findings``.
    """
    rows = [r for r in doc.original if r.text]
    lines = text_lines(rows)
    at = stamps(lines)
    if minutes is None:
        found = doc.findings() if findings is None else findings
        minutes = offline(lines, found, duration_ms=doc.duration_ms)
    minutes, _ = check_cites(minutes, lines)

    def cites(cs: Sequence[Cite]) -> list[str]:
        return [at[c.line] for c in cs if c.line in at]

    def line_dict(r: Any, stamp: str) -> dict[str, Any]:
        return {"start_ms": r.audio_start_ms, "end_ms": r.audio_end_ms, "at": stamp,
                "speaker": r.speaker, "channel": r.channel, "text": r.text}

    translations = []
    for lang, trows in doc.translations.items():
        tlines = text_lines(trows)
        tat = stamps(tlines)
        translations.append({"language": lang, "lines": [
            line_dict(r, tat[ln.id]) for r, ln in zip([r for r in trows if r.text], tlines)]})
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
        "minutes": {
            "source": minutes.source,
            "model": minutes.model,
            "language": minutes.language,
            "cost_usd": minutes.cost_usd,
            "notes": list(minutes.notes),
        },
        "summary": [{"text": s.text, "cites": cites(s.cites)} for s in minutes.summary],
        "topics": [{"title": t.title, "start": clock(t.start_ms), "end": clock(t.end_ms),
                    "summary": t.summary, "keywords": list(t.keywords),
                    "speakers": list(t.speakers), "cites": cites(t.cites)}
                   for t in minutes.topics],
        "decisions": [{"text": d.text, "speaker": d.speaker, "cites": cites(d.cites)}
                      for d in minutes.decisions],
        "actions": [{"task": a.text, "owner": a.owner, "due": a.due, "cites": cites(a.cites)}
                    for a in minutes.actions],
        "questions": [{"text": q.text, "cites": cites(q.cites)} for q in minutes.questions],
        "lines": [line_dict(r, at[ln.id]) for r, ln in zip(rows, lines)],
        "translations": translations,
        "gaps": [{"start_ms": g.start_ms, "end_ms": g.end_ms, "channel": g.channel,
                  "reason": g.reason} for g in doc.gaps],
    }


def render_minutes(doc: SessionExport, findings: Sequence[Finding] | None = None, *,
                   minutes: Minutes | None = None, env: jinja2.Environment | None = None,
                   template: str = TEMPLATE) -> str:
    env = env or environment(user_templates_dir())
    return env.get_template(template).render(**minutes_context(doc, findings, minutes))
