"""Commands that read the transcript database: ``sessions`` and ``show``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from captiond.config import Config
from captiond.transcript.store import Store, session_duration


def format_ms(ms: int, *, millis: bool = False) -> str:
    """``01:02:03`` (or ``01:02:03.456``) for a stream offset in milliseconds."""
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis_part = divmod(rest, 1000)
    out = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{out}.{millis_part:03d}" if millis else out


def parse_clock(text: str) -> int:
    """Milliseconds from ``HH:MM:SS``, ``MM:SS`` or seconds (``--at``)."""
    parts = text.strip().split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a time (write HH:MM:SS, MM:SS or seconds)"
        ) from None
    seconds = 0.0
    for n in numbers:
        seconds = seconds * 60 + n
    return int(seconds * 1000)


def open_store(cfg: Config) -> Store:
    return Store.open(cfg.database_url())


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
                "lines": n,
            }
            for r, n in rows
        ]
        print(json.dumps(out, indent=2))
        return 0
    if not rows:
        print("no sessions yet (start one with `captiond run` or `captiond transcribe FILE`)")
        return 0
    print(f"{'id':>5}  {'started':19}  {'length':>8}  {'status':11}  {'lines':>5}  title/source")
    for r, n in rows:
        duration = session_duration(r)
        length = format_ms(int(duration.total_seconds() * 1000)) if duration else "-"
        started = r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        label = r.title or r.source
        print(f"{r.id:>5}  {started}  {length:>8}  {r.status:11}  {n:>5}  {label}")
    return 0


def cmd_show(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg)
    session = store.resolve_session(args.session)
    if args.dropped:
        return show_dropped(store, session.id, args.json)
    lines = store.lines(session.id, track=args.track)
    if args.at is not None:
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
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        return 0
    title = session.title or session.source
    out.write(f"# session {session.id}: {title} ({session.status}, {session.engine})\n")
    for ln in lines:
        if not ln.text:
            continue
        who = f"{ln.speaker}: " if ln.speaker else ""
        out.write(f"[{format_ms(ln.audio_start_ms)}] {who}{ln.text}\n")
    for gap in store.gaps(session.id):
        out.write(
            f"# gap {format_ms(gap.start_ms)}-{format_ms(gap.end_ms)} "
            f"{gap.channel or ''} {gap.reason}\n"
        )
    return 0


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
