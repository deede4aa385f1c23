"""A protocol-faithful fake of OpenAI's Transcriptions endpoint for ``gpt-4o-transcribe-diarize``,
on a real socket (``127.0.0.1:0``).

``POST /v1/audio/transcriptions`` with ``Authorization: Bearer <key>`` and a
``multipart/form-data`` body, parsed as a server would: the form fields are validated with
the ``openai`` package's own request type (``TranscriptionCreateParamsNonStreaming``) plus the
rules the service adds for this model (``response_format=diarized_json``; ``chunking_strategy``
for audio over 30 s; no ``prompt``; at most four known speakers, names and references in
pairs, each reference a data URL of 2-10 s of audio; files up to 25 MB). The answer is a
``TranscriptionDiarized`` built from the package's models.

"Diarization" is real, on the audio received: the test's voices are tones, one frequency
per person (:data:`VOICES`); the fake decodes the upload, finds which frequencies sound in
each 20 ms frame and returns one segment per stretch of each. A known speaker's reference is
decoded too and named by its frequency; other voices are labelled ``A``, ``B``, ... in order
of appearance, per request, as the service does.

Hostile where the real one is (:class:`Faults`): 429 with ``retry-after``, 500s, a request
that stalls past the client's timeout, a file refused for size (413), and segments that
overlap or fall outside the audio.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pydantic
from openai.types.audio.transcription_create_params import ChunkingStrategy
from openai.types.audio.transcription_diarized import TranscriptionDiarized, UsageDuration
from openai.types.audio.transcription_diarized_segment import TranscriptionDiarizedSegment
from openai.types.audio_response_format import AudioResponseFormat

RATE = 16_000
FRAME = RATE // 50  # 20 ms
#: Frequencies the fake hears as voices (Hz); a test gives each person one of them.
VOICES = tuple(300 + 125 * i for i in range(24))
#: A voice sounds in a frame when its tone's amplitude is above this.
PRESENT = 0.02
#: Quiet shorter than this inside one voice's stretch does not end its segment.
BRIDGE_FRAMES = 10
MAX_FILE_BYTES = 25 * 1024 * 1024
MODEL = "gpt-4o-transcribe-diarize"


@dataclass
class Faults:
    """Misbehaviour, counted per request (the first N requests get it)."""

    rate_limited: int = 0
    retry_after_s: float = 0.05
    server_errors: int = 0
    stall: int = 0
    stall_s: float = 3.0
    #: Files above this many bytes are refused with 413 (the real limit: 25 MB).
    max_bytes: int = MAX_FILE_BYTES
    #: Add segments that overlap others and ones outside the audio (negative, past the end).
    junk_segments: bool = False
    #: Every request fails with this status (a service that is down), when set.
    always: int | None = None


@dataclass
class Request:
    fields: dict[str, Any]
    file_name: str
    file_bytes: int
    duration_s: float
    authorized: bool


@dataclass
class FakeTranscriptions:
    key: str = "sk-test-0123456789abcdef"
    faults: Faults = field(default_factory=Faults)
    requests: list[Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    answered: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def received(self) -> int:
        """Requests that reached the endpoint, answered or not."""
        return self._seen

    def __enter__(self) -> FakeTranscriptions:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the protocol ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if h.path != "/v1/audio/transcriptions":
            return _send(h, 404, _error("not found", "invalid_request_error"))
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length)
        auth = h.headers.get("authorization") == f"Bearer {self.key}"
        with self._lock:
            n = self._seen
            self._seen += 1
        try:
            fields, name, data = _parse_multipart(h.headers.get("content-type", ""), body)
        except ValueError as exc:
            self.violations.append(f"multipart: {exc}")
            return _send(h, 400, _error(str(exc), "invalid_request_error"))
        if not auth:
            return _send(h, 401, _error("Incorrect API key provided", "invalid_request_error"))
        f = self.faults
        if f.always is not None:
            return _send(h, f.always, _error("service unavailable", "server_error"))
        if n < f.stall:
            time.sleep(f.stall_s)
            return _send(h, 500, _error("stalled", "server_error"))
        if n < f.stall + f.rate_limited:
            return _send(h, 429, _error("Rate limit reached", "rate_limit_error"),
                         {"retry-after": str(max(1, round(f.retry_after_s))),
                          "retry-after-ms": str(int(f.retry_after_s * 1000))})
        if n < f.stall + f.rate_limited + f.server_errors:
            return _send(h, 500, _error("The server had an error", "server_error"))
        if len(data) > f.max_bytes:
            return _send(h, 413, _error(
                f"Maximum content size limit ({f.max_bytes}) exceeded ({len(data)} bytes read)",
                "invalid_request_error"))
        try:
            audio = _decode(data)
        except Exception as exc:  # noqa: BLE001 - what the service says about a bad file
            self.violations.append(f"undecodable file {name}: {exc}")
            return _send(h, 400, _error("Audio file might be corrupted or unsupported",
                                        "invalid_request_error"))
        duration = len(audio) / RATE
        problems = _check(fields, duration)
        refs: dict[int, str] = {}
        if not problems:
            for nm, ref in zip(fields.get("known_speaker_names", []),
                               fields.get("known_speaker_references", []), strict=True):
                try:
                    clip = _decode(_data_url(ref))
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"known_speaker_references for {nm}: {exc}")
                    continue
                if not 2.0 <= len(clip) / RATE <= 10.0:
                    problems.append(f"reference for {nm} is {len(clip) / RATE:.1f} s (2-10 s)")
                    continue
                voice = _dominant(clip)
                if voice is not None:
                    refs[voice] = nm
        self.requests.append(Request({k: v for k, v in fields.items()
                                      if k != "known_speaker_references"},
                                     name, len(data), duration, auth))
        if problems:
            self.violations += problems
            return _send(h, 400, _error("; ".join(problems), "invalid_request_error"))
        segments = _diarize(audio, refs)
        if f.junk_segments and segments:
            first = segments[0]
            segments += [(first[0] + 0.1, first[1] + 0.5, first[2]),  # overlaps
                         (-3.0, -1.0, first[2]), (duration + 5, duration + 9, first[2]),
                         (duration - 0.5, duration + 30.0, first[2])]
        answer = TranscriptionDiarized(
            duration=duration, task="transcribe",
            text=" ".join("talk" for _ in segments),
            segments=[TranscriptionDiarizedSegment(
                id=f"seg_{i}", start=a, end=b, speaker=who, text="talk",
                type="transcript.text.segment") for i, (a, b, who) in enumerate(segments)],
            usage=UsageDuration(seconds=duration, type="duration"))
        self.answered += 1
        _send(h, 200, answer.model_dump(mode="json", exclude_none=True))


def _check(fields: dict[str, Any], duration: float) -> list[str]:
    """The request's fields against the ``openai`` package's types and this model's rules."""
    problems = []
    if fields.get("model") != MODEL:
        problems.append(f"model {fields.get('model')!r} (this fake serves {MODEL})")
    try:
        pydantic.TypeAdapter(AudioResponseFormat).validate_python(fields.get("response_format"))
    except pydantic.ValidationError as exc:
        problems.append(f"response_format: {exc.errors()[0]['msg']}")
    if fields.get("response_format") != "diarized_json":
        problems.append("response_format must be diarized_json for speaker labels")
    chunking = fields.get("chunking_strategy")
    if chunking is not None:
        try:
            value = json.loads(chunking) if chunking.startswith("{") else chunking
            pydantic.TypeAdapter(ChunkingStrategy).validate_python(value)
        except (pydantic.ValidationError, ValueError) as exc:
            problems.append(f"chunking_strategy: {exc}")
    elif duration > 30.0:
        problems.append("chunking_strategy is required for audio longer than 30 seconds")
    if "prompt" in fields:
        problems.append("prompt is not supported by gpt-4o-transcribe-diarize")
    names = fields.get("known_speaker_names", [])
    refs = fields.get("known_speaker_references", [])
    if len(names) != len(refs):
        problems.append("known_speaker_names and known_speaker_references differ in length")
    if len(names) > 4:
        problems.append(f"{len(names)} known speakers (at most 4)")
    unknown = set(fields) - {"model", "response_format", "chunking_strategy", "language",
                             "known_speaker_names", "known_speaker_references", "temperature"}
    if unknown:
        problems.append(f"unexpected fields {sorted(unknown)}")
    return problems


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], str, bytes]:
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"content-type {content_type!r} is not multipart/form-data")
    msg = BytesParser(policy=email_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not msg.is_multipart():
        raise ValueError("body is not a multipart message")
    fields: dict[str, Any] = {}
    name, data = "", b""
    for part in msg.iter_parts():
        key = part.get_param("name", header="content-disposition")
        if key is None:
            raise ValueError("a part without a name")
        payload = part.get_payload(decode=True) or b""
        if key == "file":
            name = part.get_filename() or ""
            data = payload
        elif key.endswith("[]"):
            fields.setdefault(key[:-2], []).append(payload.decode())
        else:
            fields[key] = payload.decode()
    if not data:
        raise ValueError("no file part")
    return fields, name, data


def _data_url(ref: str) -> bytes:
    head, _, b64 = ref.partition(",")
    if not head.startswith("data:audio/") or not head.endswith(";base64"):
        raise ValueError(f"not an audio data URL ({head[:30]!r})")
    return base64.b64decode(b64, validate=True)


def _decode(data: bytes) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    parts = []
    with av.open(io.BytesIO(data)) as c:
        for frame in c.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _levels(audio: np.ndarray) -> np.ndarray:
    """Amplitude of each voice's tone per 20 ms frame: (frames, voices)."""
    n = len(audio) // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME) * np.hanning(FRAME)
    spec = np.abs(np.fft.rfft(frames, axis=1)) * 2 / (FRAME / 2)
    bins = [round(f * FRAME / RATE) for f in VOICES]
    return spec[:, bins]


def _dominant(clip: np.ndarray) -> int | None:
    lv = _levels(clip)
    if not len(lv):
        return None
    mean = lv.mean(axis=0)
    return int(mean.argmax()) if mean.max() > PRESENT else None


def _diarize(audio: np.ndarray, refs: dict[int, str]) -> list[tuple[float, float, str]]:
    lv = _levels(audio) > PRESENT
    stretches: list[tuple[int, int, int]] = []
    for v in range(len(VOICES)):
        on = np.flatnonzero(lv[:, v])
        if not len(on):
            continue
        start = prev = int(on[0])
        for i in on[1:]:
            if i - prev > BRIDGE_FRAMES:
                stretches.append((start, prev + 1, v))
                start = int(i)
            prev = int(i)
        stretches.append((start, prev + 1, v))
    stretches.sort()
    letters: dict[int, str] = {}
    out = []
    for a, b, v in stretches:
        if v in refs:
            who = refs[v]
        else:
            if v not in letters:
                letters[v] = chr(ord("A") + len(letters))
            who = letters[v]
        out.append((a * FRAME / RATE, b * FRAME / RATE, who))
    return out


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _send(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any],
          headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    try:
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its timeout)
