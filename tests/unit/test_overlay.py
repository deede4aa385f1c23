"""Overlay pieces without sockets: styling from config and URL, access rules, templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from captiond import config
from captiond.errors import ConfigError
from captiond.overlay import access, style
from captiond.overlay.pages import Pages


def test_broken_template_edit_keeps_previous_version(tmp_path: Path) -> None:
    """A user template that stops compiling is reported; the previous one keeps rendering."""
    (tmp_path / "overlay.html").write_text(
        '{% extends "default:overlay.html" %}{% block head %}<b>mine</b>{% endblock %}'
    )
    pages = Pages(tmp_path)
    context = {"css_vars": {}, "options": {}, "position": "bottom", "version": "x"}
    assert "<b>mine</b>" in pages.render("overlay.html", **context)
    (tmp_path / "overlay.html").write_text("{% block head %}oops{% endblok %}")
    problems = pages.reload()
    assert problems and "overlay.html:1" in problems[0]
    assert "<b>mine</b>" in pages.render("overlay.html", **context)


def test_missing_template_directory_is_a_config_error(tmp_path: Path) -> None:
    """overlay.templates naming no directory fails with the fix in the message."""
    with pytest.raises(ConfigError, match="overlay.templates: .* is not a directory"):
        Pages(tmp_path / "nope")


def test_style_query_overrides_config_and_is_validated() -> None:
    """URL parameters override config style values; only style keys are accepted."""
    cfg = config.parse('[overlay]\nfont_size = 40\ncolor = "white"\n', env={})
    resolved = style.resolve(cfg, {"font_size": "64", "speakers": "yes", "token": "x"})
    assert resolved["font_size"] == 64 and resolved["speakers"] is True
    assert resolved["color"] == "white"
    for bad in ({"host": "0.0.0.0"}, {"token_x": "1"}, {"max_lines": "0"},
                {"font_family": "x;}</style>"}, {"lang": "english"}):
        with pytest.raises(style.StyleError):
            style.resolve(cfg, bad)
    variables = style.css_variables(style.resolve(cfg, {"color": "ffcc00",
                                                        "font_family": "Source Sans 3, serif"}))
    assert variables["--cap-color"] == "#ffcc00"
    assert variables["--cap-font-family"] == '"Source Sans 3", serif'


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False), ("studio.lan", False)],
)
def test_loopback_detection(host: str, expected: bool) -> None:
    """Which bind addresses and Host names count as this machine only."""
    assert access.is_loopback(host) is expected


def test_host_header_names() -> None:
    """The name part of Host headers, with ports and IPv6 brackets."""
    assert access.host_name("127.0.0.1:8765") == "127.0.0.1"
    assert access.host_name("[::1]:8765") == "::1"
    assert access.host_name("localhost") == "localhost"
