"""A stand-in for the Hugging Face Hub on 127.0.0.1 (``HF_ENDPOINT``): serves one model folder as
a repository, answering what huggingface_hub's ``snapshot_download`` asks for (revision info,
the file tree, and each file under ``resolve/`` with its ETag and commit headers)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """``FakeHub(repo, folder)`` serves ``folder`` as model repository ``repo``. ``requests``
    records the paths asked for."""

    def __init__(self, repo: str, folder: Path) -> None:
        self.repo = repo
        self.files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
        self.requests: list[str] = []
        self._oids = {name: hashlib.sha1(p.read_bytes()).hexdigest()
                      for name, p in self.files.items()}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str],
                      head: bool = False) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, value: object) -> None:
                self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

            def _route(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                api = f"/api/models/{hub.repo}/"
                if path.startswith(api + "revision/"):
                    return self._json({
                        "id": hub.repo, "modelId": hub.repo, "sha": COMMIT, "private": False,
                        "siblings": [{"rfilename": n} for n in hub.files],
                    })
                if path.startswith(api + "tree/"):
                    return self._json([
                        {"type": "file", "path": n, "size": p.stat().st_size, "oid": hub._oids[n]}
                        for n, p in hub.files.items()
                    ])
                prefix = f"/{hub.repo}/resolve/"
                if path.startswith(prefix):
                    _rev, _, name = path[len(prefix):].partition("/")
                    if name in hub.files:
                        body = hub.files[name].read_bytes()
                        return self._send(200, body, {
                            "ETag": f'"{hub._oids[name]}"',
                            "X-Repo-Commit": COMMIT,
                            "Content-Type": "application/octet-stream",
                        }, head=head)
                self._send(404, b'{"error": "not found"}', {
                    "Content-Type": "application/json", "X-Error-Code": "EntryNotFound"})

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._route(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._route(head=True)

        return Handler
