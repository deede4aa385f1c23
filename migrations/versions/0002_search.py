"""full-text search over segments.text

SQLite: an FTS5 table ``segments_fts`` with external content (``segments``), kept in sync
by three triggers, so the text is stored once. PostgreSQL: a generated ``tsvector`` column
``segments.text_tsv`` with a GIN index. Both use the same tokenisation rules as far as the
engines allow: case-folded words split at every non-word character, no stemming, no stop words
(``unicode61``; ``simple`` after replacing non-word characters by spaces), so a query
means the same on both (see ``captiond/transcript/search.py``).

These objects are not in the SQLAlchemy models on purpose (they are engine-specific); the
model/migration comparison test ignores exactly them (``FTS_OBJECTS`` below).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

from captiond.errors import StoreError

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: Names of the full-text objects this migration creates (tables, columns, indexes).
FTS_OBJECTS = frozenset(
    {
        "segments_fts",
        "segments_fts_data",
        "segments_fts_idx",
        "segments_fts_content",
        "segments_fts_docsize",
        "segments_fts_config",
        "text_tsv",
        "ix_segments_text_tsv",
    }
)

#: Text search configuration on PostgreSQL: lowercases, no stemming, no stop words.
PG_TS_CONFIG = "simple"
#: Non-word characters become spaces before PostgreSQL's parser sees the text, so that
#: ``bob@example.com``, ``3.5`` and ``e-mail`` split into words as FTS5's unicode61 splits them
#: (the parser alone keeps e-mail addresses, URLs and decimals whole). Search applies the same.
PG_NON_WORD = "[^[:alnum:]]+"

_SQLITE_UP = (
    # unicode61 folds case for all scripts; diacritics are kept (as in PostgreSQL 'simple').
    """CREATE VIRTUAL TABLE segments_fts USING fts5(
        text, content='segments', content_rowid='id',
        tokenize='unicode61 remove_diacritics 0'
    )""",
    """CREATE TRIGGER segments_fts_insert AFTER INSERT ON segments BEGIN
        INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER segments_fts_delete AFTER DELETE ON segments BEGIN
        INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    # The upsert sets text on every partial update; only a real change touches the index.
    """CREATE TRIGGER segments_fts_update AFTER UPDATE OF text ON segments
    WHEN old.text IS NOT new.text BEGIN
        INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    # Index the lines written before this migration.
    "INSERT INTO segments_fts(segments_fts) VALUES ('rebuild')",
)

_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS segments_fts_update",
    "DROP TRIGGER IF EXISTS segments_fts_delete",
    "DROP TRIGGER IF EXISTS segments_fts_insert",
    "DROP TABLE IF EXISTS segments_fts",
)

_PG_UP = (
    f"""ALTER TABLE segments ADD COLUMN text_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('{PG_TS_CONFIG}',
            regexp_replace(coalesce(text, ''), '{PG_NON_WORD}', ' ', 'g'))) STORED""",
    "CREATE INDEX ix_segments_text_tsv ON segments USING gin (text_tsv)",
)

_PG_DOWN = (
    "DROP INDEX IF EXISTS ix_segments_text_tsv",
    "ALTER TABLE segments DROP COLUMN IF EXISTS text_tsv",
)


def _dialect() -> str:
    return op.get_bind().dialect.name


def upgrade() -> None:
    dialect = _dialect()
    if dialect == "sqlite":
        _require_fts5()
        statements = _SQLITE_UP
    elif dialect == "postgresql":
        statements = _PG_UP
    else:
        raise StoreError(
            f"full-text search is not available on {dialect} (use sqlite or postgresql)"
        )
    for sql in statements:
        op.execute(sql)


def downgrade() -> None:
    dialect = _dialect()
    statements = (
        _SQLITE_DOWN if dialect == "sqlite" else _PG_DOWN if dialect == "postgresql" else ()
    )
    for sql in statements:
        op.execute(sql)


def _require_fts5() -> None:
    rows = op.get_bind().exec_driver_sql("PRAGMA compile_options").fetchall()
    if not any(str(r[0]).upper() == "ENABLE_FTS5" for r in rows):
        raise StoreError(
            "this SQLite library was built without FTS5, which captiond's search needs "
            "(use a Python whose sqlite3 has FTS5, as Debian's and python.org's do)"
        )
