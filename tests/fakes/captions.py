"""Protocol-faithful stand-ins for the caption outputs' far ends, on real 127.0.0.1 sockets.

- :class:`FakeYouTube`: YouTube Live's HTTP caption ingestion. Checks POST, ``text/plain``,
  ``seq`` (+1 per new post; a retry repeats the last seq with the same body), the body format
  (``YYYY-MM-DDTHH:MM:SS.mmm region:reg1#cue1`` then the text, ending with a newline) and that
  every cue time is within :data:`YOUTUBE_SKEW_LIMIT_S` of *its* clock, which runs
  ``clock_offset_s`` away from this machine's (so the client must correct from the answers).
  Answers each post with its time.
- :class:`FakeZoom`: a Zoom meeting's caption URL: ``GET <path>/seq`` answers the last accepted
  seq; POST needs ``seq`` = last + 1 (or = last: a retry), ``lang``, ``text/plain``.
- :class:`FakeWebhook`: records JSON posts and checks the HMAC signature when given a key.

Each can ``fail`` (answer 503), ``stall`` (hold requests until released) and recover, on
command; problems go to ``violations`` for the test to assert empty.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

YOUTUBE_SKEW_LIMIT_S = 60.0
_CUE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}) region:reg1#cue1$")
#: Longest a stalled request is held (a test that forgets to release does not hang).
STALL_MAX_S = 30.0


class _Server:
    """The shared part: an HTTP server in a thread, fault switches, recorded requests."""

    path = "/"

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.fail = False
        self._release = threading.Event()
        self._release.set()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner._release.wait(STALL_MAX_S)
                status, answer = owner.handle(self.command, self.path, dict(self.headers), body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up waiting (a stalled request timed out)

            do_GET = do_POST = do_PUT = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def stall(self) -> None:
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def handle(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    def record(self, item: dict[str, Any]) -> None:
        with self.changed:
            self.requests.append(item)
            self.changed.notify_all()

    def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def _ts(text: str) -> float:
    base, _, ms = text.partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000


class FakeYouTube(_Server):
    path = "/closedcaption"

    def __init__(self, clock_offset_s: float = 0.0, stream_id: str = "ABCD-1234") -> None:
        self.clock_offset_s = clock_offset_s
        self.stream_id = stream_id
        self.last_seq = 0
        self.last_body = b""
        self.cues: list[tuple[float, str]] = []  # accepted (server time, text)
        super().__init__()

    @property
    def ingestion_url(self) -> str:
        """What YouTube Studio shows: the URL with the stream's id (and key) in the query."""
        return f"{self.url}?cid={self.stream_id}"

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def handle(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(target).query)
        problems = []
        if method != "POST":
            problems.append(f"method {method}")
        if (headers.get("Content-Type") or "").split(";")[0].strip() != "text/plain":
            problems.append(f"content type {headers.get('Content-Type')!r}")
        if query.get("cid") != [self.stream_id]:
            problems.append("the stream id is missing from the query")
        seqs = query.get("seq") or []
        if len(seqs) != 1 or not seqs[0].isdigit():
            problems.append(f"seq {seqs!r}")
        if problems:
            with self.lock:
                self.violations.extend(problems)
            return 400, b"bad request"
        if self.fail:
            self.record({"seq": int(seqs[0]), "failed": True})
            return 503, b"unavailable"
        seq = int(seqs[0])
        text = body.decode("utf-8")
        cues: list[tuple[float, str]] = []
        with self.lock:
            if seq == self.last_seq and body == self.last_body and seq:
                pass  # a retry of a post that got through but whose answer was lost
            elif seq != self.last_seq + 1:
                self.violations.append(f"seq {seq} after {self.last_seq}")
            if body:
                if not text.endswith("\n"):
                    self.violations.append("body does not end with a newline")
                lines = text.rstrip("\n").split("\n")
                if len(lines) % 2:
                    self.violations.append(f"odd number of body lines: {text!r}")
                now = self.now()
                for stamp_line, cue_text in zip(lines[::2], lines[1::2], strict=False):
                    m = _CUE_RE.match(stamp_line)
                    if not m:
                        self.violations.append(f"bad cue line {stamp_line!r}")
                        continue
                    stamp = _ts(m.group(1))
                    if abs(stamp - now) > YOUTUBE_SKEW_LIMIT_S:
                        self.violations.append(f"cue time {m.group(1)} is {stamp - now:+.0f} s "
                                               f"from the server clock")
                    if cues and stamp < cues[-1][0]:
                        self.violations.append("cue times go backwards")
                    cues.append((stamp, cue_text))
            if seq != self.last_seq:
                self.cues.extend(cues)
            self.last_seq, self.last_body = seq, body
        self.record({"seq": seq, "body": text, "cues": cues})
        ms = int(self.now() * 1000)
        answer = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"
        return 200, (answer + "\n").encode()


