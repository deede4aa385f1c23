"""Every benchmark script answers ``--help`` from a clean checkout (no corpus beside it, no
PYTHONPATH, started from elsewhere), takes the kit's ``--json``, and imports the kit rather
than test modules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "kit.py")
#: Longest one ``--help`` may take on a loaded machine (imports numpy, captiond, ...).
HELP_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (tracked and new, as git lists them) copied to a temporary
    folder with nothing beside it: no corpus outside the checkout, no virtualenv, no caches."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to list the repository's files")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, check=True).stdout.decode().split("\0")
    target = tmp_path_factory.mktemp("checkout") / "captiond"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_every_benchmark_answers_help_from_a_clean_checkout(checkout: Path,
                                                            tmp_path: Path) -> None:
    """`python benchmarks/X.py --help` exits 0 for every benchmark, from a copy of the
    checkout with no corpus beside it, and lists the kit's --json option."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["HF_HUB_OFFLINE"] = "1"
    procs = {
        path.name: subprocess.Popen(
            [sys.executable, str(checkout / "benchmarks" / path.name), "--help"], cwd=tmp_path,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for path in BENCHMARKS
    }
    failed = []
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=HELP_TIMEOUT_S)
        if proc.returncode != 0 or "--json" not in out:
            failed.append(f"{name}: exit {proc.returncode}\n{out[-500:]}{err[-1500:]}")
    assert len(procs) >= 18
    assert not failed, "\n\n".join(failed)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmarks_import_the_kit_not_tests(path: Path) -> None:
    """A benchmark imports the kit and no test module (conftest, test_*, another benchmark)
    and puts no tests/ folder on sys.path."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    others = {p.stem for p in BENCHMARKS}
    assert "kit" in imported
    assert not {m for m in imported if m == "conftest" or m.startswith("test_")}, imported
    assert not imported & others, imported & others
    assert '"tests"' not in path.read_text(encoding="utf-8")
