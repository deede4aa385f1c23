"""A stored session as the exports see it, and the JSON export.

:func:`load_session` reads finals only, so it works on a session that is still running (the
export is whatever was final at that moment). The JSON document (``captiond-session`` version
1) is described in docs/guide/exports.md; its shape::

    {"format": "captiond-session", "version": 1,
     "session": {"id", "title", "status", "started_at", "ended_at", "duration_ms" (audio),
                 "wall_ms" (started to ended, null while running), "source",
                 "engines", "languages", "channels", "speakers"},
     "tracks": {"original": [{"item_id", "start_ms", "end_ms", "channel", "speaker", "text",
                              "engine", "language", "words": [{"text", "start_ms", "end_ms",
                              "probability"}] | null}], "de": [...]},
     "decisions": [{"text", "start_ms", "speaker"}],
     "actions": [{"owner", "task", "due", "start_ms", "speaker", "self_assigned"}],
     "gaps": [{"channel", "start_ms", "end_ms", "reason"}]}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from captiond.errors import CaptiondError
from captiond.events import ORIGINAL
from captiond.exports.actions import Finding, Utterance, extract
from captiond.exports.cues import SourceLine
from captiond.transcript.store import Store

JSON_FORMAT = "captiond-session"
JSON_VERSION = 1


class ExportError(CaptiondError):
    """An export that cannot be made as asked (unknown language, missing output path...)."""


@dataclass
class SessionExport:
    """One session's finals by track (``original`` first), gaps and facts for the minutes."""

    id: int
    title: str | None
    status: str
    source: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    language: str | None
    engine: str
    tracks: dict[str, list[Any]] = field(default_factory=dict)  # SegmentRow values
    #: Audio captured (the session's own clock), as stored when it ended.
    audio_seconds: float = 0.0
    gaps: list[Any] = field(default_factory=list)

    @property
    def original(self) -> list[Any]:
        return self.tracks.get(ORIGINAL, [])

    @property
    def translations(self) -> dict[str, list[Any]]:
        return {k: v for k, v in self.tracks.items() if k != ORIGINAL}

    def all_rows(self) -> list[Any]:
        return [row for rows in self.tracks.values() for row in rows]

    @property
    def duration_ms(self) -> int:
        """Audio length: what was captured (a 49 s file transcribed in 5 s lasts 49 s), or, for
        a running session, the end of its last final line."""
        rows = self.all_rows()
        last = max((r.audio_end_ms for r in rows), default=0)
        return max(last, int(round((self.audio_seconds or 0.0) * 1000)))

    @property
    def wall_ms(self) -> int | None:
        """Wall-clock time from start to end (None while running)."""
        if self.ended_at is None:
            return None
        return max(0, int((_aware(self.ended_at) - _aware(self.started_at)).total_seconds()
                          * 1000))

    @property
    def engines(self) -> list[str]:
        names = {r.engine for r in self.all_rows() if r.engine}
        if self.engine:
            names.add(self.engine)
        return sorted(names)

    @property
    def languages(self) -> list[str]:
        langs = {r.language for r in self.original if r.language}
        if self.language:
            langs.add(self.language)
        return sorted(langs) + [t for t in self.translations if t not in langs]

    @property
    def channels(self) -> list[str]:
        return sorted({r.channel for r in self.all_rows() if r.channel})

    @property
    def speakers(self) -> list[str]:
        return sorted({r.speaker for r in self.original if r.speaker})

    def source_lines(self, track: str = ORIGINAL) -> list[SourceLine]:
        return [SourceLine.from_row(r) for r in self.tracks.get(track, []) if r.text]

    def findings(self) -> list[Finding]:
        """Decisions and action items of the original transcript."""
        rows = [r for r in self.original if r.text]
        # line_index: the position among the original lines that have text
        return extract(Utterance(r.audio_start_ms, r.text, r.speaker, i) for i, r in
                       enumerate(rows))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def load_session(store: Store, ref: str | int, *, lang: str = "all") -> SessionExport:
    """A session's final lines. ``lang``: ``all``, ``original`` or a translation's code
    (the original is always kept for the minutes; subtitle writers pick one track)."""
    row = store.resolve_session(ref)
    rows = store.lines(row.id, track=None)
    tracks: dict[str, list[Any]] = {ORIGINAL: []}
    for r in rows:
        tracks.setdefault(r.track or ORIGINAL, []).append(r)
    if lang not in ("all", ORIGINAL) and lang not in tracks and lang != (row.language or ""):
        have = ", ".join(["original", *sorted(t for t in tracks if t != ORIGINAL)])
        raise ExportError(
            f"session {row.id} has no '{lang}' track (it has: {have}; use --lang all)"
        )
    ordered = {ORIGINAL: tracks.pop(ORIGINAL)}
    for name in sorted(tracks):
        if lang in ("all", name):
            ordered[name] = tracks[name]
    return SessionExport(
        id=row.id,
        title=row.title,
        status=row.status,
        source=row.source,
        started_at=_aware(row.started_at),
        ended_at=_aware(row.ended_at) if row.ended_at else None,
        language=row.language,
        engine=row.engine,
        tracks=ordered,
        gaps=store.gaps(row.id),
        audio_seconds=row.audio_seconds or 0.0,
    )


def _iso(value: dt.datetime | None) -> str | None:
    return _aware(value).isoformat() if value else None


def to_json(doc: SessionExport, findings: list[Finding] | None = None) -> dict[str, Any]:
    findings = doc.findings() if findings is None else findings
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "session": {
            "id": doc.id,
            "title": doc.title,
            "status": doc.status,
            "started_at": _iso(doc.started_at),
            "ended_at": _iso(doc.ended_at),
            "duration_ms": doc.duration_ms,
            "wall_ms": doc.wall_ms,
            "source": doc.source,
            "engines": doc.engines,
            "languages": doc.languages,
            "channels": doc.channels,
            "speakers": doc.speakers,
        },
        "tracks": {
            track: [
                {
                    "item_id": r.item_id,
                    "start_ms": r.audio_start_ms,
                    "end_ms": r.audio_end_ms,
                    "channel": r.channel,
                    "speaker": r.speaker,
                    "text": r.text,
                    "engine": r.engine,
                    "language": r.language,
                    "words": r.words,
                }
                for r in rows
            ]
            for track, rows in doc.tracks.items()
        },
        "decisions": [
            {"text": f.text, "start_ms": f.start_ms, "speaker": f.speaker}
            for f in findings if f.kind == "decision"
        ],
        "actions": [
            {"owner": f.owner, "task": f.text, "due": f.due, "start_ms": f.start_ms,
             "speaker": f.speaker, "self_assigned": f.self_assigned}
            for f in findings if f.kind == "action"
        ],
        "gaps": [
            {"channel": g.channel, "start_ms": g.start_ms, "end_ms": g.end_ms,
             "reason": g.reason}
            for g in doc.gaps
        ],
    }
