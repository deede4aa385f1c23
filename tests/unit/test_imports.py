"""Imports point down: no cycle between captiond modules (module-level, deferred inside
functions and under ``TYPE_CHECKING`` alike), engines never reach up into the pipeline, the
daemon or the commands, nothing but the commands imports the daemon, and a module tagged
``[pure`` in its docstring's first line touches no I/O, threads or clocks."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "captiond"

#: Modules (and their submodules) a pure module may not import, directly or through the
#: captiond modules it loads: the event loop, sockets, threads, clocks, databases, devices,
#: processes.
IMPURE = ("asyncio", "socket", "ssl", "selectors", "threading", "_thread", "concurrent",
          "multiprocessing", "time", "sqlalchemy", "sqlite3", "websockets", "sounddevice",
          "subprocess", "av")
#: Calls that read the wall clock, by the name they are called through (``datetime.now()``,
#: ``dt.datetime.now()``, ``date.today()``).
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})
#: What an engine must never import: the layers that use engines.
ABOVE_ENGINES = ("captiond.pipeline", "captiond.daemon", "captiond.commands", "captiond.cli")


def _path(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def _modules() -> tuple[str, ...]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return tuple(out)


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_path(module).read_text(encoding="utf-8"))


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(module: str, *, load_time_only: bool = False,
             tree: ast.Module | None = None) -> list[tuple[str, int, str]]:
    """Every import in ``module`` as (imported name, line, where): ``where`` is "load",
    "deferred" (inside a function) or "typing" (under ``if TYPE_CHECKING:``). Relative imports
    are resolved; ``from a import b`` yields ``a`` and ``a.b`` (b may be a submodule).
    ``load_time_only``: only what runs when the module loads."""
    is_package = tree is None and _path(module).name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            if not load_time_only:
                for child in node.body:
                    visit(child, "typing")
            for child in node.orelse:
                visit(child, where)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if load_time_only:
                return
            where = "deferred" if where == "load" else where
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, where) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, node.lineno, where))
            found.extend((f"{base}.{a.name}", node.lineno, where) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree or _tree(module), "load")
    return found


def _captiond_edges(module: str, *, load_time_only: bool = False) -> dict[str, tuple[int, str]]:
    """captiond modules ``module`` imports -> (line, where). Importing ``a.b.c`` also runs the
    packages ``a`` and ``a.b``, so they count too."""
    known = set(_modules())
    edges: dict[str, tuple[int, str]] = {}
    for name, line, where in _imports(module, load_time_only=load_time_only):
        parts = name.split(".")
        for n in range(1, len(parts) + 1):
            target = ".".join(parts[:n])
            if target in known and target != module and not module.startswith(target + "."):
                edges.setdefault(target, (line, where))
    return edges


def _find_cycle(graph: dict[str, dict[str, tuple[int, str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = walk(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = walk(m)
            if found:
                return found
    return None


def _describe(cycle: list[str], graph: dict[str, dict[str, tuple[int, str]]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        line, where = graph[a][b]
        steps.append(f"{a} -> {b} ({_path(a).relative_to(ROOT)}:{line}, {where})")
    return "import cycle:\n  " + "\n  ".join(steps)


def _pure_modules() -> list[str]:
    out = []
    for m in _modules():
        doc = ast.get_docstring(_tree(m)) or ""
        if "[pure" in doc.partition("\n")[0]:
            out.append(m)
    return out


def _impure(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in IMPURE)


def _clock_calls(module: str) -> list[int]:
    """Lines calling ``X.now()``, ``X.utcnow()`` or ``X.today()`` where X names a datetime or
    date (``datetime.now()``, ``dt.datetime.now()``, ``date.today()``)."""
    out = []
    for node in ast.walk(_tree(module)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in CLOCK_CALLS
                and re.search(r"\b(datetime|date|dt)\b", ast.unparse(node.func.value))):
            out.append(node.lineno)
    return out


def test_finder_sees_deferred_and_type_checking_imports() -> None:
    """The import finder reports imports inside functions and methods and under
    TYPE_CHECKING, relative ones resolved, and only the module-level one as load-time."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import captiond.events\n"
        "if TYPE_CHECKING:\n"
        "    from captiond.config import Config\n"
        "def f():\n"
        "    from ..pipeline import Session\n"
        "    class C:\n"
        "        def g(self):\n"
        "            import asyncio\n"
    )
    module = "captiond.engines.example"
    found = {(name, where) for name, _, where in _imports(module, tree=tree)}
    assert {("captiond.events", "load"), ("captiond.config", "typing"),
            ("captiond.pipeline", "deferred"), ("captiond.pipeline.Session", "deferred"),
            ("asyncio", "deferred")} <= found
    assert {n for n, _, _ in _imports(module, load_time_only=True, tree=tree)} == {
        "typing", "typing.TYPE_CHECKING", "captiond.events"}


