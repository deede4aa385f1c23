"""Who may load what from the overlay server: pure decisions on a request's host, origin and token.

The server binds 127.0.0.1 by default. Then the ``Host`` header must name a loopback host, which
stops DNS-rebinding pages (``evil.example`` resolving to 127.0.0.1) from reading captions or the
API. Bound to any other address, every page except static assets needs the token. WebSocket
connections whose ``Origin`` is not the page's own origin are refused either way, so a web page
open in the streamer's browser cannot subscribe to the feed.

No I/O, no clock: :func:`decide` takes plain values and returns an :class:`Denied` or None.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal: the HTTP status and a short message for the client (no secrets, no paths)."""

    status: int
    message: str


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost names (a bind address or a Host header's name)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8765`` -> ``::1``, ``a:80`` -> ``a``)."""
    header = host_header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def token_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time token comparison; no expected token means everyone matches."""
    if not expected:
        return True
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def same_origin(origin: str, host_header: str) -> bool:
    """True if a browser ``Origin`` names the host the request was sent to (http or https)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()


def decide(
    *,
    bind_loopback: bool,
    token: str | None,
    host_headers: list[str],
    origin_headers: list[str],
    given_token: str | None,
    needs_token: bool,
    check_origin: bool,
) -> Denied | None:
    """None if the request may proceed, else why not.

    ``needs_token``: the route is protected when a token is set (pages, feed, API; not static
    assets). ``check_origin``: the Origin rule applies (the feed and the API: browsers always
    send Origin on WebSocket connections and cross-site requests; programs send none and pass).
    """
    if len(host_headers) != 1:
        return Denied(400, "exactly one Host header is required\n")
    host = host_headers[0]
    if bind_loopback and not is_loopback(host_name(host)):
        return Denied(
            403,
            "this overlay server only answers to 127.0.0.1 or localhost "
            "(open it as http://127.0.0.1:PORT/, or bind another address with a token)\n",
        )
    if len(origin_headers) > 1:
        return Denied(400, "more than one Origin header\n")
    if check_origin and origin_headers and not same_origin(origin_headers[0], host):
        return Denied(403, "connections from other web sites are refused\n")
    if needs_token and not token_matches(token, given_token):
        if given_token:
            return Denied(403, "wrong overlay token (use the token captiond printed, or overlay.token)\n")
        return Denied(
            401,
            "this overlay needs its token: add ?token=... to the URL (captiond printed it when it "
            "was generated; it is the overlay.token setting or the overlay-token file in the "
            "data directory)\n",
        )
    return None
