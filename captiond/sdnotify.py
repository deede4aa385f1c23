"""The systemd notification protocol (``sd_notify``), spoken directly: no library needed.

A service started with ``Type=notify`` finds a unix datagram socket in ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the Linux abstract namespace) and sends newline-separated
``KEY=VALUE`` assignments in one datagram: ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``,
``STOPPING=1``. With ``WatchdogSec=`` set, systemd also passes ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``); the service must send ``WATCHDOG=1`` more often than that or be restarted.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the daemon never needs to
know how it was started. Sending never blocks and never raises: a notification that cannot be
delivered is logged once and dropped (systemd then acts on its own timeouts).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("captiond.sdnotify")

#: systemd truncates STATUS= beyond this; keep lines short and single-line.
MAX_STATUS_CHARS = 200


def socket_address(value: str) -> str | bytes | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value, or None if it is unusable.

    ``@name`` is the abstract namespace (a leading NUL byte); absolute paths are file sockets.
    systemd also allows ``vsock:`` addresses, which captiond does not need and ignores.
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, or None if not asked.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; another pid
    (a child that inherited the environment) must not ping.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return usec / 1_000_000 / 2


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = watchdog_interval_s(env) if self.address is not None else None
        self._sock: socket.socket | None = None
        self._failed = False
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True if it was handed to the socket."""
        if self.address is None:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
            return True
        except OSError as exc:
            # The manager went away or the socket is full: nothing useful to do but say so once.
            if not self._failed:
                log.warning("sdnotify.send_failed error=%r", str(exc))
                self._failed = True
            return False

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1, "MAINPID": os.getpid()}
        if status:
            fields["STATUS"] = _one_line(status)
            self._last_status = fields["STATUS"]  # type: ignore[assignment]
        return self.send(**fields)

    def status(self, text: str) -> bool:
        """``STATUS=text``; an unchanged status is not sent again."""
        text = _one_line(text)
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = _one_line(status)
        return self.send(**fields)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_STATUS_CHARS]
