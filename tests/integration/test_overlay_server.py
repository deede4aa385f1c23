"""The overlay server over real sockets: routes, security rules, limits and fan-out."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from overlay_helpers import overlay_config, publish_line
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from captiond import config
from captiond.feed import MAX_PENDING_KEYS, Feed
from captiond.overlay.server import TOKEN_FILE, OverlayServer

pytestmark = pytest.mark.asyncio

TOKEN = "a-token-that-is-long-enough"


async def http_get(
    server: OverlayServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 GET, so tests control every header (Host, Origin, ...)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = {"Host": f"127.0.0.1:{server.port}"}
    head.update(headers or {})
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_raw, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_raw.decode("latin-1").split("\r\n")
    out = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        out[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), out, body


def ws_url(server: OverlayServer, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "ws" + (f"?{query}" if query else "")


async def started(cfg: config.Config | None = None, feed: Feed | None = None, **kw: Any) -> OverlayServer:
    server = OverlayServer(cfg or overlay_config(), feed or Feed(), kw.pop("status", dict), **kw)
    await server.start()
    return server


async def test_pages_static_and_status_are_served() -> None:
    """/, /overlay, /static/overlay.js and /status answer; unknown paths are 404."""
    server = await started(status=lambda: {"state": "listening", "engine": "local"})
    try:
        status, headers, body = await http_get(server, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"/overlay" in body and "content-security-policy" in headers
        status, _, body = await http_get(server, "/overlay?font_size=60&mode=stable")
        assert status == 200 and b"--cap-font-size: 60px" in body
        assert json.loads(body.split(b'type="application/json">')[1].split(b"</script>")[0])[
            "mode"] == "stable"
        status, headers, body = await http_get(server, "/static/overlay.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        status, _, body = await http_get(server, "/status")
        assert json.loads(body) == {"state": "listening", "engine": "local", "viewers": 0,
                                    "max_viewers": 100}
        assert (await http_get(server, "/static/../config.py"))[0] == 404
        assert (await http_get(server, "/nothing"))[0] == 404
        assert (await http_get(server, "/ws"))[0] == 426
    finally:
        await server.close()


async def test_bad_style_parameter_is_a_clear_400() -> None:
    """An unknown or invalid URL style parameter is refused with what to fix."""
    server = await started()
    try:
        status, _, body = await http_get(server, "/overlay?font_size=huge")
        assert status == 400 and b"font_size" in body and b"integer" in body
        status, _, body = await http_get(server, "/overlay?colour=red")
        assert status == 400 and b"unknown overlay parameter 'colour'" in body
        status, _, body = await http_get(server, "/overlay?color=red;background:url(x)")
        assert status == 400
    finally:
        await server.close()


async def test_no_secrets_or_paths_on_any_page(tmp_path: Path) -> None:
    """Tokens, database URLs and directories from config never appear in pages or /status."""
    user_templates = tmp_path / "my-templates"
    user_templates.mkdir()
    cfg = config.parse("", env={}, overrides={
        "overlay.port": "0", "overlay.token": TOKEN, "overlay.templates": str(user_templates),
        "database.url": "postgresql://captions:hunter2secret@db.internal/captiond",
        "database.data_dir": str(tmp_path / "data"),
    })
    server = await started(cfg, status=lambda: {"state": "ok", "source": "file:/home/me/x.wav",
                                                "api_key": "sk-should-not-show-0000"})
    try:
        for path in ("/", "/overlay", "/status", "/static/overlay.js", "/static/index.js"):
            status, _, body = await http_get(server, f"{path}?token={TOKEN}")
            assert status == 200, path
            for secret in (TOKEN, "hunter2secret", "db.internal", str(tmp_path), "my-templates",
                           "/home/me", "sk-should-not-show"):
                assert secret.encode() not in body, (path, secret)
    finally:
        await server.close()


async def test_configured_token_is_required_everywhere_but_static() -> None:
    """With a token: pages, /status, /ws and mounted API routes need it; static files do not."""
    calls: list[tuple[str, dict[str, str]]] = []

    async def api(path: str, query: dict[str, str]) -> tuple[int, Any]:
        calls.append((path, query))
        return 200, {"path": path}

    server = await started(overlay_config(token=TOKEN), http_handlers={"/api/": api})
    try:
        for path in ("/", "/overlay", "/status", "/api/sessions"):
            assert (await http_get(server, path))[0] == 401, path
            assert (await http_get(server, f"{path}?token=wrong-token-value"))[0] == 403, path
            assert (await http_get(server, f"{path}?token={TOKEN}"))[0] == 200, path
        assert (await http_get(server, "/api/x", {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
        assert (await http_get(server, "/static/overlay.js"))[0] == 200
        # The token is not passed on to API handlers.
        assert calls[0] == ("/api/sessions", {})
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server)):
                pass
        assert refused.value.response.status_code == 401
        async with connect(ws_url(server, f"token={TOKEN}")) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
    finally:
        await server.close()


async def test_non_loopback_bind_generates_and_keeps_a_token(tmp_path: Path) -> None:
    """Bound beyond loopback with no token: one is generated, kept 0600, required, reused."""
    cfg = config.parse("", env={}, overrides={
        "overlay.port": "0", "overlay.host": "0.0.0.0", "database.data_dir": str(tmp_path),
    })
    server = await started(cfg)
    try:
        token_file = tmp_path / TOKEN_FILE
        assert server.token_generated and server.token_required
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert (await http_get(server, "/overlay"))[0] == 401
        assert (await http_get(server, f"/overlay?token={token}"))[0] == 200
        # Any Host name is fine beyond loopback: the token protects it.
        assert (await http_get(server, f"/overlay?token={token}", {"Host": "studio.lan"}))[0] == 200
    finally:
        await server.close()
    again = await started(cfg)
    try:
        assert not again.token_generated
        assert (await http_get(again, f"/overlay?token={token}"))[0] == 200
    finally:
        await again.close()


async def test_foreign_origin_and_rebinding_host_are_refused() -> None:
    """WebSocket from another Origin is refused; on loopback a foreign Host is refused too."""
    server = await started()
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server), origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            async with connect(ws_url(server), origin="null"):  # type: ignore[arg-type]
                pass
        # The page's own origin and programs without Origin are welcome.
        own = f"http://127.0.0.1:{server.port}"
        async with connect(ws_url(server), origin=own) as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "hello"
        async with connect(ws_url(server)) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
        # DNS rebinding: evil.example resolving to 127.0.0.1 sends Host: evil.example.
        for path in ("/", "/overlay", "/status"):
            status, _, _ = await http_get(server, path, {"Host": f"evil.example:{server.port}"})
            assert status == 403, path
        assert (await http_get(server, "/overlay", {"Host": f"localhost:{server.port}"}))[0] == 200
    finally:
        await server.close()


async def test_late_joiner_gets_hello_then_snapshot_then_live() -> None:
    """A new viewer gets hello, the recent lines (with age), then live updates in order."""
    feed = Feed()
    publish_line(feed, "a", "first", seq=0)
    publish_line(feed, "b", "seco", seq=1, final=False)
    server = await started(feed=feed)
    try:
        async with connect(ws_url(server)) as ws:
            messages = [json.loads(await ws.recv()) for _ in range(3)]
            assert [m["type"] for m in messages] == ["hello", "line", "line"]
            assert [m["text"] for m in messages[1:]] == ["first", "seco"]
            publish_line(feed, "b", "second", seq=1)
            live = json.loads(await ws.recv())
            assert (live["item_id"], live["event"], live["text"], live["status"]) == (
                "b", "finalised", "second", "final")
    finally:
        await server.close()


async def test_close_is_idempotent_and_says_going_away() -> None:
    """close() closes viewers with 1001 and can be called twice; the port is free again."""
    server = await started()
    port = server.port
    async with connect(ws_url(server)) as ws:
        await ws.recv()
        await server.close()
        await server.close()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    again = await started(overlay_config(port=port))
    await again.close()


async def test_closed_server_leaves_the_feed() -> None:
    """After close() the feed has no subscriber left from the server."""
    feed = Feed()
    server = await started(feed=feed)
    async with connect(ws_url(server)) as ws:
        await ws.recv()
        assert feed.subscribers() == 1
    await server.close()
    assert feed.subscribers() == 0


async def test_viewer_limit() -> None:
    """Beyond overlay.max_viewers, new feed connections get 503; a freed slot is reusable."""
    server = await started(overlay_config(max_viewers=2))
    try:
        async with connect(ws_url(server)) as a, connect(ws_url(server)) as b:
            await a.recv()
            await b.recv()
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(server)):
                    pass
            assert refused.value.response.status_code == 503
        for _ in range(100):  # the server notices the two closes
            if server.viewers() == 0:
                break
            await asyncio.sleep(0.02)
        async with connect(ws_url(server)) as c:
            assert json.loads(await c.recv())["type"] == "hello"
    finally:
        await server.close()


async def test_viewer_input_is_limited() -> None:
    """A viewer sending an oversized message is closed with 1009 (message too big)."""
    server = await started()
    try:
        async with connect(ws_url(server)) as ws:
            await ws.recv()
            await ws.send("x" * 10_000)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        await server.close()


def _stalled_viewer(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window, set before connecting so the window scale honours it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
         ).encode()
    )
    return sock


async def test_stalled_viewers_do_not_hold_back_others_and_are_cut_off() -> None:
    """Viewers that never read do not delay a reading viewer; the feed cuts them off."""
    feed = Feed()
    server = await started(overlay_config(max_viewers=20), feed=feed)
    stalled = [_stalled_viewer(server.port) for _ in range(5)]
    try:
        for _ in range(200):
            if server.viewers() == 5:
                break
            await asyncio.sleep(0.01)
        assert server.viewers() == 5
        async with connect(ws_url(server), max_size=None) as reader:
            await reader.recv()
            text = "word " * 400  # 2 kB per line: stalled sockets fill up quickly
            total = MAX_PENDING_KEYS + 800
            received = 0
            last: dict[str, Any] = {}
            for i in range(total):
                publish_line(feed, f"l{i}", f"{i} {text}", seq=i)
                if i % 50 == 49:
                    # Read everything sent so far; stalled viewers must not hold this up.
                    while True:
                        last = json.loads(await asyncio.wait_for(reader.recv(), 5))
                        received += 1
                        if last["item_id"] == f"l{i}":
                            break
            assert last["item_id"] == f"l{total - 1}" and received == total
            pending = server.backlogs()
        # The stalled viewers fell more than MAX_PENDING_KEYS lines behind: their queues were
        # cut off and their connections dropped (the watchdog checks every second).
        for _ in range(int(5 / 0.05)):
            if server.viewers() == 0:
                break
            await asyncio.sleep(0.05)
        assert server.viewers() == 0
        assert feed.subscribers() == 1  # the server's one fan-out subscription remains
        # While they hung on, their queues stayed bounded.
        assert max(pending) <= MAX_PENDING_KEYS
    finally:
        for sock in stalled:
            sock.close()
        await server.close()


async def test_api_handler_errors_do_not_leak() -> None:
    """A mounted handler's exception becomes a generic 500; its result is JSON."""

    async def api(path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path.endswith("boom"):
            raise RuntimeError("/secret/path/in/traceback")
        return 201, {"q": query}

    server = await started(http_handlers={"/api/": api})
    try:
        status, headers, body = await http_get(server, "/api/ok?x=1")
        assert status == 201 and json.loads(body) == {"q": {"x": "1"}}
        assert headers["content-type"].startswith("application/json")
        status, _, body = await http_get(server, "/api/boom")
        assert status == 500 and b"/secret" not in body
        # Cross-site requests to the API are refused like the feed.
        status, _, _ = await http_get(server, "/api/ok", {"Origin": "http://evil.example"})
        assert status == 403
    finally:
        await server.close()


async def test_daemon_service_serves_the_daemon_feed_and_public_status() -> None:
    """The daemon service starts on the daemon's feed; batch runs do not start it."""
    from captiond.daemon import Daemon
    from captiond.overlay.service import overlay_service

    cfg = overlay_config()
    assert overlay_service(Daemon(cfg, realtime=False).service_context()) is None
    assert overlay_service(Daemon(cfg.replace(overlay__enabled=False)).service_context()) is None
    daemon = Daemon(cfg)
    server = overlay_service(daemon.service_context())
    assert server is not None
    close = server.close
    await server.start()
    try:
        status, _, body = await http_get(server, "/status")
        assert status == 200
        assert json.loads(body) == {"state": "starting", "engine": None, "session": None,
                                    "uptime_s": None, "audio_s": None, "finals": None,
                                    "lag_s": None, "viewers": 0, "max_viewers": 100}
        publish_line(daemon.feed, "a", "from the daemon feed", seq=0)
        async with connect(ws_url(server)) as ws:
            await ws.recv()
            assert json.loads(await ws.recv())["text"] == "from the daemon feed"
    finally:
        await close()


async def test_reconfigure_restyles_pages_and_keeps_bind_settings() -> None:
    """A reloaded config changes the style served and tells open pages to reload."""
    cfg = overlay_config()
    server = await started(cfg)
    try:
        async with connect(ws_url(server)) as ws:
            await ws.recv()
            server.reconfigure(cfg.replace(overlay__font_size=72, overlay__max_viewers=5))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "reload"}
        status, _, body = await http_get(server, "/overlay")
        assert status == 200 and b"--cap-font-size: 72px" in body
        _, _, body = await http_get(server, "/status")
        assert json.loads(body)["max_viewers"] == 100  # needs a restart; kept until then
    finally:
        await server.close()


