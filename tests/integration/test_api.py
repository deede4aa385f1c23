"""The JSON API: the handler on both databases, and mounted on the real overlay server."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from captiond.api import api_handler, handle_api
from captiond.events import Line, LineStatus
from captiond.transcript.store import Store


def _line(item: str, text: str, seq: int, status: LineStatus = LineStatus.FINAL) -> Line:
    return Line(
        item_id=item,
        previous_item_id=None,
        seq=seq,
        audio_start_ms=seq * 5_000,
        audio_end_ms=seq * 5_000 + 4_000,
        text=text,
        status=status,
        speaker="Ann",
    )


@pytest.fixture
def store(any_db_url: str) -> Any:
    s = Store.open(any_db_url)
    yield s
    s.close()


def test_sessions_and_one_session(store: Store) -> None:
    """/api/sessions lists newest first with line counts; /api/sessions/{id} adds gaps."""
    a = store.begin_session(source="mic", engine="local", title="Planning")
    store.write_lines(a, [_line("i1", "hello", 1), _line("i2", "budget", 2)])
    store.add_gap(a, channel="", start_ms=100, end_ms=900, reason="device lost")
    store.end_session(a)
    b = store.begin_session(source="file:x.ogg", engine="local")
    code, body = handle_api(store, "/api/sessions", "")
    assert code == 200
    assert [(s["id"], s["lines"]) for s in body["sessions"]] == [(b, 0), (a, 2)]
    assert body["sessions"][1]["title"] == "Planning"
    assert body["sessions"][1]["started_at"].endswith("+00:00")
    code, body = handle_api(store, "/api/sessions", "limit=1")
    assert [s["id"] for s in body["sessions"]] == [b]
    code, body = handle_api(store, f"/api/sessions/{a}/", "")
    assert (
        code == 200 and body["session"]["lines"] == 2 and body["session"]["status"] == "completed"
    )
    assert body["gaps"] == [
        {"channel": "", "start_ms": 100, "end_ms": 900, "reason": "device lost"}
    ]
    assert handle_api(store, "/api/sessions/last", "")[1]["session"]["id"] == b
    code, body = handle_api(store, "/api/sessions/424242", "")
    assert code == 404 and "no session 424242" in body["error"]


def test_lines_tailing_waits_for_partials(store: Store) -> None:
    """The cursor stays before a partial line, so the client gets it once it is final."""
    sid = store.begin_session(source="mic", engine="local")
    store.write_lines(sid, [_line("p", "still talk", 1, LineStatus.PARTIAL)])
    store.write_lines(sid, [_line("f", "done line", 2)])
    code, body = handle_api(store, f"/api/sessions/{sid}/lines", {"since": "0"})
    assert code == 200
    assert [ln["item_id"] for ln in body["lines"]] == ["f"]
    cursor = body["next_since"]
    store.write_lines(sid, [_line("p", "still talking", 1)])
    body = handle_api(store, f"/api/sessions/{sid}/lines", f"since={cursor}")[1]
    assert [(ln["item_id"], ln["text"]) for ln in body["lines"]] == [
        ("p", "still talking"),
        ("f", "done line"),
    ]
    cursor = body["next_since"]
    store.write_lines(sid, [_line("g", "new one", 3)])
    body = handle_api(store, f"/api/sessions/{sid}/lines", f"since={cursor}")[1]
    assert [ln["item_id"] for ln in body["lines"]] == ["g"]
    assert body["lines"][0]["at"] == "00:00:15"
    cursor = body["next_since"]
    assert handle_api(store, f"/api/sessions/{sid}/lines", f"since={cursor}")[1]["lines"] == []
    body = handle_api(store, f"/api/sessions/{sid}/lines", "since=0&limit=2")[1]
    assert len(body["lines"]) == 2


def test_search_route(store: Store) -> None:
    """/api/search returns ranked hits with snippets; bad syntax is a 400 with the fix."""
    sid = store.begin_session(source="mic", engine="local", title="Q3")
    store.write_lines(sid, [_line("a", "the budget review", 1), _line("b", "lunch", 2)])
    code, body = handle_api(store, "/api/search", "q=%22budget+review%22")
    assert code == 200 and body["query"] == '"budget review"'
    (hit,) = body["hits"]
    assert (hit["item_id"], hit["session"], hit["session_title"], hit["at"]) == (
        "a",
        sid,
        "Q3",
        "00:00:05",
    )
    assert [hit["snippet"][a:b] for a, b in hit["highlights"]] == ["budget", "review"]
    code, body = handle_api(store, "/api/search", "q=%22budget")
    assert code == 400 and "closing quote" in body["error"]
    code, body = handle_api(store, "/api/search", "q=budget&since=yesterday")
    assert code == 400 and "since must be a date" in body["error"]
    code, body = handle_api(store, "/api/search", "q=%27%3B+DROP+TABLE+segments%3B+--")
    assert code == 200 and body["hits"] == []
    assert handle_api(store, "/api/search", "q=budget")[1]["hits"][0]["item_id"] == "a"


def test_status_routes_and_errors(store: Store) -> None:
    """/api/status comes from the daemon's callable; unknown routes and bad limits say so."""
    assert handle_api(store, "/api/status", "")[0] == 503
    code, body = handle_api(
        store, "/api/status", "", status=lambda: {"engine": "local", "lag_ms": 120}
    )
    assert (code, body) == (200, {"engine": "local", "lag_ms": 120})
    code, body = handle_api(store, "/api/nothing", "")
    assert code == 404 and "/api/sessions" in body["error"]
    code, body = handle_api(store, "/api/sessions", "limit=0")
    assert code == 400 and "limit must be between 1 and" in body["error"]
    code, body = handle_api(store, "/api/sessions/x/lines", "")
    assert code == 404 and "'x' is not a session" in body["error"]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        ctype = exc.headers["Content-Type"] or ""
        return exc.code, ctype, json.loads(body) if "json" in ctype else body


