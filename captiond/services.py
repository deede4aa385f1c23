"""What the daemon runs around a session (overlay server, live subtitles): the contract.

A service factory takes a small :class:`ServiceContext` -- the config, the store, the feed,
the public status -- and returns a :class:`Service` (``start``/``close``), or None when the
config does not want it. Factories know nothing of the daemon (so no module imports
:mod:`captiond.daemon` but the commands that run it); the daemon starts services after the
store is open and before capture, and closes them in reverse order, each within a timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from captiond.config import Config
    from captiond.feed import Feed
    from captiond.transcript.store import Store

#: ``async (path, query) -> (status, body)`` for a path prefix the overlay server mounts.
HttpHandler = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]


@dataclass
class ServiceContext:
    """What a service may use. ``status()`` is the daemon's public status (no paths, no
    devices); ``http_handlers`` are the routes the daemon mounts (the JSON API)."""

    cfg: Config
    store: Store | None
    feed: Feed
    status: Callable[[], dict[str, Any]]
    realtime: bool = True
    title: str = ""
    http_handlers: dict[str, HttpHandler] = field(default_factory=dict)


class Service(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


ServiceFactory = Callable[[ServiceContext], "Service | None"]
