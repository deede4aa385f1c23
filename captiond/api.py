"""The read-only JSON API over the transcript database, served next to the overlay.

:func:`handle_api` is a plain function: ``(store, path, query) -> (status, body)`` where
``body`` is a JSON-ready dict. It blocks on the database, so an asyncio server runs it in a
worker thread; :func:`api_handler` does exactly that as a route the overlay server mounts on
``/api/`` (behind the overlay's token and Origin rules).

Routes (GET; every response is a JSON object; errors are ``{"error": "…"}``)::

    /api/sessions?limit=50                 newest first: {"sessions": [session…]}
    /api/sessions/{id}                     {"session": session, "gaps": [gap…]}  (id or "last")
    /api/sessions/{id}/lines?since=0&limit=500&track=original
                                           {"lines": [line…], "next_since": cursor}
    /api/sessions/{id}/minutes             {"minutes": captiond-minutes JSON, "stored": bool}
                                           (the stored minutes, else offline ones made now)
    /api/search?q=…&session=&since=&until=&lang=&speaker=&limit=20
                                           {"query": q, "hits": [hit…]}
    /api/status                            the daemon's status snapshot

Tailing: ``lines`` returns final lines after the cursor ``since`` (a line id, 0 for the
start) in the order they were written. Poll again with ``since=next_since``. While a line of
a running session is still partial the cursor stays before it, so it is delivered once
final: lines may come again, so key them by ``item_id`` (and ``track``/``channel``).

Status codes: 200; 400 bad parameter or search syntax (the message says the fix); 401/403 missing
or wrong token (the overlay server's rule); 404 unknown route or session; 503 database or
status unavailable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.exc import SQLAlchemyError

from captiond.errors import CaptiondError, InvalidSessionRef, SessionNotFound, StoreError
from captiond.timefmt import clock as format_ms
from captiond.transcript.models import GapRow, SegmentRow, SessionRow
from captiond.transcript.search import MAX_LIMIT as SEARCH_MAX_LIMIT
from captiond.transcript.search import SearchSyntaxError, search
from captiond.transcript.store import Store, session_duration

log = logging.getLogger("captiond.api")

#: Sessions listed at most per request, and by default.
SESSIONS_MAX = 500
SESSIONS_DEFAULT = 50
#: Lines returned at most per request, and by default.
LINES_MAX = 2_000
LINES_DEFAULT = 500
#: Longest query string the API reads, in characters (a search is capped further).
QUERY_STRING_MAX_CHARS = 16_384

ApiResponse = tuple[int, dict[str, Any]]
StatusSource = Callable[[], Mapping[str, Any]]

_SESSION = re.compile(r"/api/sessions/([^/]+)")
_LINES = re.compile(r"/api/sessions/([^/]+)/lines")
_MINUTES = re.compile(r"/api/sessions/([^/]+)/minutes")


class BadRequest(CaptiondError):
    """A parameter the API cannot use; the message names it and the fix."""


# -- JSON shapes -----------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps UTC without an offset
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def session_json(row: SessionRow, lines: int | None = None) -> dict[str, Any]:
    duration = session_duration(row)
    out = {
        "id": row.id,
        "title": row.title,
        "started_at": _iso(row.started_at),
        "ended_at": _iso(row.ended_at),
        "duration_s": duration.total_seconds() if duration else None,
        "status": row.status,
        "source": row.source,
        "engine": row.engine,
        "language": row.language,
        "host": row.host,
        "audio_seconds": row.audio_seconds,
        "cost_usd": row.cost_usd,
    }
    if lines is not None:
        out["lines"] = lines
    return out


def line_json(row: SegmentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "item_id": row.item_id,
        "seq": row.seq,
        "track": row.track,
        "channel": row.channel,
        "speaker": row.speaker,
        "language": row.language,
        "status": row.status,
        "text": row.text,
        "start_ms": row.audio_start_ms,
        "end_ms": row.audio_end_ms,
        "at": format_ms(row.audio_start_ms),
        "engine": row.engine,
    }


def gap_json(row: GapRow) -> dict[str, Any]:
    return {
        "channel": row.channel,
        "start_ms": row.start_ms,
        "end_ms": row.end_ms,
        "reason": row.reason,
    }


# -- parameters ------------------------------------------------------------------------------


def _params(query: str | Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    if isinstance(query, str):
        if len(query) > QUERY_STRING_MAX_CHARS:
            raise BadRequest(f"the query string is longer than {QUERY_STRING_MAX_CHARS} characters")
        parsed = parse_qs(query, keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}
    return {k: (v if isinstance(v, str) else (v[-1] if v else "")) for k, v in query.items()}


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _when(params: Mapping[str, str], name: str) -> dt.date | dt.datetime | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return dt.datetime.fromisoformat(raw) if "T" in raw else dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"{name} must be a date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM), got {raw!r}"
        ) from None


# -- routes ----------------------------------------------------------------------------------


def _sessions(store: Store, params: Mapping[str, str]) -> ApiResponse:
    limit = _int(params, "limit", SESSIONS_DEFAULT, 1, SESSIONS_MAX)
    rows = store.list_sessions(limit)
    return 200, {"sessions": [session_json(r, n) for r, n in rows]}


def _session(store: Store, ref: str) -> ApiResponse:
    row = store.resolve_session(ref)
    return 200, {
        "session": session_json(row, store.final_line_count(row.id)),
        "gaps": [gap_json(g) for g in store.gaps(row.id)],
    }


def _lines(store: Store, ref: str, params: Mapping[str, str]) -> ApiResponse:
    row = store.resolve_session(ref)
    since = _int(params, "since", 0, 0, 2**63 - 1)
    limit = _int(params, "limit", LINES_DEFAULT, 1, LINES_MAX)
    track = params.get("track") or "original"
    rows, held = store.final_lines_after(row.id, track, since, limit)
    if row.status != "running":
        held = None
    # A partial line of a running session will become final under its present id: keep the
    # cursor before it so the client receives it then.
    next_since = rows[-1].id if rows else since
    if held is not None:
        next_since = min(next_since, held - 1)
    return 200, {
        "session": row.id,
        "status": row.status,
        "lines": [line_json(r) for r in rows],
        "next_since": max(next_since, since),
    }


def _minutes(store: Store, ref: str) -> ApiResponse:
    from captiond.exports import digest, produce
    from captiond.exports.document import load_session

    doc = load_session(store, ref, lang="original")
    lines = digest.text_lines(doc.original)
    minutes = produce.stored(store, doc)
    stored = minutes is not None
    if minutes is None:
        minutes = digest.offline(lines, doc.findings(), duration_ms=doc.duration_ms)
    minutes, _ = digest.check_cites(minutes, lines)
    return 200, {"session": doc.id, "stored": stored, "minutes": digest.to_json(minutes, lines)}


def _search(store: Store, params: Mapping[str, str]) -> ApiResponse:
    q = params.get("q", "")
    hits = search(
        store,
        q,
        session=params.get("session") or None,
        since=_when(params, "since"),
        until=_when(params, "until"),
        lang=params.get("lang") or None,
        speaker=params.get("speaker") or None,
        limit=_int(params, "limit", 20, 1, SEARCH_MAX_LIMIT),
    )
    out = []
    for hit in hits:
        item = hit.to_json()
        item["at"] = format_ms(hit.start_ms)
        out.append(item)
    return 200, {"query": q, "hits": out}


def handle_api(
    store: Store,
    path: str,
    query: str | Mapping[str, str | Sequence[str]] = "",
    *,
    status: StatusSource | None = None,
) -> ApiResponse:
    """Answer one GET request of the API: ``(HTTP status, JSON-ready body)``. Never raises.

    ``path`` is the URL path (``/api/sessions/3/lines``; a ``?query`` on it is ignored),
    ``query`` the raw query string or a mapping of parameters. ``status`` supplies
    ``/api/status``; it is called on the calling thread.
    """
    path = path.split("?", 1)[0].rstrip("/") or "/"
    try:
        params = _params(query)
        if path == "/api/sessions":
            return _sessions(store, params)
        if m := _LINES.fullmatch(path):
            return _lines(store, m.group(1), params)
        if m := _MINUTES.fullmatch(path):
            return _minutes(store, m.group(1))
        if m := _SESSION.fullmatch(path):
            return _session(store, m.group(1))
        if path == "/api/search":
            return _search(store, params)
        if path == "/api/status":
            if status is None:
                return 503, {"error": "status is served by the running daemon only"}
            return 200, dict(status())
        return 404, {
            "error": f"no such API route: {path} (see /api/sessions, /api/search?q=, /api/status)"
        }
    except (BadRequest, SearchSyntaxError, InvalidSessionRef) as exc:
        return 400, {"error": str(exc)}
    except SessionNotFound as exc:
        return 404, {"error": str(exc)}
    except StoreError as exc:
        log.warning("api.store_error path=%s error=%r", path, str(exc))
        return 503, {"error": str(exc)}
    except SQLAlchemyError as exc:
        message = store.describe_error(exc)  # the URL without its password
        log.warning("api.store_error path=%s error=%r", path, message)
        return 503, {"error": message}
    except Exception:
        log.exception("api.failed path=%s", path)
        return 500, {"error": "internal error (see the daemon's log)"}


def api_handler(
    store: Store, status: StatusSource | None = None
) -> Callable[[str, Mapping[str, str]], Awaitable[ApiResponse]]:
    """The API as an overlay-server route: ``async (path, query) -> (status, body)``.

    Database work runs in a worker thread; ``status`` is called on the event loop. The
    overlay server applies its token and Origin rules before calling it.
    """

    async def handler(path: str, query: Mapping[str, str]) -> ApiResponse:
        if path.split("?", 1)[0].rstrip("/") == "/api/status":
            return handle_api(store, path, query, status=status)
        return await asyncio.to_thread(handle_api, store, path, query)

    return handler


__all__ = [
    "ApiResponse",
    "handle_api",
    "line_json",
    "session_json",
]
