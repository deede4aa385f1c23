"""A fake OpenAI Responses API (``POST /v1/responses``) on a real socket (127.0.0.1:0).

Each request is checked as the service would: the bearer key, and the body validated against
the ``openai`` package's own request type (``ResponseCreateParamsNonStreaming``, no unknown
keys) with a strict JSON-schema text format. Answers are ``openai.types.responses.Response``
objects (validated by the package before they are sent), scripted per request:

    valid       minutes made from the transcript it was sent, citing its real line ids (or,
                for a merge request ``meeting_summary``, one summary point per part)
    bad_cites   valid, but some cites name lines that do not exist
    invalid     JSON that breaks the schema (a missing key)
    incomplete  ``status: incomplete`` (max_output_tokens), text cut short
    refusal     a ``refusal`` content part
    429         HTTP 429 with ``retry-after-ms``
    timeout     no answer until the client has given up
    401         HTTP 401 whose message repeats the key (as a careless proxy might)

After the script runs out, every answer is ``valid``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pydantic
from openai.types.responses import Response
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming

_REQUEST = pydantic.TypeAdapter(ResponseCreateParamsNonStreaming)
_LINE = re.compile(r"^L(\d+) \[[^\]]+\] (?:([^:\s]+): )?(.*)$")
MAX_BODY = 8 * 1024 * 1024


class FakeResponses:
    def __init__(self, key: str, script: Iterable[str] = (), *, hang_s: float = 3.0) -> None:
        self.key = key
        self.script = list(script)
        self.hang_s = hang_s
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.answered: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/responses"

    def __enter__(self) -> FakeResponses:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- one request -------------------------------------------------------------------

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: Any,
               headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str,
               headers: dict[str, str] | None = None) -> None:
        self._reply(h, status, {"error": {"message": message, "type": "invalid_request_error",
                                          "param": None, "code": None}}, headers)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if h.path != "/v1/responses":
            return self._error(h, 404, f"no route {h.path}")
        length = int(h.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self._error(h, 400, "bad length")
        raw = h.rfile.read(length)
        with self._lock:
            mode = self.script.pop(0) if self.script else "valid"
        if mode == "401":
            with self._lock:
                self.answered.append(mode)
            return self._error(h, 401, f"Incorrect API key provided: {self.key}x.")
        if h.headers.get("Authorization") != f"Bearer {self.key}":
            self.problems.append("wrong or missing bearer key")
            return self._error(h, 401, "Incorrect API key provided.")
        try:
            body = json.loads(raw)
            _REQUEST.validate_python(body, strict=False)
        except (ValueError, pydantic.ValidationError) as exc:
            self.problems.append(f"request not a ResponseCreateParams: {exc}")
            return self._error(h, 400, "invalid request")
        unknown = set(body) - set(ResponseCreateParamsNonStreaming.__annotations__)
        fmt = (body.get("text") or {}).get("format") or {}
        if unknown or fmt.get("type") != "json_schema" or fmt.get("strict") is not True:
            self.problems.append(f"unknown keys {unknown} or not a strict json_schema: {fmt}")
            return self._error(h, 400, "invalid request")
        with self._lock:
            self.requests.append(body)
            self.answered.append(mode)
        if mode == "429":
            return self._error(h, 429, "Rate limit reached.", {"retry-after-ms": "50"})
        if mode == "timeout":
            time.sleep(self.hang_s)
            return None
        text = body["input"][0]["content"][0]["text"]
        merging = fmt.get("name") == "meeting_summary"
        minutes = self.summary_for(text) if merging else self.minutes_for(text)
        status, incomplete = "completed", None
        content: list[dict[str, Any]]
        out_text = json.dumps(minutes)
        if mode == "invalid":
            del minutes["summary" if merging else "decisions"]
            out_text = json.dumps(minutes)
        elif mode == "bad_cites" and not merging:
            minutes["decisions"].append({"text": "We will buy a yacht", "lines": [999_999]})
            for a in minutes["actions"]:
                a["lines"] = [*a["lines"], 888_888]
            out_text = json.dumps(minutes)
        elif mode == "incomplete":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            out_text = out_text[: len(out_text) // 2]
        if mode == "refusal":
            content = [{"type": "refusal", "refusal": "I'm sorry, I can't help with that."}]
        else:
            content = [{"type": "output_text", "text": out_text, "annotations": []}]
        answer = {
            "id": "resp_fake", "object": "response", "created_at": time.time(),
            "model": body["model"], "status": status, "incomplete_details": incomplete,
            "error": None, "instructions": body.get("instructions"), "metadata": {},
            "output": [{"id": "msg_fake", "type": "message", "role": "assistant",
                        "status": "completed" if status == "completed" else "incomplete",
                        "content": content}],
            "parallel_tool_calls": True, "temperature": None, "tool_choice": "auto",
            "tools": [], "top_p": None,
            "usage": {"input_tokens": len(text) // 4, "output_tokens": len(out_text) // 4,
                      "total_tokens": len(text) // 4 + len(out_text) // 4,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }
        Response.model_validate(answer)  # the package's own answer type
        return self._reply(h, 200, answer)

    @staticmethod
    def summary_for(text: str) -> dict[str, Any]:
        """The merge request's answer: one point per part, citing the ids the parts cite."""
        points = []
        for part in re.split(r"^## ", text, flags=re.M)[1:]:
            ids = [int(i) for i in re.findall(r"\bL(\d+)\b", part)][:3]
            points.append({"text": f"Overall, {part.splitlines()[0].strip()} went over the "
                                   "design.", "lines": ids})
        return {"summary": points}

    @staticmethod
    def minutes_for(text: str) -> dict[str, Any]:
        """Minutes a careful model would write of these lines, citing their real ids."""
        lines = []
        for raw in text.splitlines():
            m = _LINE.match(raw)
            if m:
                lines.append((int(m.group(1)), m.group(2), m.group(3)))
        ids = [i for i, _, _ in lines]
        decisions = [{"text": t, "lines": [i]} for i, _, t in lines
                     if re.search(r"\b(we'll go with|we agreed|let's use)\b", t, re.I)]
        actions = [{"task": re.sub(r"^.*?\bI'll\s+", "", t), "owner": who,
                    "due": "Friday" if "Friday" in t else None, "lines": [i]}
                   for i, who, t in lines if re.search(r"\bI'll\b", t)]
        questions = [{"text": t, "lines": [i]} for i, _, t in lines if t.endswith("?")][:5]
        return {
            "summary": [{"text": "The team reviewed the remote control design.",
                         "lines": ids[:2]}],
            "topics": [{"title": "Remote control design", "summary": "Buttons and case.",
                        "first_line": ids[0], "last_line": ids[-1], "lines": ids[:1]}],
            "decisions": decisions[:60], "actions": actions[:60], "questions": questions,
        }
