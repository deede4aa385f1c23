"""Migrations on SQLite and PostgreSQL: up, down, up again; models agree; FTS stays in sync."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from captiond.events import Line, LineStatus
from captiond.transcript.models import Base
from captiond.transcript.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _migration(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "migrations" / "versions" / name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FTS_OBJECTS = _migration("0002_search.py").FTS_OBJECTS


def _line(item: str, text_: str, seq: int = 1, status: LineStatus = LineStatus.FINAL) -> Line:
    return Line(
        item_id=item,
        previous_item_id=None,
        seq=seq,
        audio_start_ms=seq * 1000,
        audio_end_ms=seq * 1000 + 900,
        text=text_,
        status=status,
        engine="test",
    )


def _fts_ids(store: Store, word: str) -> set[int]:
    """Row ids the engine's own full-text index finds for one word."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            sql = "SELECT rowid FROM segments_fts WHERE segments_fts MATCH :q"
            q = f'"{word}"'
        else:
            sql = "SELECT id FROM segments WHERE text_tsv @@ to_tsquery('simple', :q)"
            q = f"'{word}'"
        return {r[0] for r in conn.execute(text(sql), {"q": q})}


def _schema_diff(store: Store) -> list[Any]:
    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return name not in FTS_OBJECTS

    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_name": include_name, "compare_type": True}
        )
        return list(compare_metadata(ctx, Base.metadata))


def test_models_and_migrations_agree(any_db_url: str) -> None:
    """Autogenerate finds no difference between the models and the migrated schema."""
    store = Store.open(any_db_url)
    try:
        assert _schema_diff(store) == []
    finally:
        store.close()


def test_upgrade_downgrade_upgrade(any_db_url: str) -> None:
    """0002 goes down to 0001 (no FTS objects left) and up again, indexing existing lines."""
    store = Store.open(any_db_url)
    try:
        sid = store.begin_session(source="test", engine="test")
        store.write_lines(sid, [_line("a", "quarterly budget review"), _line("b", "lunch", 2)])
        assert len(_fts_ids(store, "budget")) == 1

        store.downgrade("0001")
        insp = inspect(store.engine)
        names = set(insp.get_table_names())
        assert not names & FTS_OBJECTS
        assert "text_tsv" not in {c["name"] for c in insp.get_columns("segments")}
        # Lines written while search did not exist are indexed by the upgrade.
        store.write_lines(sid, [_line("c", "budget again", 3)])

        store.upgrade()
        assert len(_fts_ids(store, "budget")) == 2
        assert _schema_diff(store) == []
        store.downgrade("base")
        assert not set(inspect(store.engine).get_table_names()) - {"alembic_version"}
    finally:
        store.close()


def test_index_follows_insert_update_delete(any_db_url: str) -> None:
    """The index sees new lines, text changes (partial to final) and deletions."""
    store = Store.open(any_db_url)
    try:
        sid = store.begin_session(source="test", engine="test")
        store.write_lines(sid, [_line("a", "the budg", status=LineStatus.PARTIAL)])
        assert _fts_ids(store, "budget") == set()
        store.write_lines(sid, [_line("a", "the budget")])
        (row_id,) = _fts_ids(store, "budget")
        assert _fts_ids(store, "budg") == set()
        # Same text again (the writer re-sends finals): still exactly one index entry.
        store.write_lines(sid, [_line("a", "the budget")])
        assert _fts_ids(store, "budget") == {row_id}
        store.delete_session(sid)
        assert _fts_ids(store, "budget") == set()
        if store.engine.dialect.name == "sqlite":
            with store.engine.connect() as conn:
                # FTS5's own consistency check against the content table.
                conn.execute(
                    text(
                        "INSERT INTO segments_fts(segments_fts, rank) VALUES ('integrity-check', 1)"
                    )
                )
    finally:
        store.close()
