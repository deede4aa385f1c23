"""The overlay's Jinja2 templates and static assets, overridable by the user, reloaded live.

Lookup order, like datasette's loader: the user's directory (``overlay.templates``) first, then
the shipped ``templates/``. A user template can extend the shipped one it replaces with
``{% extends "default:overlay.html" %}`` and override only some blocks.

Templates are compiled once and kept; :meth:`Pages.reload` recompiles them after an edit. A
template that no longer compiles is reported and the previous version keeps serving, so a typo
never blanks a live stream.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2

from captiond.errors import ConfigError
from captiond.resources import templates_dir

log = logging.getLogger("captiond.overlay")

#: Templates the server renders.
PAGES: tuple[str, ...] = ("index.html", "overlay.html")
#: Static files served under /static/ (name -> content type). Nothing else is reachable.
STATIC: dict[str, str] = {
    "overlay.js": "text/javascript; charset=utf-8",
    "overlay.css": "text/css; charset=utf-8",
    "index.js": "text/javascript; charset=utf-8",
}
#: Largest static asset served, in bytes (a user file beyond this is refused, not streamed).
STATIC_MAX_BYTES = 1_000_000


class Pages:
    """Compiled templates and static assets; :meth:`reload` picks up edits."""

    def __init__(self, user_dir: Path | None) -> None:
        if user_dir is not None and not user_dir.is_dir():
            raise ConfigError(
                f"overlay.templates: {user_dir} is not a directory "
                "(create it with your overlay.html, or leave the setting empty)"
            )
        self.user_dir = user_dir
        self.shipped_dir = templates_dir()
        shipped = jinja2.FileSystemLoader(str(self.shipped_dir))
        loaders: list[jinja2.BaseLoader] = []
        if user_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(user_dir)))
        loaders += [jinja2.PrefixLoader({"default": shipped}, delimiter=":"), shipped]
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(["html"]),
            # Reloads happen when the watcher says so, not by stat() on every request.
            auto_reload=False,
            undefined=jinja2.StrictUndefined,
        )
        self._compiled: dict[str, jinja2.Template] = {}
        self._static: dict[str, bytes] = {}
        self.generation = 0
        problems = self.reload()
        if problems:
            raise ConfigError("; ".join(problems))

    def reload(self) -> list[str]:
        """Recompile every page and re-read static files; returns problems (old versions kept)."""
        problems: list[str] = []
        if self.env.cache is not None:
            self.env.cache.clear()
        for name in PAGES:
            try:
                self._compiled[name] = self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(
                    f"template {exc.filename or name}:{exc.lineno}: {exc.message} "
                    "(fix it; the previous version stays in use)"
                )
            except jinja2.TemplateError as exc:
                problems.append(f"template {name}: {exc} (the previous version stays in use)")
        for name in STATIC:
            try:
                self._static[name] = self._read_static(name)
            except OSError as exc:
                problems.append(f"static file {name}: {exc.strerror or exc}")
            except ValueError as exc:
                problems.append(str(exc))
        self.generation += 1
        for problem in problems:
            log.error("overlay.template_error %s", problem)
        return problems

    def _read_static(self, name: str) -> bytes:
        for folder in (self.user_dir, self.shipped_dir):
            if folder is None:
                continue
            path = folder / name
            if path.is_file():
                if path.stat().st_size > STATIC_MAX_BYTES:
                    raise ValueError(
                        f"static file {name} is larger than {STATIC_MAX_BYTES} bytes (make it smaller)"
                    )
                return path.read_bytes()
        raise FileNotFoundError(2, "not found in the template directories", name)

    def render(self, name: str, **context: Any) -> str:
        return self._compiled[name].render(**context)

    def static(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and content type of an allowed static asset, or None."""
        if name not in STATIC or name not in self._static:
            return None
        return self._static[name], STATIC[name]
