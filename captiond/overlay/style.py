"""Overlay styling: which settings reach the page, and how URL query parameters override them.

Pure: takes a :class:`~captiond.config.Config` and the query parameters of a request and returns
plain values. The style settings are ``overlay.<key>`` settings in the one registry
(:data:`captiond.config.SETTINGS`), so the TOML file, the environment, ``--help``, the settings
reference and the URL all agree on names, types, ranges and error messages. Nothing else from the
config ever reaches a page: no API keys, tokens, hosts or paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from captiond.config import BY_NAME, Config, _coerce
from captiond.errors import ConfigError

#: Settings (``overlay.<key>``) a page may see; ``<key>`` is also the URL query parameter.
STYLE_KEYS: tuple[str, ...] = (
    "font_family",
    "font_size",
    "font_weight",
    "color",
    "outline_color",
    "outline_px",
    "shadow_px",
    "shadow_color",
    "background_color",
    "background_opacity",
    "align",
    "position",
    "margin_px",
    "max_lines",
    "max_chars",
    "linger_s",
    "lang",
    "speakers",
    "mode",
)

#: Query parameters that are not styling but are allowed on overlay URLs.
NON_STYLE_PARAMS = frozenset({"token"})

#: Generic CSS font families, written unquoted.
_GENERIC_FAMILIES = frozenset(
    {"serif", "sans-serif", "monospace", "cursive", "fantasy", "system-ui", "ui-sans-serif",
     "ui-serif", "ui-monospace", "ui-rounded", "math", "emoji"}
)


class StyleError(ConfigError):
    """A bad styling URL parameter; the message names it, the value and what to write."""


def resolve(cfg: Config, query: Mapping[str, str]) -> dict[str, Any]:
    """The style for one page: config values, overridden by URL parameters of the same key.

    Raises :class:`StyleError` for an unknown parameter or a value the setting would reject.
    """
    style = {key: cfg[f"overlay.{key}"] for key in STYLE_KEYS}
    for param, raw in query.items():
        if param in NON_STYLE_PARAMS:
            continue
        if param not in style:
            raise StyleError(
                f"unknown overlay parameter {param!r} (known: {', '.join(STYLE_KEYS)})"
            )
        try:
            style[param] = _coerce(
                BY_NAME[f"overlay.{param}"], raw, f"URL parameter {param}", from_text=True
            )
        except ConfigError as exc:
            raise StyleError(str(exc).replace(f"overlay.{param} ", "", 1)) from None
    return style


def css_colour(value: str) -> str:
    """A validated colour setting as CSS (``ffcc00`` becomes ``#ffcc00``)."""
    if value.startswith("#") or not all(c in "0123456789abcdefABCDEF" for c in value):
        return value
    return "#" + value


def css_font_family(value: str) -> str:
    """A validated font list as CSS: named families quoted, generic ones bare."""
    out = []
    for part in value.split(","):
        name = part.strip().strip("'\"").strip()
        if not name:
            continue
        out.append(name if name.lower() in _GENERIC_FAMILIES else f'"{name}"')
    return ", ".join(out) or "sans-serif"


def css_variables(style: Mapping[str, Any]) -> dict[str, str]:
    """CSS custom properties for the caption box, from a resolved style."""
    outline = float(style["outline_px"])
    shadow = float(style["shadow_px"])
    shadows = []
    if outline > 0:
        # A text outline that works in every Chromium (OBS ships an old CEF): eight offsets.
        oc = css_colour(style["outline_color"])
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
            shadows.append(f"{dx * outline:g}px {dy * outline:g}px 0 {oc}")
    if shadow > 0:
        shadows.append(f"0 {max(1.0, shadow / 2):g}px {shadow:g}px {css_colour(style['shadow_color'])}")
    justify = {"top": "flex-start", "middle": "center", "bottom": "flex-end"}[style["position"]]
    return {
        "--cap-font-family": css_font_family(style["font_family"]),
        "--cap-font-size": f"{int(style['font_size'])}px",
        "--cap-font-weight": str(int(style["font_weight"])),
        "--cap-color": css_colour(style["color"]),
        "--cap-text-shadow": ", ".join(shadows) or "none",
        "--cap-bg": css_colour(style["background_color"]),
        "--cap-bg-opacity": f"{float(style['background_opacity']):g}",
        "--cap-align": style["align"],
        "--cap-justify": justify,
        "--cap-margin": f"{int(style['margin_px'])}px",
        "--cap-max-chars": str(int(style["max_chars"])),
    }


def client_options(style: Mapping[str, Any]) -> dict[str, Any]:
    """What the page's script needs to lay captions out (plain JSON values)."""
    return {
        "max_lines": int(style["max_lines"]),
        "max_chars": int(style["max_chars"]),
        "linger_ms": int(float(style["linger_s"]) * 1000),
        "lang": style["lang"],
        "speakers": bool(style["speakers"]),
        "mode": style["mode"],
    }
