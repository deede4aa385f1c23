"""Where the files that ship beside the code live: ``templates/`` and ``migrations/``.

Installed, they are the packages ``captiond.templates`` and ``captiond.migrations``; in a
source checkout run without installing, they are the top-level folders.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def _folder(package: str, name: str) -> Path:
    # A source checkout uses its own folders, even where an editable install of another
    # checkout (a second git worktree) also provides the package.
    if (_ROOT / "pyproject.toml").is_file() and (_ROOT / name).is_dir():
        return _ROOT / name
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        return _ROOT / name


def templates_dir() -> Path:
    return _folder("captiond.templates", "templates")


def migrations_dir() -> Path:
    return _folder("captiond.migrations", "migrations")


def systemd_dir() -> Path:
    """The unit files (``systemd/``): ``captiond.service`` (user), ``captiond-system.service``."""
    return _folder("captiond.systemd", "systemd")
