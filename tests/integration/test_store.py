"""The store: migrations match the models, lines are upserted, sessions resolve, bad
databases give clear errors and never lose stored lines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from captiond.errors import SessionNotFound, StoreError
from captiond.events import Line, LineStatus, LineUpdate, UpdateKind, Word
from captiond.transcript.store import Store
from captiond.transcript.writer import StoreWriter


def line(item: str, seq: int, text: str, status: LineStatus = LineStatus.FINAL, **kw) -> Line:  # type: ignore[no-untyped-def]
    return Line(item, None, seq, seq * 1000, seq * 1000 + 900, text, status, **kw)


def test_migrations_go_down_and_up(db_url: str) -> None:
    """Downgrading to base removes the tables; upgrading restores them."""
    store = Store.open(db_url)
    store.downgrade("base")
    names = {r[0] for r in store.engine.connect().exec_driver_sql("select name from sqlite_master where type='table'")}
    assert "segments" not in names
    store.upgrade()
    assert store.list_sessions() == []


def test_lines_upsert_and_order(db_url: str) -> None:
    """A line written twice is updated in place; lines come back in time order with words."""
    store = Store.open(db_url)
    sid = store.begin_session(source="file:x", engine="local")
    store.write_lines(sid, [line("b", 1, "second"), line("a", 0, "first draft", LineStatus.PARTIAL)])
    store.write_lines(sid, [line("a", 0, "first", words=(Word("first", 0, 400, 0.9),))])
    rows = store.lines(sid)
    assert [r.text for r in rows] == ["first", "second"]
    assert rows[0].words == [{"text": "first", "start_ms": 0, "end_ms": 400, "probability": 0.9}]
    assert store.resolve_session("last").id == sid
    assert store.resolve_session(str(sid)).source == "file:x"


def test_unknown_session_is_a_clear_error(db_url: str) -> None:
    """`show 99` and `show last` on an empty store say what to do."""
    store = Store.open(db_url)
    with pytest.raises(SessionNotFound, match="no sessions yet"):
        store.resolve_session("last")
    store.begin_session(source="mic", engine="local")
    with pytest.raises(SessionNotFound, match="no session 99"):
        store.resolve_session("99")
    with pytest.raises(SessionNotFound, match="'monday' is not a session"):
        store.resolve_session("monday")


def test_dead_daemons_sessions_become_interrupted(db_url: str) -> None:
    """A session left running by a process that is gone is marked interrupted; ours is not."""
    store = Store.open(db_url)
    ours = store.begin_session(source="mic", engine="local")
    dead = store.begin_session(source="mic", engine="local")
    store.update_session(dead, pid=2**22 + 12345)  # no such process
    assert store.mark_interrupted() == [dead]
    statuses = {r.id: r.status for r, _ in store.list_sessions()}
    assert statuses == {ours: "running", dead: "interrupted"}


def test_writer_makes_finals_durable_and_coalesces_partials(db_url: str) -> None:
    """Partials of one line coalesce; a final is committed and visible to another connection."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local")
    writer = StoreWriter(store, sid)
    for i in range(50):
        writer.submit([LineUpdate(UpdateKind.UPDATED, line("a", 0, f"draft {i}", LineStatus.PARTIAL))])
    writer.submit([LineUpdate(UpdateKind.FINALISED, line("a", 0, "done"))])
    writer.flush().result(timeout=10)
    other = Store(db_url)
    assert [r.text for r in other.lines(sid)] == ["done"]
    assert writer.written < 50
    writer.close()


def test_damaged_database_is_reported_with_the_fix(tmp_path: Path) -> None:
    """A file that is not a SQLite database gives one sentence: what and how to fix."""
    bad = tmp_path / "captiond.db"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="move it aside"):
        Store.open(f"sqlite:///{bad}")


def test_unusable_data_dir_is_reported(tmp_path: Path) -> None:
    """A data directory under a regular file cannot be created: the error names it."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the data directory"):
        Store.open(f"sqlite:///{blocker / 'sub' / 'captiond.db'}")


def test_locked_database_is_retried_not_lost(db_url: str) -> None:
    """While another program holds a write lock, the writer retries; the line lands after."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local")
    path = db_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")
    writer = StoreWriter(store, sid)
    writer.submit([LineUpdate(UpdateKind.FINALISED, line("a", 0, "kept"))])
    import time

    time.sleep(1.0)
    blocker.rollback()
    blocker.close()
    writer.flush().result(timeout=30)
    writer.close()
    assert [r.text for r in Store(db_url).lines(sid)] == ["kept"]
