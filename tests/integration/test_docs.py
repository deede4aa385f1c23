"""The documentation: README.md is a short front door whose links and anchors resolve; docs/
builds with MkDocs in strict mode (broken links and anchors are errors); the settings page is
what its documented command prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown.extensions.toc import slugify as mkdocs_slugify
from markdown_it import MarkdownIt

from captiond import config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 200
MKDOCS_TIMEOUT_S = 120


def _tokens(path: Path) -> list:
    return MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))


def _inline_text(token) -> str:
    return "".join(c.content for c in token.children or [] if c.type in ("text", "code_inline"))


def github_slug(text: str) -> str:
    """A heading's anchor as GitHub renders Markdown: lowercase, punctuation gone, spaces to -."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Anchors a link may name in a Markdown file: each heading's slug as GitHub and as MkDocs
    make it, kept only where both agree (so a link works on GitHub and on the built site). A
    repeated heading's later anchors differ between the two (-1 and _1) and are left out."""
    tokens = _tokens(path)
    found: set[str] = set()
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            text = _inline_text(tokens[i + 1])
            if github_slug(text) == mkdocs_slugify(text, "-"):
                found.add(github_slug(text))
    return frozenset(found)


def links(path: Path) -> list[str]:
    """Every link and image target in a Markdown file, in order."""
    out: list[str] = []
    stack = list(_tokens(path))
    while stack:
        tok = stack.pop(0)
        if tok.children:
            stack[:0] = tok.children
        if tok.type == "link_open":
            out.append(str(tok.attrs.get("href", "")))
        elif tok.type == "image":
            out.append(str(tok.attrs.get("src", "")))
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The relative links of a Markdown file whose file or #anchor does not exist."""
    problems = []
    for href in links(path):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            continue  # an absolute URL: not checked offline
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not target.exists():
            problems.append(f"{href}: no file {target.relative_to(root)}")
        elif parts.fragment and (target.suffix != ".md" or parts.fragment not in anchors(target)):
            problems.append(f"{href}: no heading #{parts.fragment} in {target.relative_to(root)}")
    return problems


def test_readme_links_and_anchors_resolve() -> None:
    """Every relative link in README.md names a file that exists and, with #, a heading in it."""
    assert links(README), "README.md has no links (the parser found none)"
    assert broken_links(README) == []


def test_link_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    """The README check flags a link to a missing file and to a heading that is not there."""
    (tmp_path / "other.md").write_text("# Other\n\n## The JSON API\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[a](other.md#the-json-api) [b](other.md#nope) [c](gone.md) [d](#page) "
        "[e](https://example.org/x#y)\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=tmp_path) == [
        "other.md#nope: no heading #nope in other.md",
        "gone.md: no file gone.md",
    ]


def test_readme_is_a_front_door_with_limitations() -> None:
    """README.md stays short and keeps a plain Limitations list and the way to the docs."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    limitations = text.split("\n## Limitations\n")[1].split("\n## ")[0]
    assert sum(line.startswith("- ") for line in limitations.splitlines()) >= 5
    assert "docs/index.md" in links(README)


def test_mkdocs_builds_strict_without_warnings(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds with no warning: every page, link and anchor resolves."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=MKDOCS_TIMEOUT_S,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").is_file()


def test_settings_page_is_what_its_documented_command_prints(tmp_path: Path) -> None:
    """`python -m captiond config --docs` (the command the page names) prints the page as it is."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("CAPTIOND_")}
    proc = subprocess.run(
        [sys.executable, "-m", "captiond", "config", "--docs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == config.docs_page()
    assert proc.stdout == (ROOT / "docs" / "reference" / "settings.md").read_text(encoding="utf-8")
