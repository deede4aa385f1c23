"""Database fixtures shared by the transcript-database tests: real SQLite and real PostgreSQL.

PostgreSQL is found at :data:`DEFAULT_PG_URL` (what ``.ci/services`` sets up) or at
``$CAPTIOND_TEST_PG_URL``. Each test gets its own schema (dropped afterwards), so tests never
see each other's rows. When the server is unreachable the PostgreSQL tests FAIL under CI
(``CI=true``), and are skipped with the reason on a developer machine.

Import the fixtures into a test module: ``from db_support import any_db_url, pg_url``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from needs import missing
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql+psycopg://captiond:captiond@127.0.0.1:5432/captiond_test"
PG_CONNECT_TIMEOUT_S = 5

_unavailable: str | None = None
_checked = False


def base_pg_url() -> str:
    return os.environ.get("CAPTIOND_TEST_PG_URL") or DEFAULT_PG_URL


def _pg_problem() -> str | None:
    """None when the test server answers, else why not (checked once per run)."""
    global _checked, _unavailable
    if not _checked:
        _checked = True
        url = base_pg_url()
        try:
            engine = create_engine(url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:  # noqa: BLE001 - reported as the skip/fail reason
            _unavailable = (
                f"PostgreSQL test server unavailable at "
                f"{make_url(url).render_as_string(hide_password=True)}: "
                f"{str(exc).splitlines()[0]} (run .ci/services as root, "
                "or set CAPTIOND_TEST_PG_URL)"
            )
    return _unavailable


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema."""
    problem = _pg_problem()
    if problem:
        missing(problem)
    base = base_pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'captiond.db'}"
    return str(request.getfixturevalue("pg_url"))
