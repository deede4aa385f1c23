"""``captiond export SESSION --format srt|vtt|minutes|minutes-json|json|audio``: subtitles,
minutes (Markdown, or their JSON), the whole session as JSON, or its kept audio (Ogg Opus,
``audio.keep``).

Reads final lines only, so it also works while the session is still running.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from captiond.commands.browse import open_store
from captiond.config import Config
from captiond.events import ORIGINAL
from captiond.exports.cues import CueLimits, build_cues, qc_report
from captiond.exports.document import ExportError, SessionExport, load_session, to_json
from captiond.exports.files import atomic_write
from captiond.exports.subtitles import iter_srt, iter_vtt

#: ``md`` and ``minutes`` are the same Markdown minutes; ``minutes-json`` their JSON.
FORMATS = ("srt", "vtt", "md", "minutes", "minutes-json", "json", "audio")
SUFFIXES = {".srt": "srt", ".vtt": "vtt", ".md": "md", ".markdown": "md", ".json": "json",
            ".ogg": "audio", ".opus": "audio"}

_LIMIT_FLAGS = {
    "--max-cps": "export.max_cps",
    "--max-line-chars": "export.max_line_chars",
    "--max-lines": "export.max_lines",
    "--min-duration-ms": "export.min_duration_ms",
    "--max-duration-ms": "export.max_duration_ms",
    "--min-gap-ms": "export.min_gap_ms",
    "--templates-dir": "export.templates_dir",
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from captiond.cli import add_setting_flags

    p = sub.add_parser(
        "export",
        parents=[common],
        help="export a session as SRT/WebVTT subtitles, Markdown minutes, JSON or its audio",
        description="Export a session (also one still running: its final lines so far).",
    )
    p.add_argument("session", help="session id or 'last'")
    p.add_argument("-f", "--format", choices=FORMATS, default=None,
                   help="output format (default: from the -o suffix, else srt)")
    p.add_argument("--lang", default=None, metavar="LANG",
                   help="track: original, a translation code (e.g. de) or all "
                        "(default: original for subtitles, all for md/json)")
    p.add_argument("-o", "--output", type=_output_path, default=None, metavar="FILE",
                   help="write FILE (atomically) instead of stdout ('-': stdout); with "
                        "--lang all, subtitles of translation LANG go to FILE's name + .LANG")
    p.add_argument("--qc", action="store_true",
                   help="print a quality report of the subtitle cues on stderr; the exit "
                        "status stays 0 when cues break the limits (the report says which)")
    p.add_argument("--template", default=None,
                   help="minutes template name (default minutes.md.j2)")
    add_setting_flags(p, _LIMIT_FLAGS)
    p.set_defaults(func=cmd_export)


def _output_path(text: str) -> Path | None:
    """``-o FILE``; ``-o -`` is standard output, as for most Unix tools."""
    return None if text == "-" else Path(text)


def limits_from(cfg: Config) -> CueLimits:
    try:
        return CueLimits.from_settings(cfg)
    except ValueError as exc:
        raise ExportError(f"subtitle limits do not fit together: {exc} "
                          "(check the export.* settings)") from None


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.output is None:
        return "srt"
    suffix = args.output.suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    known = ", ".join(sorted(SUFFIXES))
    raise ExportError(
        f"cannot tell the format of {args.output} from its extension '{suffix or '(none)'}' "
        f"(use {known}, or --format {'|'.join(FORMATS)})"
    )


def cmd_export(args: argparse.Namespace, cfg: Config) -> int:
    fmt = _format(args)
    if fmt == "audio":
        return _export_audio(args, cfg)
    subtitles = fmt in ("srt", "vtt")
    lang = args.lang or (ORIGINAL if subtitles else "all")
    if args.qc and not subtitles:
        raise ExportError("--qc checks subtitle cues: use it with --format srt or vtt")
    if subtitles and lang == "all" and args.output is None:
        raise ExportError("--lang all writes one subtitle file per language: give -o FILE")
    limits = limits_from(cfg)
    store = open_store(cfg)
    try:
        doc = load_session(store, args.session, lang=lang)
        stored_in = _StoredMinutes(store.minutes(doc.id))
    finally:
        store.close()
    if not doc.all_rows():
        print(f"captiond: session {doc.id} has no final lines yet", file=sys.stderr)

    if subtitles:
        if lang not in doc.tracks and lang == doc.language:
            lang = ORIGINAL  # --lang en for an English session: the original track
        tracks = list(doc.tracks) if lang == "all" else [lang]
        for track in tracks:
            cues = build_cues(doc.source_lines(track), limits)
            title = doc.title or f"captiond session {doc.id}"
            # Lines with speakers (Me / Them of a call, `captiond speakers`) name who speaks.
            speakers = any(r.speaker for r in doc.source_lines(track))
            chunks = iter_srt(cues, speakers=speakers) if fmt == "srt" else iter_vtt(
                cues, header=title if track == ORIGINAL else f"{title} ({track})",
                speakers=speakers)
            target = args.output
            if target is not None and track != ORIGINAL and lang == "all":
                target = target.with_name(f"{target.stem}.{track}{target.suffix or '.' + fmt}")
            _emit(chunks, target)
            if args.qc:
                label = "" if len(tracks) == 1 else f"[{track}] "
                sys.stderr.write(label + qc_report(cues, limits))
        return 0

    if fmt == "json":
        _emit([json.dumps(to_json(doc), ensure_ascii=False, indent=2), "\n"], args.output)
        return 0
    from captiond.exports import digest, produce

    minutes = produce.stored(stored_in, doc)  # None: offline minutes, made now, not stored
    if fmt == "minutes-json":
        lines = digest.text_lines(doc.original)
        if minutes is None:
            minutes = digest.offline(lines, doc.findings(), duration_ms=doc.duration_ms)
        minutes, _ = digest.check_cites(minutes, lines)
        _emit([json.dumps(digest.to_json(minutes, lines), ensure_ascii=False, indent=2), "\n"],
              args.output)
        return 0
    _emit([minutes_markdown(doc, cfg, args.template, minutes)], args.output)
    return 0


def _export_audio(args: argparse.Namespace, cfg: Config) -> int:
    """The session's kept audio, copied as it is (Ogg Opus; a running session: so far)."""
    import shutil

    from captiond.audio import keep

    store = open_store(cfg)
    try:
        row = store.resolve_session(args.session)
    finally:
        store.close()
    path = keep.audio_path(keep.audio_dir(cfg), row.id)
    if not path.exists():
        raise ExportError(
            f"session {row.id} has no kept audio in {path.parent} (audio is kept only with "
            "audio.keep = true, and retention (audio.keep_days, audio.keep_max_mb) may have "
            "removed it)")
    if args.output is None:
        if sys.stdout.isatty():
            raise ExportError("--format audio writes binary audio: give -o FILE.ogg "
                              "or redirect stdout")
        with path.open("rb") as src:
            shutil.copyfileobj(src, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0

    def chunks() -> Iterable[bytes]:
        with path.open("rb") as src:
            while block := src.read(1 << 20):
                yield block

    atomic_write(args.output, chunks(), mode=keep.PRIVATE_FILE_MODE)  # a voice recording
    print(f"captiond: session {row.id} audio -> {args.output}", file=sys.stderr)
    return 0


def minutes_markdown(doc: SessionExport, cfg: Config, template: str | None,
                     minutes: Any = None) -> str:
    import jinja2

    from captiond.exports.minutes import TEMPLATE, environment, render_minutes, user_templates_dir

    env = environment(user_templates_dir(cfg["export.templates_dir"]))
    name = template or TEMPLATE
    try:
        return render_minutes(doc, minutes=minutes, env=env, template=name)
    except jinja2.TemplateNotFound as exc:
        raise ExportError(f"minutes template '{exc.name}' not found (looked in "
                          f"{user_templates_dir(cfg['export.templates_dir'])} and the shipped "
                          "templates)") from None
    except jinja2.TemplateError as exc:
        where = f"{getattr(exc, 'name', None) or name}:{getattr(exc, 'lineno', '?')}"
        raise ExportError(f"minutes template {where}: {exc} (fix the template)") from None


class _StoredMinutes:
    """The one stored-minutes row read before the store was closed, served as the store would."""

    def __init__(self, row: Any) -> None:
        self.row = row

    def minutes(self, _session_id: int) -> Any:
        return self.row


def _emit(chunks: Iterable[str], target: Path | None) -> None:
    if target is None:
        out = sys.stdout
        for chunk in chunks:
            out.write(chunk)
        out.flush()
    else:
        atomic_write(target, chunks)
