"""Fan-out of caption updates to any number of subscribers, never blocking the pipeline.

The pipeline calls :meth:`Feed.publish` (synchronous, on the event loop). Each subscriber has a
bounded set of pending messages keyed by line: a subscriber that reads slowly gets the latest
state of each line (coalesced), and one that falls further behind than
:data:`MAX_PENDING_KEYS` lines is cut off (``overflowed``) so it cannot hold memory. Late
joiners start from :meth:`Feed.snapshot`, the last lines shown.

Message schema (JSON objects, one per WebSocket message or callback)::

    {"type": "line", "event": "added"|"updated"|"finalised"|"removed",
     "session": 12, "item_id": "loc-3", "seq": 3, "track": "original", "channel": "",
     "speaker": null, "status": "partial"|"final"|"failed", "text": "…", "stable": 17,
     "start_ms": 1200, "end_ms": 3400, "engine": "local", "language": "en"|null}
    {"type": "session", "event": "started"|"ended", "session": 12, "title": …}
    {"type": "status", "state": "captioning", "engine": "openai", "engine_state": "connected",
     "session": 12, "lag_s": 0.4, "audio_s": 61.2, "lines_stored": 14, "gaps": 0,
     "viewers": 1}   the daemon's state (latest only; every few seconds while it changes)
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from captiond.events import LineUpdate, UpdateKind

#: Lines one subscriber may have pending before it is disconnected.
MAX_PENDING_KEYS = 2_000
#: Lines kept for late joiners.
SNAPSHOT_LINES = 50
#: The daemon status fields a feed ``status`` message carries (nothing private: no paths,
#: devices, pid -- the feed reaches every overlay viewer).
STATUS_FIELDS: tuple[str, ...] = (
    "state", "engine", "engine_state", "session", "lag_s", "audio_s", "lines_stored", "gaps",
    "viewers",
)


def status_message(status: dict[str, Any]) -> dict[str, Any]:
    """A feed ``status`` message from the daemon's status (only :data:`STATUS_FIELDS`)."""
    return {"type": "status", **{k: status.get(k) for k in STATUS_FIELDS}}


def line_message(update: LineUpdate) -> dict[str, Any]:
    line = update.line
    return {
        "type": "line",
        "event": update.kind.value,
        "session": update.session_id,
        "item_id": line.item_id,
        "seq": line.seq,
        "track": line.track,
        "channel": line.channel,
        "speaker": line.speaker,
        "status": line.status.value,
        "text": line.text,
        "stable": line.stable,
        "start_ms": line.audio_start_ms,
        "end_ms": line.audio_end_ms,
        "engine": line.engine,
        # The line's language once final (detected or engine.language); null before.
        "language": line.language,
    }


def _key(message: dict[str, Any]) -> tuple[Any, ...]:
    if message.get("type") == "line":
        return ("line", message["track"], message["channel"], message["item_id"])
    return (message.get("type"), message.get("event") if message.get("type") == "session" else "")


class Subscription:
    """One subscriber's pending messages: bounded, coalesced by line."""

    def __init__(self, feed: Feed, name: str = "") -> None:
        self.feed = feed
        self.name = name
        self._pending: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self.delivered = 0
        self.coalesced = 0

    def offer(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        key = _key(message)
        previous = self._pending.get(key)
        if previous is not None:
            self.coalesced += 1
            if previous.get("event") == UpdateKind.ADDED.value:
                if message.get("event") == UpdateKind.REMOVED.value:
                    # Added and removed before the subscriber saw it: nothing to show.
                    del self._pending[key]
                    return
                message = {**message, "event": UpdateKind.ADDED.value}
            self._pending[key] = message
        else:
            if len(self._pending) >= MAX_PENDING_KEYS:
                self.overflowed = True
                self.close()
                return
            self._pending[key] = message
        self._ready.set()

    async def get(self) -> dict[str, Any]:
        """The next message; raises :class:`asyncio.CancelledError` style ``EOFError`` when closed."""
        while not self._pending:
            if self.closed:
                raise EOFError("subscription closed")
            self._ready.clear()
            await self._ready.wait()
        _, message = self._pending.popitem(last=False)
        self.delivered += 1
        return message

    def get_nowait(self) -> dict[str, Any] | None:
        if not self._pending:
            return None
        self.delivered += 1
        return self._pending.popitem(last=False)[1]

    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ready.set()
            self.feed._subscribers.discard(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None


class Feed:
    def __init__(self, snapshot_lines: int = SNAPSHOT_LINES) -> None:
        self._subscribers: set[Subscription] = set()
        self._recent: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._snapshot_lines = snapshot_lines
        self._status: dict[str, Any] = {"type": "status"}
        self._session: dict[str, Any] | None = None
        self.published = 0

    def subscribe(self, name: str = "") -> Subscription:
        sub = Subscription(self, name)
        self._subscribers.add(sub)
        return sub

    def subscribers(self) -> int:
        return len(self._subscribers)

    def snapshot(self) -> list[dict[str, Any]]:
        """What a late joiner needs: the session, the status, the last lines."""
        out: list[dict[str, Any]] = []
        if self._session is not None:
            out.append(self._session)
        if len(self._status) > 1:
            out.append(dict(self._status))
        out.extend(self._recent.values())
        return out

    def publish_updates(self, updates: Iterable[LineUpdate]) -> None:
        for update in updates:
            self.publish(line_message(update))

    def publish(self, message: dict[str, Any]) -> None:
        self.published += 1
        if message.get("type") == "line":
            key = _key(message)
            if message["event"] == UpdateKind.REMOVED.value:
                self._recent.pop(key, None)
            else:
                self._recent[key] = {**message, "event": UpdateKind.ADDED.value}
                self._recent.move_to_end(key)
                while len(self._recent) > self._snapshot_lines:
                    self._recent.popitem(last=False)
        elif message.get("type") == "session":
            self._session = message if message.get("event") == "started" else None
            if message.get("event") == "started":
                self._recent.clear()
        elif message.get("type") == "status":
            self._status = message
        for sub in list(self._subscribers):
            sub.offer(message)

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def close(self) -> None:
        for sub in list(self._subscribers):
            sub.close()