class FakeZoom(_Server):
    path = "/closedcaption"

    def __init__(self, last_seq: int = 0, token: str = "zoomtoken-0123456789") -> None:
        self.last_seq = last_seq
        self.token = token
        self.texts: list[str] = []
        super().__init__()

    @property
    def api_token_url(self) -> str:
        return f"{self.url}?id=200610693&ns=GZHkEA%3D%3D&expire=86400&signature={self.token}"

    def handle(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[int, bytes]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if query.get("signature") != [self.token]:
            with self.lock:
                self.violations.append("the token is missing from the query")
            return 403, b"unauthorized"
        if parts.path == self.path + "/seq":
            if method != "GET":
                self.violations.append(f"seq query by {method}")
            self.record({"op": "seq"})
            return 200, str(self.last_seq).encode()
        if parts.path != self.path or method != "POST":
            with self.lock:
                self.violations.append(f"{method} {parts.path}")
            return 405, b"method not allowed"
        problems = []
        if (headers.get("Content-Type") or "").split(";")[0].strip() != "text/plain":
            problems.append(f"content type {headers.get('Content-Type')!r}")
        if not query.get("lang") or not re.fullmatch(r"[a-z]{2}-[A-Z]{2}", query["lang"][0]):
            problems.append(f"lang {query.get('lang')!r}")
        seqs = query.get("seq") or []
        if len(seqs) != 1 or not seqs[0].isdigit():
            problems.append(f"seq {seqs!r}")
        if problems:
            with self.lock:
                self.violations.extend(problems)
            return 403, b"unauthorized"
        if self.fail:
            self.record({"seq": int(seqs[0]), "failed": True})
            return 503, b"unavailable"
        seq = int(seqs[0])
        with self.lock:
            if seq == self.last_seq + 1:
                self.last_seq = seq
                self.texts.append(body.decode("utf-8"))
            elif seq != self.last_seq:
                self.violations.append(f"seq {seq} after {self.last_seq}")
        self.record({"seq": seq, "text": body.decode("utf-8"), "lang": query["lang"][0]})
        return 200, b""


class FakeWebhook(_Server):
    path = "/hook"

    def __init__(self, key: str = "") -> None:
        self.key = key
        self.lines: list[dict[str, Any]] = []
        super().__init__()

    def handle(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[int, bytes]:
        problems = []
        if method != "POST":
            problems.append(f"method {method}")
        if (headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            problems.append(f"content type {headers.get('Content-Type')!r}")
        if self.key:
            want = "sha256=" + hmac.new(self.key.encode(), body, hashlib.sha256).hexdigest()
            got = headers.get("X-Captiond-Signature-256") or ""
            if not hmac.compare_digest(want, got):
                problems.append("bad signature")
        try:
            line = json.loads(body)
        except ValueError:
            problems.append("body is not JSON")
            line = None
        if problems:
            with self.lock:
                self.violations.extend(problems)
            return 400, b"bad request"
        if self.fail:
            self.record({"failed": True})
            return 503, b"unavailable"
        with self.lock:
            self.lines.append(line)
        self.record({"line": line})
        return 204, b""