def test_no_import_cycle() -> None:
    """No cycle among captiond modules, counting module-level, deferred (inside functions)
    and TYPE_CHECKING imports: every dependency points one way."""
    graph = {m: _captiond_edges(m) for m in _modules()}
    cycle = _find_cycle(graph)
    assert cycle is None, _describe(cycle, graph)


def test_engines_never_import_what_uses_them() -> None:
    """captiond.engines.* imports neither the pipeline, the daemon, the commands nor the CLI,
    not even inside a function or for typing."""
    bad = []
    for m in _modules():
        if not m.startswith("captiond.engines"):
            continue
        for name, line, where in _imports(m):
            if any(name == up or name.startswith(up + ".") for up in ABOVE_ENGINES):
                bad.append(f"{_path(m).relative_to(ROOT)}:{line}: {name} ({where})")
    assert not bad, "engines reach up:\n  " + "\n  ".join(sorted(set(bad)))


def test_nothing_but_the_commands_reaches_into_the_daemon() -> None:
    """No module imports captiond.daemon -- not for typing, not inside a function -- but the
    commands that run it: services get a small context, not the Daemon."""
    importers = set()
    for m in _modules():
        if any(name == "captiond.daemon" for name, _, _ in _imports(m)):
            importers.add(str(_path(m).relative_to(ROOT)))
    assert importers <= {"captiond/commands/run.py", "captiond/commands/service.py"}, importers


def test_pure_modules_touch_no_io_threads_or_clocks() -> None:
    """A module whose docstring's first line says [pure] imports no asyncio, sockets, threads,
    time, database, device or process module (directly, in a function, or through the
    captiond modules it loads) and never reads the clock with datetime.now()/today()."""
    pure = _pure_modules()
    assert len(pure) >= 10, pure  # the tags are read (a changed format must not pass vacuously)
    problems = []
    for m in pure:
        where_from = _path(m).relative_to(ROOT)
        for name, line, where in _imports(m):
            if _impure(name):
                problems.append(f"{where_from}:{line}: imports {name} ({where})")
        for line in _clock_calls(m):
            problems.append(f"{where_from}:{line}: reads the clock")
        # What loading the module loads: captiond modules, followed to their own imports.
        seen: set[str] = set()
        todo = [(m, [m])]
        while todo:
            current, chain = todo.pop()
            for dep in _captiond_edges(current, load_time_only=True):
                if dep in seen:
                    continue
                seen.add(dep)
                for name, line, _ in _imports(dep, load_time_only=True):
                    if _impure(name):
                        problems.append(f"{where_from}: loads {' -> '.join(chain + [dep])}, "
                                        f"which imports {name} "
                                        f"({_path(dep).relative_to(ROOT)}:{line})")
                todo.append((dep, chain + [dep]))
    assert not problems, "pure modules touch I/O:\n  " + "\n  ".join(problems)


def test_package_tables_agree_with_the_module_tags() -> None:
    """A package docstring that tags its files ``name.py ... [pure]`` agrees with each file's
    own first-line tag."""
    pure = set(_pure_modules())
    wrong = []
    for m in _modules():
        if _path(m).name != "__init__.py":
            continue
        for row in (ast.get_docstring(_tree(m)) or "").splitlines():
            match = re.match(r"\s*(\w+)\.py\s.*\[pure", row)
            if match and f"{m}.{match.group(1)}" not in pure:
                wrong.append(f"{m}.{match.group(1)}")
    assert not wrong, f"tagged [pure] in their package's table but not in their docstring: {wrong}"