def _read_frames(sock: socket.socket, until: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Read server text frames (unmasked) from a raw socket until ``until(message)`` is true."""
    sock.settimeout(timeout_s)
    buffer = b""
    out: list[dict[str, Any]] = []

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            buffer += chunk
        data, buffer = buffer[:n], buffer[n:]
        return data

    while True:
        head = need(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(need(2), "big")
        elif length == 127:
            length = int.from_bytes(need(8), "big")
        payload = need(length)
        if head[0] & 0x0F == 1:  # text frame
            out.append(json.loads(payload))
            if until(out[-1]):
                return out


async def test_slow_viewer_gets_latest_state_in_order() -> None:
    """A viewer that pauses reading later receives every line, coalesced to its latest text."""
    feed = Feed()
    server = await started(feed=feed)
    sock = _stalled_viewer(server.port)
    try:
        response = b""
        while b"\r\n\r\n" not in response:
            response += await asyncio.to_thread(sock.recv, 1)
        assert response.startswith(b"HTTP/1.1 101")
        for _ in range(200):
            if server.viewers() == 1:
                break
            await asyncio.sleep(0.01)
        filler = "x" * 2000
        for i in range(300):  # fills the socket buffers: the viewer is now behind
            publish_line(feed, f"l{i}", f"{i} {filler}", seq=i)
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        assert max(server.backlogs()) > 0
        for v in range(200):
            publish_line(feed, "hot", f"version {v}", seq=1000, final=False)
        messages = await asyncio.to_thread(
            _read_frames, sock, lambda m: m.get("text") == "version 199"
        )
        lines = [m for m in messages if m.get("type") == "line"]
        hot = [m["text"] for m in lines if m["item_id"] == "hot"]
        assert hot[-1] == "version 199" and len(hot) < 200  # coalesced, latest last
        # Every other line arrived once, in the order published.
        assert [m["item_id"] for m in lines if m["item_id"] != "hot"] == [f"l{i}" for i in range(300)]
    finally:
        sock.close()
        await server.close()
