"""Commands that read the transcript database: ``sessions`` and ``show``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from captiond.config import Config
from captiond.errors import CaptiondError
from captiond.exports.minutes import differs
from captiond.timefmt import clock
from captiond.transcript.store import Store, session_duration


def format_ms(ms: int, *, millis: bool = False) -> str:
    """``01:02:03`` (or ``01:02:03.456``) for a stream offset in milliseconds."""
    return clock(ms, "." if millis else None)


def parse_clock(text: str) -> int:
    """Milliseconds from ``HH:MM:SS``, ``MM:SS`` or seconds (``--at``)."""
    parts = text.strip().split(":")
    bad = argparse.ArgumentTypeError(f"'{text}' is not a time (write HH:MM:SS, MM:SS or seconds)")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise bad from None
    if (len(numbers) > 3 or not all(math.isfinite(n) and n >= 0 for n in numbers)
            or any(n >= 60 for n in numbers[1:])):
        raise bad
    seconds = 0.0
    for n in numbers:
        seconds = seconds * 60 + n
    return int(seconds * 1000)


def open_store(cfg: Config) -> Store:
    """The database for a command that reads it. A SQLite URL given explicitly (--db,
    database.url) whose folder does not exist is a mistake, not a new empty database."""
    url = cfg.database_url()
    if cfg["database.url"]:
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - Store.open explains a bad URL
            parsed = None
        if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database \
                and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            if not folder.is_dir():
                raise CaptiondError(
                    f"no database at {parsed.database}: the folder {folder} does not exist "
                    "(check --db or database.url)"
                )
    return Store.open(url)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sessions", parents=[common], help="list captioning sessions")
    p.add_argument("-n", "--limit", type=int, default=50, help="how many (newest first)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("show", parents=[common], help="print a session's transcript")
    p.add_argument("session", nargs="?", default="last", help="session id or 'last'")
    p.add_argument("--at", type=parse_clock, help="start at this time (HH:MM:SS)")
    p.add_argument("--track", default="original", help="original or a translation language")
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.add_argument(
        "--dropped", action="store_true",
        help="list the utterances the engine discarded or trimmed, with the reason",
    )
    p.set_defaults(func=cmd_show)


def cmd_sessions(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg)
    rows = store.list_sessions(args.limit)
    if args.json:
        out = [
            {
                "id": r.id,
                "title": r.title,
                "started_at": r.started_at.isoformat(),
                "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                "status": r.status,
                "source": r.source,
                "engine": r.engine,
                "audio_seconds": r.audio_seconds,
                "wall_seconds": _wall_seconds(r),
                "lines": n,
            }
            for r, n in rows
        ]
        print(json.dumps(out, indent=2))
        return 0
    if not rows:
        print("no sessions yet (start one with `captiond run` or `captiond transcribe FILE`)")
        return 0
    # "audio": the session's length on its own clock; "wall": start to end, where it differs.
    print(f"{'id':>5}  {'started':19}  {'audio':>8}  {'wall':>8}  {'status':11}  {'lines':>5}  "
          "title/source")
    for r, n in rows:
        audio_ms = int(round((r.audio_seconds or 0.0) * 1000))
        wall = _wall_seconds(r)
        wall_ms = None if wall is None else int(wall * 1000)
        wall_text = format_ms(wall_ms) if differs(wall_ms, audio_ms) and wall_ms is not None else ""
        started = r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        label = r.title or r.source
        print(f"{r.id:>5}  {started}  {format_ms(audio_ms):>8}  {wall_text:>8}  {r.status:11}  "
              f"{n:>5}  {label}")
    return 0


def _wall_seconds(row: Any) -> float | None:
    duration = session_duration(row)
    return None if duration is None else round(duration.total_seconds(), 1)


def cmd_show(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg)
    session = store.resolve_session(args.session)
    if args.dropped:
        return show_dropped(store, session.id, args.json)
    lines = store.lines(session.id, track=args.track)
    if args.at is not None:
        end_ms = max((ln.audio_end_ms for ln in lines), default=0)
        end_ms = max(end_ms, int((session.audio_seconds or 0) * 1000))
        if args.at > end_ms:
            raise CaptiondError(
                f"--at {format_ms(args.at)} is past the end of session {session.id} "
                f"(it ends at {format_ms(end_ms)})"
            )
        lines = [ln for ln in lines if ln.audio_end_ms >= args.at]
    out = sys.stdout
    if args.json:
        for ln in lines:
            out.write(
                json.dumps(
                    {
                        "item_id": ln.item_id,
                        "start_ms": ln.audio_start_ms,
                        "end_ms": ln.audio_end_ms,
                        "channel": ln.channel,
                        "speaker": ln.speaker,
                        "text": ln.text,
                        "engine": ln.engine,
                        "track": ln.track,
                        "language": ln.language,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        return 0
    title = session.title or session.source
    spoken = sorted({ln.language for ln in lines if ln.text and ln.language})
    # The languages heard (or the one asked for) after the engine; a line is tagged with its
    # language only where that tells something: several languages, or not the session's.
    languages = "+".join(spoken) or session.language or ""
    about = ", ".join(x for x in (session.status, session.engine, languages) if x)
    out.write(f"# session {session.id}: {title} ({about})\n")
    for ln in lines:
        if not ln.text:
            continue
        who = f"{ln.speaker}: " if ln.speaker else ""
        tag = f"[{ln.language}] " if language_tagged(ln.language, spoken, session.language) else ""
        out.write(f"[{format_ms(ln.audio_start_ms)}] {tag}{who}{ln.text}\n")
    for gap in store.gaps(session.id):
        out.write(
            f"# gap {format_ms(gap.start_ms)}-{format_ms(gap.end_ms)} "
            f"{gap.channel or ''} {gap.reason}\n"
        )
    return 0


def language_tagged(language: str | None, spoken: list[str], session: str | None) -> bool:
    """Whether ``show`` tags a line with its language: the session's lines are in more than
    one language, or this line is not in the language the session asked for."""
    if not language:
        return False
    return len(spoken) > 1 or (session is not None and language != session)


def show_dropped(store: Store, session_id: int, as_json: bool) -> int:
    """``show --dropped``: what the engine discarded or trimmed, when, why, and its text."""
    rows = store.dropped(session_id)
    out = sys.stdout
    if as_json:
        for r in rows:
            out.write(json.dumps({
                "item_id": r.item_id, "channel": r.channel, "start_ms": r.start_ms,
                "end_ms": r.end_ms, "reason": r.reason, "text": r.text,
            }, ensure_ascii=False) + "\n")
        return 0
    out.write(f"# session {session_id}: {len(rows)} dropped\n")
    for r in rows:
        channel = f" {r.channel}" if r.channel else ""
        out.write(
            f"[{format_ms(r.start_ms)}-{format_ms(r.end_ms)}]{channel} {r.reason}: {r.text!r}\n"
        )
    return 0
