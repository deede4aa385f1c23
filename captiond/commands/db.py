"""Commands that search and tidy the transcript database: search, rename, delete, prune.

``sessions`` and ``show`` live in :mod:`captiond.commands.browse`. Destructive commands ask
for confirmation on a terminal and refuse without ``--yes`` when nobody can answer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any, TextIO

from captiond.audio import keep
from captiond.commands.browse import format_ms, open_store
from captiond.config import Config
from captiond.errors import CaptiondError
from captiond.transcript.models import SessionRow
from captiond.transcript.search import DEFAULT_LIMIT, MAX_LIMIT, SearchHit, mark, search
from captiond.transcript.store import Store

#: Longest session title (the column's size).
TITLE_MAX_CHARS = 200
#: Units ``prune --older-than`` accepts, in seconds.
AGE_UNITS_S = {"m": 60, "h": 3_600, "d": 86_400, "w": 604_800}

BOLD, RESET = "\x1b[1m", "\x1b[0m"


def parse_age(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``2w``, ``30m`` as a duration (``--older-than``)."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an age (write a positive number and a unit: 90d, 12h, 2w, 30m)"
        )
    return dt.timedelta(seconds=int(m.group(1)) * AGE_UNITS_S[m.group(2)])


def parse_when(text: str) -> dt.date | dt.datetime:
    """``2026-11-01`` or ``2026-11-01T09:30`` (local time unless it has an offset)."""
    try:
        if "T" in text or " " in text.strip():
            return dt.datetime.fromisoformat(text.strip())
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a date (write YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from None


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number from 1 to {MAX_LIMIT}")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "search",
        parents=[common],
        help="find lines across all sessions",
        description='Full-text search. Syntax: words, "exact phrase", a OR b, -excluded, prefix*.',
    )
    p.add_argument("query", help='what to find, e.g. "budget review" or \'"weekly sync" -draft\'')
    p.add_argument("--session", help="only this session (id or 'last')")
    p.add_argument("--since", type=parse_when, help="sessions started on/after (YYYY-MM-DD)")
    p.add_argument("--until", type=parse_when, help="sessions started on/before (YYYY-MM-DD)")
    p.add_argument("--lang", help="only lines in this language (e.g. es)")
    p.add_argument("--speaker", help="only lines of this speaker")
    p.add_argument("-n", "--limit", type=_limit, default=DEFAULT_LIMIT, help="most hits")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("rename", parents=[common], help="set a session's title")
    p.add_argument("session", help="session id or 'last'")
    p.add_argument("title", help="the new title ('' clears it)")
    p.set_defaults(func=cmd_rename)

    p = sub.add_parser("delete", parents=[common], help="delete a session and its lines")
    p.add_argument("session", help="session id or 'last'")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("prune", parents=[common], help="delete sessions older than an age")
    p.add_argument(
        "--older-than",
        type=parse_age,
        required=True,
        metavar="AGE",
        help="age of the sessions to delete: 90d, 12h, 2w, 30m",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_prune)


# -- search ----------------------------------------------------------------------------------


def show_hint(hit: SearchHit) -> str:
    """The command that prints the hit in context."""
    track = f" --track {hit.track}" if hit.track != "original" else ""
    return f"captiond show {hit.session_id} --at {format_ms(hit.start_ms)}{track}"


def hit_json(hit: SearchHit) -> dict[str, Any]:
    out = hit.to_json()
    out["at"] = format_ms(hit.start_ms)
    out["show"] = show_hint(hit)
    return out


def cmd_search(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg)
    try:
        hits = search(
            store,
            args.query,
            session=args.session,
            since=args.since,
            until=args.until,
            lang=args.lang,
            speaker=args.speaker,
            limit=args.limit,
        )
    finally:
        store.close()
    out = sys.stdout
    if args.json:
        json.dump(
            {"query": args.query, "hits": [hit_json(h) for h in hits]},
            out,
            ensure_ascii=False,
            indent=2,
        )
        out.write("\n")
        return 0 if hits else 1
    if not hits:
        out.write(f"no lines match {args.query!r}\n")
        return 1
    before, after = (BOLD, RESET) if out.isatty() else ("**", "**")
    plural = "s" if len(hits) != 1 else ""
    out.write(f"{len(hits)} hit{plural} for {args.query!r}, best first\n")
    for hit in hits:
        started = hit.session_started_at.astimezone().strftime("%Y-%m-%d %H:%M")
        who = f" · {hit.speaker}" if hit.speaker else ""
        track = f" · {hit.track}" if hit.track != "original" else ""
        out.write(
            f"\n#{hit.session_id} {hit.session_title} · {started} · "
            f"{format_ms(hit.start_ms)}{who}{track}\n"
        )
        out.write(f"    {mark(hit.snippet, hit.highlights, before, after)}\n")
        out.write(f"    → {show_hint(hit)}\n")
    return 0


# -- rename, delete, prune -------------------------------------------------------------------


def confirm(question: str, *, yes: bool, stdin: TextIO | None = None) -> bool:
    """True when the user agrees (or ``--yes``); refuses when no one can be asked."""
    if yes:
        return True
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        raise CaptiondError(
            f"{question}: not confirmed (run with --yes to confirm without a prompt)"
        )
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _describe(row: SessionRow) -> str:
    started = row.started_at
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.UTC)
    when = started.astimezone().strftime("%Y-%m-%d %H:%M")
    return f"session {row.id} ({row.title or row.source}, {when})"


def _refuse_running(store: Store, row: SessionRow) -> None:
    if row.status == "running":
        store.mark_interrupted()  # a daemon that died leaves 'running' behind
        row = store.resolve_session(row.id)
    if row.status == "running":
        raise CaptiondError(
            f"{_describe(row)} is still being recorded by pid {row.pid} on {row.host} "
            "(stop that daemon first)"
        )


def cmd_rename(args: argparse.Namespace, cfg: Config) -> int:
    title = args.title.strip()
    if len(title) > TITLE_MAX_CHARS:
        raise CaptiondError(
            f"the title has {len(title)} characters; at most {TITLE_MAX_CHARS} (shorten it)"
        )
    store = open_store(cfg)
    try:
        row = store.resolve_session(args.session)
        store.update_session(row.id, title=title or None)
    finally:
        store.close()
    print(f"session {row.id}: {title!r}" if title else f"session {row.id}: title cleared")
    return 0


def cmd_delete(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg)
    try:
        row = store.resolve_session(args.session)
        _refuse_running(store, row)
        if not confirm(f"delete {_describe(row)} and all its lines", yes=args.yes):
            print("nothing deleted")
            return 1
        store.delete_session(row.id)
        keep.remove(keep.audio_dir(cfg), row.id)
    finally:
        store.close()
    print(f"deleted session {row.id}")
    return 0


def sessions_older_than(store: Store, age: dt.timedelta, now: dt.datetime) -> list[SessionRow]:
    """Sessions that started before ``now - age`` and are not being recorded, oldest first."""
    return store.sessions_started_before((now - age).astimezone(dt.UTC))


def cmd_prune(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg)
    try:
        store.mark_interrupted()
        rows = sessions_older_than(store, args.older_than, dt.datetime.now(dt.UTC))
        if not rows:
            print("no sessions to prune")
            return 0
        first, last = rows[0], rows[-1]
        span = _describe(first) if len(rows) == 1 else f"{_describe(first)} to {_describe(last)}"
        plural = "s" if len(rows) != 1 else ""
        if not confirm(f"delete {len(rows)} session{plural}: {span}", yes=args.yes):
            print("nothing deleted")
            return 1
        for row in rows:
            store.delete_session(row.id)
            keep.remove(keep.audio_dir(cfg), row.id)
    finally:
        store.close()
    print(f"deleted {len(rows)} session{plural}")
    return 0
