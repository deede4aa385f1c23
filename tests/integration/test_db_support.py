"""The PostgreSQL fixture's rule: no server fails the tests under CI, skips them elsewhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: One PostgreSQL test, run in a child pytest.
PROBE = "tests/integration/test_db_migrations.py::test_models_and_migrations_agree"
CHILD_TIMEOUT_S = 120


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def _run_probe(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["CAPTIOND_TEST_PG_URL"] = (
        f"postgresql+psycopg://nobody:x@127.0.0.1:{_closed_port()}/nothing"
    )
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"{PROBE}[postgresql]",
        ],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


def test_unreachable_postgresql_fails_under_ci() -> None:
    """CI=true with no server: the PostgreSQL test errors (exit 1), naming the URL and the fix."""
    result = _run_probe("true")
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout  # pytest.fail in a fixture counts as an error
    assert "PostgreSQL test server unavailable" in result.stdout
    assert "run .ci/services" in result.stdout
    assert "nobody:x@" not in result.stdout  # the password is hidden


def test_unreachable_postgresql_skips_on_a_developer_machine() -> None:
    """Without CI the same test is skipped with the reason shown."""
    result = _run_probe(None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "PostgreSQL test server unavailable" in result.stdout
