"""Two daemons (processes) write one database at once: ids never clash, search sees both."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from captiond.events import Line, LineStatus, LineUpdate, UpdateKind
from captiond.transcript.search import search
from captiond.transcript.store import Store
from captiond.transcript.writer import StoreWriter

LINES_PER_DAEMON = 150
#: How long a daemon process may take, in seconds.
DAEMON_TIMEOUT_S = 120


def _daemon(url: str, room: str, start: Any, results: Any) -> None:
    """One daemon: its own engine, session and writer thread; partials then finals."""
    store = Store.open(url)
    sid = store.begin_session(source=f"room:{room}", engine="test", title=f"Room {room}")
    writer = StoreWriter(store, sid)
    start.wait()
    for n in range(LINES_PER_DAEMON):
        # Both daemons use the same item ids: they are unique per session, not globally.
        base: dict[str, Any] = {
            "item_id": f"loc-{n}",
            "previous_item_id": f"loc-{n - 1}" if n else None,
            "seq": n,
            "audio_start_ms": n * 2_000,
            "audio_end_ms": n * 2_000 + 1_500,
        }
        words = f"{room} line {n} quarterly budget" if n % 10 == 0 else f"{room} line {n}"
        partial = Line(text=words[:5], status=LineStatus.PARTIAL, **base)
        final = Line(text=words, status=LineStatus.FINAL, **base)
        # Waiting for each write makes every line two transactions (insert, then update),
        # interleaved with the other daemon's.
        writer.submit([LineUpdate(UpdateKind.ADDED, partial, sid)])
        writer.flush().result(timeout=DAEMON_TIMEOUT_S)
        writer.submit([LineUpdate(UpdateKind.FINALISED, final, sid)])
        writer.flush().result(timeout=DAEMON_TIMEOUT_S)
    writer.flush().result(timeout=DAEMON_TIMEOUT_S)
    writer.close()
    store.end_session(sid, audio_seconds=LINES_PER_DAEMON * 2.0)
    results.put((room, sid, writer.errors))
    store.close()


def test_two_daemons_write_at_once(any_db_url: str) -> None:
    """Both sessions get every line under distinct ids, and one search finds lines of both."""
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    Store.open(any_db_url).close()  # migrate once, as an installed system would be
    procs = [ctx.Process(target=_daemon, args=(any_db_url, room, start, results)) for room in "AB"]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(DAEMON_TIMEOUT_S)
        assert p.exitcode == 0
    outcome = sorted(results.get(timeout=5) for _ in procs)
    assert [(room, errors) for room, _, errors in outcome] == [("A", 0), ("B", 0)]

    store = Store.open(any_db_url)
    try:
        sids = [sid for _, sid, _ in outcome]
        assert len(set(sids)) == 2
        ids: set[int] = set()
        for sid in sids:
            lines = store.lines(sid)
            assert [ln.item_id for ln in lines] == [f"loc-{n}" for n in range(LINES_PER_DAEMON)]
            ids.update(ln.id for ln in lines)
        assert len(ids) == 2 * LINES_PER_DAEMON
        hits = search(store, '"quarterly budget"', limit=100)
        per_session = {sid: sum(h.session_id == sid for h in hits) for sid in sids}
        assert per_session == {sid: LINES_PER_DAEMON // 10 for sid in sids}
        assert {h.session_title for h in hits} == {"Room A", "Room B"}
    finally:
        store.close()
