"""``captiond speakers``: a stored session's kept audio to ``gpt-4o-transcribe-diarize``, its
turns back onto the stored lines.

Plan, then I/O: the audio is decoded chunk by chunk (:func:`captiond.speakers.plan.plan_chunks`,
each under the model's duration limit and the 25 MB upload limit), each chunk is sent as Opus
in WebM through the Transcriptions API (multipart upload, the ``openai`` package's client,
which retries 429 (honouring ``retry-after``), 5xx and timeouts with backoff) and its turns
are stored at once (``speaker_turns``). Only when every chunk has its turns are the lines
labelled, in one transaction: a run that fails leaves every line as it was, and the next run
sends only the chunks that have no turns yet.

The API key is read as the engines read it (``OPENAI_API_KEY`` or ``openai.api_key_file``)
and never reaches a log line, the database or an error message.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captiond.audio.block import float_to_pcm16
from captiond.audio.keep import KEEP_RATE, audio_dir, audio_path, iter_audio
from captiond.errors import CaptiondError
from captiond.speakers.attribute import LineIn, Turn, Word, attribute
from captiond.speakers.plan import (
    CLIP_MAX_MS,
    CLIP_MIN_MS,
    MAX_KNOWN,
    Chunk,
    Labels,
    RawSegment,
    choose_references,
    clean,
    plan_chunks,
    solo_stretches,
)

log = logging.getLogger("captiond.speakers")

#: The Transcriptions API refuses files above 25 MB; chunks stay well under it.
MAX_UPLOAD_BYTES = 24 * 1024 * 1024
#: Bit rate of uploaded chunks (Opus; 20 minutes is about 3.6 MB).
UPLOAD_BITRATE = 24_000
#: Attempts per chunk the client makes (429 with retry-after, 5xx, timeouts), then the run stops.
MAX_RETRIES = 4


class SpeakersError(CaptiondError):
    """Speaker labelling could not finish; the lines are as they were."""


@dataclass
class Outcome:
    session_id: int
    chunks: int
    sent: int
    audio_s: float
    cost_usd: float
    lines: int
    split: int
    labels: dict[str, float] = field(default_factory=dict)


def estimate_cost(audio_s: float, price_per_min: float) -> float:
    return audio_s / 60.0 * price_per_min


def wav_bytes(samples: np.ndarray, rate: int = KEEP_RATE) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_pcm16(samples))
    return buf.getvalue()


def data_url(wav: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")


def check_clip(samples: np.ndarray, where: str) -> None:
    """A reference clip must be 2-10 s of sound."""
    ms = len(samples) * 1000 // KEEP_RATE
    if not 2_000 <= ms <= 10_000:
        raise SpeakersError(f"{where} is {ms / 1000:.1f} s long; a reference clip must be "
                            "2 to 10 s of one person speaking (cut it, e.g. with ffmpeg -t 8)")
    if float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) < 1e-3:
        raise SpeakersError(f"{where} is silent; record the person speaking")


def decode_clip(path: Path) -> np.ndarray:
    from captiond.audio.sources import decode_file_chunks

    try:
        parts = list(decode_file_chunks(path, KEEP_RATE))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the same to the user
        raise SpeakersError(f"cannot read {path}: {exc} (give a WAV, FLAC, Ogg or MP3 file)"
                            ) from None
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def encode_chunk(samples: np.ndarray) -> bytes:
    """Opus in WebM, in memory (a format the Transcriptions API takes)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as container:
        stream: Any = container.add_stream("libopus", rate=KEEP_RATE, layout="mono")
        stream.bit_rate = UPLOAD_BITRATE
        step = KEEP_RATE
        for pos in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[pos:pos + step], np.float32).reshape(1, -1),
                format="flt", layout="mono")
            frame.sample_rate = KEEP_RATE
            frame.pts = pos
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def iter_chunk_audio(path: Path, chunks: list[Chunk]) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Each chunk's samples, decoding the kept file once from start to end (bounded memory:
    one chunk at a time)."""
    pending: list[np.ndarray] = []
    have = 0
    it = iter(chunks)
    current = next(it, None)

    for data in iter_audio(path):
        pending.append(data)
        have += len(data)
        while current is not None and have >= current.end_ms * KEEP_RATE // 1000 - \
                current.start_ms * KEEP_RATE // 1000:
            need = (current.end_ms - current.start_ms) * KEEP_RATE // 1000
            joined = np.concatenate(pending)
            yield current, joined[:need]
            pending, have = [joined[need:]], len(joined) - need
            current = next(it, None)
    if current is not None:
        joined = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        if len(joined):
            yield current, joined


def session_lines(store: Any, session_id: int) -> tuple[list[LineIn], int]:
    rows = store.lines(session_id, track=None, statuses=("final",))
    out = []
    for r in rows:
        words = tuple(Word(int(w["start_ms"]), int(w["end_ms"]), str(w["text"]),
                           float(w.get("probability", 1.0)))
                      for w in (r.words or []) if isinstance(w, dict) and "start_ms" in w)
        out.append(LineIn(r.id, r.audio_start_ms, r.audio_end_ms, r.text, words,
                          splittable=r.track == "original"))
    return out, len(rows)


Transcribe = Callable[[str, bytes, list[str], list[str]], Any]


def openai_transcriber(cfg: Any, key: str) -> Transcribe:
    """Sends one chunk; returns a ``TranscriptionDiarized``. Errors become SpeakersError with
    the fix, never showing the key."""
    import openai

    client = openai.OpenAI(api_key=key, base_url=cfg["speakers.url"],
                           max_retries=MAX_RETRIES, timeout=cfg["speakers.timeout_s"])
    model = cfg["speakers.model"]

    def send(name: str, data: bytes, names: list[str], refs: list[str]) -> Any:
        extra: dict[str, Any] = {}
        if names:
            extra = {"known_speaker_names": names, "known_speaker_references": refs}
        try:
            return client.audio.transcriptions.create(
                model=model, file=(name, data, "audio/webm"),
                response_format="diarized_json", chunking_strategy="auto", **extra)
        except openai.AuthenticationError:
            raise SpeakersError("openai refused the key: HTTP 401 (check OPENAI_API_KEY or "
                                "openai.api_key_file)") from None
        except openai.RateLimitError as exc:
            raise SpeakersError(f"openai kept answering 429 after {MAX_RETRIES} retries "
                                f"({_reason(exc)}); run the command again later") from None
        except openai.APITimeoutError:
            raise SpeakersError(f"openai did not answer within {cfg['speakers.timeout_s']} s "
                                f"({MAX_RETRIES} retries; raise speakers.timeout_s or try "
                                "again later)") from None
        except openai.APIConnectionError as exc:
            raise SpeakersError(f"cannot reach {cfg['speakers.url']}: {type(exc).__name__} "
                                "(check the network or speakers.url)") from None
        except openai.APIStatusError as exc:
            if exc.status_code == 413:
                raise SpeakersError(
                    f"openai refused a chunk of {len(data) / 1e6:.1f} MB as too large (HTTP "
                    "413); lower speakers.chunk_s") from None
            raise SpeakersError(f"openai answered HTTP {exc.status_code} ({_reason(exc)}) "
                                f"after {MAX_RETRIES} retries; try again later") from None

    return send


def _reason(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return str(msg)[:200]
    return type(exc).__name__


def label_session(store: Any, cfg: Any, session_id: int, transcribe: Transcribe,
                  *, report: Callable[[str], None] = lambda s: None) -> Outcome:
    """Diarize the session's kept audio (the chunks not done before) and label its lines."""
    path = audio_path(audio_dir(cfg), session_id)
    if not path.exists():
        raise SpeakersError(
            f"session {session_id} has no kept audio in {path.parent} (set audio.keep = true "
            "before a meeting to label its speakers)")
    row = store.resolve_session(session_id)
    duration_ms = int(round((row.audio_seconds or 0.0) * 1000))
    if duration_ms <= 0:
        # Counted while decoding, never held whole (a crashed session of hours).
        duration_ms = sum(len(piece) for piece in iter_audio(path)) * 1000 // KEEP_RATE
    chunk_ms = int(cfg["speakers.chunk_s"] * 1000)
    chunks = plan_chunks(duration_ms, chunk_ms)
    known = store.known_speakers()
    named = [k.name for k in known][:MAX_KNOWN]
    named_refs = {k.name: data_url(k.clip) for k in known}
    stored = store.speaker_turns(session_id)
    meta = dict(row.meta or {})
    if meta.get("speaker_chunk_ms") != chunk_ms:
        # Turns stored for other chunk boundaries (speakers.chunk_s changed): start over.
        if stored:
            store.clear_speaker_turns(session_id)
            stored = []
        meta["speaker_chunk_ms"] = chunk_ms
        store.update_session(session_id, meta=meta)
    done = {t.chunk for t in stored}
    labels = Labels(named)
    labels.taken(t.label for t in stored)
    turns: list[Turn] = [Turn(t.start_ms, t.end_ms, t.label) for t in stored]
    clips: dict[str, np.ndarray] = {}
    sent = 0
    billed_s = 0.0
    for chunk, samples in iter_chunk_audio(path, chunks):
        if chunk.index not in done:
            spans = solo_stretches([t for t in turns if t.end_ms <= chunk.start_ms])
            chosen = choose_references(turns, named, clips={k: v for k, v in spans.items()
                                                            if k in clips})
            refs = [named_refs[n] if n in named_refs else data_url(wav_bytes(clips[n]))
                    for n in chosen]
            data = encode_chunk(samples)
            if len(data) > MAX_UPLOAD_BYTES:
                raise SpeakersError(f"chunk {chunk.index + 1} is {len(data) / 1e6:.1f} MB, over "
                                    "the 25 MB upload limit; lower speakers.chunk_s")
            report(f"chunk {chunk.index + 1}/{len(chunks)}: {len(data) / 1e6:.2f} MB, "
                   f"{len(samples) / KEEP_RATE:.0f} s, known speakers: "
                   f"{', '.join(chosen) or 'none'}")
            result = transcribe(f"session-{session_id}-chunk-{chunk.index + 1}.webm", data,
                                chosen, refs)
            raw = [RawSegment(s.start, s.end, s.speaker, s.text) for s in result.segments]
            mapped = labels.map(clean(raw, chunk), chosen)
            store.save_speaker_turns(session_id, chunk.index, mapped)
            turns += [Turn(a, b, who) for a, b, who, _ in mapped]
            usage = getattr(result, "usage", None)
            billed_s += float(getattr(usage, "seconds", 0.0) or 0.0) if \
                getattr(usage, "type", "") == "duration" else len(samples) / KEEP_RATE
            sent += 1
        # Reference clips of the labels heard so far, cut from this chunk's audio.
        here = [t for t in turns if chunk.start_ms <= t.start_ms < chunk.end_ms]
        for label, (lo, hi) in solo_stretches(here).items():
            if label in named_refs:
                continue
            a = max(0, (lo - chunk.start_ms) * KEEP_RATE // 1000)
            b = min(len(samples), (hi - chunk.start_ms) * KEEP_RATE // 1000)
            if (b - a) * 1000 // KEEP_RATE >= CLIP_MIN_MS and \
                    (label not in clips or b - a > len(clips[label])):
                clips[label] = samples[a:b][: CLIP_MAX_MS * KEEP_RATE // 1000].copy()
    lines, count = session_lines(store, session_id)
    labelled = attribute(turns, lines)
    changes = [(lab.key, lab.pieces) for lab in labelled]
    split = store.apply_speakers(session_id, changes)
    cost = estimate_cost(billed_s, cfg["speakers.price_per_min"])
    if cost:
        store.update_session(session_id, cost_usd=(row.cost_usd or 0.0) + cost)
    talk: dict[str, float] = {}
    for t in turns:
        talk[t.speaker] = talk.get(t.speaker, 0.0) + (t.end_ms - t.start_ms) / 1000
    log.info("speakers.labelled session=%d chunks=%d sent=%d lines=%d split=%d cost_usd=%.4f",
             session_id, len(chunks), sent, count, split, cost)
    return Outcome(session_id, len(chunks), sent, duration_ms / 1000, cost, count, split,
                   dict(sorted(talk.items(), key=lambda kv: -kv[1])))


def chunk_count(duration_s: float, chunk_s: float) -> int:
    return max(1, math.ceil(duration_s / chunk_s)) if duration_s > 0 else 0
