"""The daemon's control socket: ``captiond status`` asks the running daemon how it is doing.

A unix stream socket at ``$XDG_RUNTIME_DIR/captiond/control.sock`` (``/run/captiond`` for the
system-wide unit, ``/tmp/captiond-UID`` when there is no runtime directory). Protocol: the
client connects and sends one line, ``status\\n``; the daemon answers one line of JSON and
closes. Why a socket of its own and not the overlay's HTTP ``/api/status``: it works with the
overlay disabled or bound elsewhere, needs no token (the directory is 0700 and the socket 0600,
so only the same user gets in), and finding it needs no host/port guessing.

Bounded: a request line is at most :data:`MAX_REQUEST_BYTES` and must arrive within
:data:`REQUEST_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captiond.errors import CaptiondError

log = logging.getLogger("captiond.control")

MAX_REQUEST_BYTES = 256
REQUEST_TIMEOUT_S = 2.0
#: How long ``captiond status`` waits for the daemon's answer.
CLIENT_TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 1_000_000
SOCKET_NAME = "control.sock"


def runtime_dir(env: dict[str, str] | None = None) -> Path:
    """Where the control socket lives (the unit's ``RuntimeDirectory=captiond``)."""
    env = dict(os.environ) if env is None else env
    if env.get("RUNTIME_DIRECTORY"):  # set by systemd from RuntimeDirectory=
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "captiond"
    return Path(f"/tmp/captiond-{os.getuid()}")


def socket_path(env: dict[str, str] | None = None) -> Path:
    return runtime_dir(env) / SOCKET_NAME


class ControlServer:
    """Serves ``status`` on the control socket. ``status()`` is called on the event loop."""

    def __init__(self, path: Path, status: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._status = status
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._another_daemon_answers():
            raise CaptiondError(
                f"another captiond is running (its control socket {self.path} answers); "
                "stop it first (systemctl --user stop captiond), or give this one another "
                "runtime directory (XDG_RUNTIME_DIR)"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that was killed
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        log.info("control.listening path=%s", self.path)

    def _another_daemon_answers(self) -> bool:
        if not self.path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(self.path))
            except OSError:
                return False
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            command = line[:MAX_REQUEST_BYTES].decode("utf-8", "replace").strip()
            if command == "status":
                answer: dict[str, Any] = self._status()
            else:
                answer = {"error": f"unknown command {command!r} (the only one is: status)"}
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("control.failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def query_status(path: Path, timeout_s: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """Ask the daemon at ``path``; raises CaptiondError with a clear message if none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise CaptiondError(
                f"no captiond daemon is running (nothing answers on {path}); start one with "
                "`captiond run` or `systemctl --user start captiond`"
            ) from None
        except OSError as exc:
            raise CaptiondError(f"cannot reach the daemon on {path}: {exc.strerror or exc}") from None
        s.sendall(b"status\n")
        chunks: list[bytes] = []
        size = 0
        try:
            while size < MAX_ANSWER_BYTES:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except TimeoutError:
            raise CaptiondError(
                f"the daemon on {path} did not answer within {timeout_s:.0f} s (is it hung? "
                "systemd's watchdog restarts it; see journalctl --user -u captiond)"
            ) from None
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise CaptiondError(f"the daemon on {path} sent an answer that is not JSON") from None
