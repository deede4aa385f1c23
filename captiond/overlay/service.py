"""The overlay as a daemon service: started with ``captiond run``, closed at shutdown.

:func:`overlay_service` is one of :func:`captiond.daemon.default_services`. It serves the
daemon's own :class:`~captiond.feed.Feed`, its public status and the JSON API the daemon
mounts, all from the :class:`~captiond.services.ServiceContext` (it never sees the daemon);
batch runs (``transcribe``, ``run --fast``) do not start it, so they never compete for the
port with a running daemon.
"""

from __future__ import annotations

from captiond.overlay.server import OverlayServer
from captiond.services import ServiceContext


def overlay_service(ctx: ServiceContext) -> OverlayServer | None:
    """The overlay server of a live daemon (``start``/``close``), or None when not wanted."""
    if not ctx.cfg["overlay.enabled"] or not ctx.realtime:
        return None
    return OverlayServer(ctx.cfg, ctx.feed, ctx.status, ctx.http_handlers or None)
