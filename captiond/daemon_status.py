"""What the daemon reports about itself: ``captiond status``, ``/api/status``, the overlay
pages' status and systemd's ``STATUS=`` line.

A part of :class:`~captiond.daemon.Daemon` (a mixin: the attributes are the daemon's). The
control socket (the user's own) sees everything; the HTTP API leaves out
:data:`_PRIVATE_STATUS`; the overlay pages get numbers and names only.
"""

from __future__ import annotations

import os
import time
from typing import Any

from captiond.config import Config
from captiond.pipeline import Session

#: Status fields only the local user sees (control socket), not the HTTP API.
_PRIVATE_STATUS = frozenset({"source", "config", "pid"})


class DaemonStatus:
    """The daemon's status reports."""

    cfg: Config
    session: Session | None
    overlay: Any
    outputs: Any
    state: str
    ready: bool
    started_at: float
    _started_mono: float
    reloads: int
    reload_error: str | None
    restart_needed: dict[str, list[str]]

    def stats(self) -> dict[str, Any]:
        """The session's figures, with viewers counted by the overlay (pages actually open)."""
        stats = self.session.stats() if self.session else {}
        if stats and self.overlay is not None:
            stats["feed_subscribers"] = stats.get("viewers", 0)
            stats["viewers"] = self.overlay.viewers()
        return stats

    def status(self) -> dict[str, Any]:
        """What ``captiond status`` and ``/api/status`` show. Called on the event loop."""
        stats = self.stats()
        session = self.session
        engines = stats.get("engines", [])
        return {
            "pid": os.getpid(),
            "state": self.state,
            "ready": self.ready,
            "started_at": round(self.started_at, 1),
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
            "source": " + ".join(s.source.description for s in session.streams) if session else None,
            "engine": ",".join(sorted({s.engine.name for s in session.streams})) if session else None,
            "engine_state": ",".join(sorted({str(e.get("state", "?")) for e in engines})) or None,
            "session": stats.get("session"),
            "lines_stored": stats.get("finals", 0),
            "store_errors": stats.get("store_errors", 0),
            "audio_s": stats.get("audio_s", 0.0),
            "lag_s": stats.get("lag_s", 0.0),
            "gaps": sum(s.gaps for s in session.streams) if session else 0,
            "dropped": stats.get("dropped", 0),
            "viewers": self.overlay.viewers() if self.overlay is not None else None,
            "overlay_url": self.overlay.url if self.overlay is not None and self.ready else None,
            "cost_usd": stats.get("cost_usd", 0.0),
            "config": str(self.cfg.path) if self.cfg.path else None,
            "reloads": self.reloads,
            "reload_error": self.reload_error,
            "restart_needed": self.restart_needed,
            "outputs": self.outputs.status() if self.outputs is not None else [],
            "outputs_summary": self.outputs.summary() if self.outputs is not None else "",
        }

    def overlay_status(self) -> dict[str, Any]:
        """The public part of the status the overlay pages show (numbers and names, never
        sources or paths)."""
        stats = self.stats()
        session = self.session
        names = sorted({s.engine.name for s in session.streams}) if session is not None else []
        status = {
            "state": "captioning" if session is not None and session.session_id else "starting",
            "engine": ",".join(names) or None,
            "session": stats.get("session"),
            "uptime_s": stats.get("uptime_s"),
            "audio_s": stats.get("audio_s"),
            "finals": stats.get("finals"),
            "lag_s": stats.get("lag_s"),
        }
        # The caption outputs in one line, when there are any: "obs ok, youtube failing (HTTP 503)".
        summary = self.outputs.summary() if self.outputs is not None else ""
        if summary:
            status["outputs_summary"] = summary
        return status

    def public_status(self) -> dict[str, Any]:
        """The status for the overlay's ``/api/status``: no file paths or device names (the
        overlay may be reachable from other machines; the control socket is the user's own)."""
        return {k: v for k, v in self.status().items() if k not in _PRIVATE_STATUS}

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status`` shows it)."""
        st = self.status()
        if not self.ready:
            return f"{self.state}"
        line = (
            f"{self.state}: engine {st['engine']} ({st['engine_state']}), session {st['session']}, "
            f"{st['lines_stored']} lines, lag {st['lag_s']:.1f} s"
        )
        if st["viewers"] is not None:
            line += f", {st['viewers']} viewers"
        if st.get("cost_usd"):
            line += f", ${st['cost_usd']:.3f}"
        if self.restart_needed:
            line += ", restart needed for " + ",".join(sorted(self.restart_needed))
        return line
