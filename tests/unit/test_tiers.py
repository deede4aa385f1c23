"""Every test file sits in one tier folder, under a name no other tier uses; unit tests stay
free of models, databases, subprocesses and recorded speech."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

from conftest import TIERS

TESTS = Path(__file__).resolve().parents[1]
#: What a unit test may not reach for (the tier's rule: docs/development-tests.md).
UNIT_FORBIDDEN_IMPORTS = {"subprocess", "sqlalchemy", "faster_whisper", "sounddevice"}
UNIT_FORBIDDEN_FIXTURES = {"whisper_base", "fleurs_en", "db_url", "any_db_url", "pg_url", "pulse"}


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "data" not in p.relative_to(TESTS).parts)


def test_every_test_file_is_in_a_tier_folder() -> None:
    """A test file at the top of tests/ (or in another folder) belongs to no tier: place it."""
    stray = [str(p.relative_to(TESTS)) for p in _test_files() if p.parent.name not in TIERS
             or p.parent.parent != TESTS]
    assert not stray, f"move into tests/unit, tests/integration or tests/system: {stray}"


def test_test_file_names_are_unique_across_tiers() -> None:
    """Test modules import by their file name (no packages), so two tiers cannot share one."""
    names = collections.Counter(p.name for p in _test_files())
    assert not [n for n, count in names.items() if count > 1]


def test_unit_tests_reach_for_no_model_database_subprocess_or_speech() -> None:
    """Unit tests import no subprocess, database or model library and ask for no fixture that
    brings a model, a database, recorded speech or a sound server."""
    problems = []
    for path in _test_files():
        if path.parent.name != "unit":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module.split(".")[0]}
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = {a.arg for a in node.args.args} & UNIT_FORBIDDEN_FIXTURES
            else:
                continue
            bad = names & (UNIT_FORBIDDEN_IMPORTS | UNIT_FORBIDDEN_FIXTURES)
            if bad:
                problems.append(f"{path.name}:{node.lineno}: {', '.join(sorted(bad))}")
    assert not problems, "move these tests to tests/integration: " + "; ".join(problems)
