"""The overlay's fan-out: every feed message to every viewer, never blocking the feed.

A part of :class:`~captiond.overlay.server.OverlayServer` (a mixin: the attributes are the
server's). One fan-out task reads the feed once and writes each message straight into the
socket of every viewer that is caught up (websockets' broadcast: no task switch per viewer). A
viewer that is busy (sending its snapshot), has a backlog, or whose socket buffer is full gets
the message in its own bounded queue instead (a Subscription: coalesced per line), which its
handler drains in order; once drained it is caught up again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from captiond.feed import Feed, Subscription

log = logging.getLogger("captiond.overlay")

#: Feed protocol version announced in the hello message.
PROTOCOL = 1
#: Messages a viewer may send in one connection before it is closed (1008).
INPUT_MESSAGES_MAX = 100
#: Bytes buffered for a viewer's socket before a send waits for it to drain.
WRITE_LIMIT_BYTES = 64 * 1024
#: Kernel send buffer per viewer socket (bytes; Linux doubles it). Autotuning would let each
#: stalled viewer pin megabytes of kernel memory; captions need a few kB per second.
SOCKET_SNDBUF_BYTES = 128 * 1024
#: A viewer whose socket has not drained below WRITE_LIMIT_BYTES for this long is dropped.
SEND_STALL_S = 10.0
#: How often the stall watchdog looks at every viewer's write buffer.
STALL_CHECK_S = 1.0
#: Encoded messages kept so N viewers cost one json.dumps per message.
ENCODE_CACHE_ENTRIES = 512
#: Lines whose last-change time is remembered (for ``age_ms`` in snapshots).
AGE_KEYS_MAX = 1_000
#: Close codes: the viewer fell too far behind (reconnect), the viewer talks too much.
CLOSE_TOO_SLOW = 1013
CLOSE_POLICY = 1008
_HELLO: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL}
_RELOAD: dict[str, Any] = {"type": "reload"}


@dataclass(eq=False)
class _Viewer:
    """One connected viewer: its socket, its backlog, and whether its handler is sending."""

    ws: ServerConnection
    queue: Subscription
    #: True while the handler sends (the snapshot, or a backlog): the fan-out must queue.
    busy: bool = True


def _line_key(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message.get("track"), message.get("channel"), message.get("item_id"))


class FanOut:
    """The viewers' side of the overlay server."""

    _feed: Feed
    _viewers: dict[ServerConnection, _Viewer]
    _admitted: set[ServerConnection]
    _seen: OrderedDict[tuple[Any, ...], float]
    _encoded: OrderedDict[int, tuple[dict[str, Any], bytes]]
    _fanout: Subscription | None
    _closed: bool

    async def _serve_viewer(self, ws: ServerConnection) -> None:
        viewer = _Viewer(ws, Subscription(self._feed, f"overlay:{ws.id}"))
        # Register and snapshot in one synchronous step: every later message reaches it.
        snapshot = self._snapshot()
        self._viewers[ws] = viewer
        reader = asyncio.create_task(self._read_input(viewer), name="overlay-viewer-input")
        log.debug("overlay.viewer_joined viewers=%d", len(self._viewers))
        try:
            await self._send(ws, _HELLO)
            for message in snapshot:
                await self._send(ws, message)
            while True:
                if viewer.queue.pending() == 0:
                    viewer.busy = False  # caught up: the fan-out may write directly
                try:
                    message = await viewer.queue.get()
                except EOFError:
                    break
                viewer.busy = True
                await self._send(ws, message)
            if viewer.queue.overflowed:
                log.warning("overlay.viewer_dropped reason=behind")
                await ws.close(CLOSE_TOO_SLOW, "too far behind; reconnect")
        except ConnectionClosed:
            pass
        finally:
            viewer.queue.close()
            self._viewers.pop(ws, None)
            self._admitted.discard(ws)
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass

    async def _send(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        # No per-send timeout: one timer per send and viewer costs more than the send itself
        # at 200 viewers. _watch_stalls() drops viewers whose socket stopped draining.
        await ws.send(self._encode(message), text=True)

    async def _fan_out(self) -> None:
        """Deliver every feed message to every viewer; remember when lines last changed."""
        loop = asyncio.get_running_loop()
        while True:
            assert self._fanout is not None
            try:
                message = await self._fanout.get()
            except EOFError:
                if self._closed:
                    return
                # Only if this loop was starved for MAX_PENDING_KEYS lines: viewers may have
                # missed updates, so they reconnect and start again from a snapshot.
                log.error("overlay.fanout_overflow viewers=%d", len(self._viewers))
                for viewer in list(self._viewers.values()):
                    viewer.queue.close()
                self._fanout = self._feed.subscribe("overlay:fanout")
                continue
            kind = message.get("type")
            if kind == "line":
                key = _line_key(message)
                self._seen[key] = loop.time()
                self._seen.move_to_end(key)
                if len(self._seen) > AGE_KEYS_MAX:
                    self._seen.popitem(last=False)
            elif kind == "session" and message.get("event") == "started":
                self._seen.clear()
            direct: list[ServerConnection] = []
            for ws, viewer in self._viewers.items():
                if (
                    not viewer.busy
                    and viewer.queue.pending() == 0
                    and ws.transport.get_write_buffer_size() < WRITE_LIMIT_BYTES
                ):
                    direct.append(ws)
                else:
                    viewer.queue.offer(message)
            if direct:
                broadcast(direct, self._encode(message), text=True)

    async def _watch_stalls(self) -> None:
        """Drop viewers whose write buffer stayed full for SEND_STALL_S (a frozen client)."""
        loop = asyncio.get_running_loop()
        full_since: dict[ServerConnection, float] = {}
        while True:
            await asyncio.sleep(STALL_CHECK_S)
            now = loop.time()
            for ws, viewer in list(self._viewers.items()):
                transport = ws.transport
                if viewer.queue.overflowed:
                    # Its queue was cut off, but its handler may sit in a send that never drains.
                    log.warning("overlay.viewer_dropped reason=behind")
                    transport.abort()
                    continue
                if transport.is_closing() or transport.get_write_buffer_size() < WRITE_LIMIT_BYTES:
                    full_since.pop(ws, None)
                    continue
                since = full_since.setdefault(ws, now)
                if now - since >= SEND_STALL_S:
                    log.warning("overlay.viewer_dropped reason=stalled stalled_s=%.0f", now - since)
                    full_since.pop(ws, None)
                    transport.abort()
            for ws in [w for w in full_since if w not in self._viewers]:
                del full_since[ws]

    async def _read_input(self, viewer: _Viewer) -> None:
        """Drain what a viewer sends (so pings are answered); close chatty viewers."""
        received = 0
        try:
            async for _ in viewer.ws:
                received += 1
                if received > INPUT_MESSAGES_MAX:
                    await viewer.ws.close(CLOSE_POLICY, "viewers do not send messages")
                    break
        except ConnectionClosed:
            pass
        finally:
            viewer.queue.close()  # wakes the handler, which ends

    def _encode(self, message: dict[str, Any]) -> bytes:
        # A message goes to many viewers: encode each dict once, to UTF-8 bytes sent as text
        # frames (send(str) would encode again per viewer).
        entry = self._encoded.get(id(message))
        if entry is not None and entry[0] is message:
            return entry[1]
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        self._encoded[id(message)] = (message, text)
        if len(self._encoded) > ENCODE_CACHE_ENTRIES:
            self._encoded.popitem(last=False)
        return text

    def _snapshot(self) -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        out = []
        for message in self._feed.snapshot():
            if message.get("type") == "line":
                seen = self._seen.get(_line_key(message))
                if seen is not None:
                    message = {**message, "age_ms": int((now - seen) * 1000)}
            out.append(message)
        return out
