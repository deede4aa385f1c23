"""No two captiond modules import each other at load (an import-cycle check over every module),
and nothing but the commands imports the daemon."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "captiond"


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def _load_time_imports(module: str) -> set[str]:
    """captiond modules imported when ``module`` loads: module-level imports, not those inside
    functions or under ``if TYPE_CHECKING:``."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("captiond"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                if base.startswith("captiond"):
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in node.names)

    visit(tree.body)
    known = set(_modules())
    return {m for m in found if m in known and m != module}


def test_no_import_cycle_at_load_time() -> None:
    """The graph of module-level captiond imports has no cycle (Daemon is reached by nothing
    but the commands that run it)."""
    graph = {m: _load_time_imports(m) for m in _modules()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                walk(n)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            walk(m)



def test_nothing_but_the_commands_reaches_into_the_daemon() -> None:
    """No module imports captiond.daemon -- not for typing, not inside a function -- but the
    commands that run it: services get a small context, not the Daemon."""
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if "captiond.daemon" in names:
                importers.add(str(path.relative_to(ROOT)))
    assert importers <= {"captiond/commands/run.py", "captiond/commands/service.py"}, importers
