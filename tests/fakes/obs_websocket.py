"""A protocol-faithful fake of OBS Studio's obs-websocket v5 server, on 127.0.0.1:0.

It speaks the v5 protocol (``obswebsocket.json`` subprotocol): ``Hello`` (op 0) with an
``authentication`` challenge and salt when it has a password, checks ``Identify`` (op 1:
``rpcVersion`` 1 and ``authentication = base64(sha256(base64(sha256(password + salt)) +
challenge))``, computed here on its own) and closes with 4009 on a wrong one, answers
``Identified`` (op 2), and answers each ``Request`` (op 6) with a ``RequestResponse`` (op 7)
after an unrelated ``Event`` (op 5), as OBS may. ``SendStreamCaption`` succeeds (code 100)
while ``streaming`` and fails with 501 (OutputNotRunning) otherwise, like OBS. Each caption must
have at most two rows of at most 32 characters. ``drop_next`` closes the TCP connection on the
next request (the client must reconnect). Problems go to ``violations``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve


class FakeObs:
    def __init__(self, password: str = "") -> None:
        self.password = password
        self.streaming = True
        self.drop_next = False
        self.captions: list[str] = []
        self.refused = 0
        self.connections = 0
        self.identified = 0
        self.violations: list[str] = []
        self._server: Server | None = None
        self.changed = asyncio.Event()

    async def start(self) -> FakeObs:
        self._server = await serve(self._serve, "127.0.0.1", 0,
                                   subprotocols=["obswebsocket.json"])  # type: ignore[list-item]
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, ws: ServerConnection) -> None:
        self.connections += 1
        if ws.subprotocol != "obswebsocket.json":
            self.violations.append(f"subprotocol {ws.subprotocol!r}")
        hello: dict[str, Any] = {"obsWebSocketVersion": "5.1.0", "rpcVersion": 1}
        salt = base64.b64encode(secrets.token_bytes(32)).decode()
        challenge = base64.b64encode(secrets.token_bytes(32)).decode()
        if self.password:
            hello["authentication"] = {"challenge": challenge, "salt": salt}
        await ws.send(json.dumps({"op": 0, "d": hello}))
        identify = json.loads(await ws.recv())
        d = identify.get("d") or {}
        if identify.get("op") != 1 or d.get("rpcVersion") != 1:
            self.violations.append(f"identify {identify!r}")
            await ws.close(4006, "bad identify")
            return
        if self.password:
            secret = base64.b64encode(
                hashlib.sha256((self.password + salt).encode()).digest()).decode()
            want = base64.b64encode(
                hashlib.sha256((secret + challenge).encode()).digest()).decode()
            if d.get("authentication") != want:
                self.refused += 1
                await ws.close(4009, "Authentication failed.")
                return
        await ws.send(json.dumps({"op": 2, "d": {"negotiatedRpcVersion": 1}}))
        self.identified += 1
        async for raw in ws:
            message = json.loads(raw)
            if self.drop_next:
                self.drop_next = False
                ws.transport.abort()
                return
            if message.get("op") != 6:
                self.violations.append(f"unexpected op {message.get('op')}")
                continue
            d = message.get("d") or {}
            text = (d.get("requestData") or {}).get("captionText")
            if d.get("requestType") != "SendStreamCaption" or not isinstance(d.get("requestId"), str) \
                    or not isinstance(text, str):
                self.violations.append(f"request {message!r}")
                continue
            rows = text.split("\n")
            if len(rows) > 2 or any(len(r) > 32 for r in rows):
                self.violations.append(f"caption rows {rows!r}")
            await ws.send(json.dumps({"op": 5, "d": {"eventType": "StreamStateChanged",
                                                     "eventIntent": 64, "eventData": {}}}))
            if self.streaming:
                self.captions.append(text)
                status = {"result": True, "code": 100}
            else:
                status = {"result": False, "code": 501, "comment": "the stream is not running"}
            await ws.send(json.dumps({"op": 7, "d": {
                "requestType": "SendStreamCaption", "requestId": d["requestId"],
                "requestStatus": status}}))
            self.changed.set()
