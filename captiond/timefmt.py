"""Stream offsets (milliseconds) as clock text: the one formatter every output uses.  [pure]"""

from __future__ import annotations


def clock(ms: int, millis_sep: str | None = None) -> str:
    """``01:02:03``; with ``millis_sep`` (``","`` for SRT, ``"."`` for WebVTT) ``01:02:03,456``.
    Hours are always written (every reader agrees on them); negative offsets read as 0."""
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    out = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return out if millis_sep is None else f"{out}{millis_sep}{millis:03d}"