def test_served_by_the_overlay_server(db_url: str) -> None:
    """Mounted on the daemon's overlay server: JSON over real HTTP, token enforced, status live."""
    from overlay_helpers import overlay_config

    from captiond.feed import Feed
    from captiond.overlay.server import OverlayServer

    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local", title="Served")
    store.write_lines(sid, [_line("a", "budget talk", 1)])
    token = "a-token-that-is-long-enough"

    async def main() -> list[tuple[int, str, Any]]:
        server = OverlayServer(
            overlay_config(token=token),
            Feed(),
            dict,
            {"/api/": api_handler(store, status=lambda: {"ok": True})},
        )
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            auth = {"Authorization": f"Bearer {token}"}
            return [
                await asyncio.to_thread(_get, f"{base}/api/sessions", auth),
                await asyncio.to_thread(_get, f"{base}/api/search?q=budget&token={token}"),
                await asyncio.to_thread(_get, f"{base}/api/status", auth),
                await asyncio.to_thread(_get, f"{base}/api/sessions"),
                await asyncio.to_thread(_get, f"{base}/api/sessions?token=wrong"),
                await asyncio.to_thread(_get, f"{base}/api/nowhere", auth),
            ]
        finally:
            await server.close()

    try:
        sessions, found, status, anonymous, wrong, unknown = asyncio.run(main())
    finally:
        store.close()
    assert sessions[0] == 200 and sessions[1].startswith("application/json")
    assert sessions[2]["sessions"][0]["title"] == "Served"
    assert found[0] == 200 and found[2]["hits"][0]["text"] == "budget talk"
    assert status[0] == 200 and status[2] == {"ok": True}
    assert anonymous[0] == 401 and wrong[0] == 403
    assert unknown[0] == 404 and "no such API route" in unknown[2]["error"]
