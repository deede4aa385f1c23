"""The embedded engine: silero VAD + streaming Whisper on the CPU, no network.

While someone speaks, the growing utterance is re-decoded every ``partial_interval_s``, or
every :data:`PARTIAL_INTERVAL_SHARE` of its length once that is longer (each partial decodes
the whole utterance, so a fixed interval made partials cost more the longer someone spoke),
only when the decoder is idle (a slow machine shows fewer partials instead of falling behind).
Until a line has text, partials come every :data:`FIRST_TEXT_INTERVAL_S`, and the first text
is shown when the decoder is sure of it or the speech has gone on long enough to trust it
(:data:`FIRST_TEXT_SURE_AFTER_S`). Words that successive partials agree on are forced as the
decoder's prefix of the partials after them (stable text with ``local.stable_text``, else a
draft the final does not see), so a partial decodes only what follows them. At a pause (or
at the maximum utterance length) the utterance is cut and decoded once more for the final
text with word timings. That final decode starts as the pause does; if its text ends a
sentence (:func:`ends_sentence`), the pause ends the utterance after ``vad.sentence_end_ms``
instead of ``vad.min_silence_ms``. Audio that the VAD calls silence is never decoded, so Whisper cannot
invent text for it.

Events: an item opens (``ItemCommitted`` with start = end) when speech starts, partials
replace its text, and at the cut it gets its final extent, then ``ItemCompleted``. An
utterance that turns out to be noise or a phantom phrase completes with empty text, which
removes its partial.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from captiond.audio.block import AudioBlock
from captiond.audio.frontend import FrontEnd, PcmRing
from captiond.audio.segmenter import Params, Pause, SpeechStarted, UtteranceEnded
from captiond.engines.base import Emit
from captiond.engines.whisper import (
    LOGPROB_THRESHOLD,
    SAMPLE_RATE,
    Decoded,
    WhisperBackend,
    looks_repetitive,
)
from captiond.events import (
    DroppedUtterance,
    ItemCommitted,
    ItemCompleted,
    ItemFailed,
    ItemPartial,
)

log = logging.getLogger("captiond.engine.local")

#: Finals being decoded at once before the engine stops reading audio (fast mode back-pressure).
MAX_PENDING_FINALS = 3
#: How long the engine waits for the last decodes at the end of the stream.
DRAIN_TIMEOUT_S = 60.0
#: Audio kept before the open utterance (for the pre-speech pad and onset walk-back).
KEEP_BEFORE_S = 2.0
#: A final arriving this long after its cut is reported (at most every LAG_WARN_EVERY_S).
LAG_WARN_S = 3.0
LAG_WARN_EVERY_S = 60.0
#: Consecutive partials that must agree on a word before it is made stable.
AGREE_PARTIALS = 3
#: Nothing is made stable before the utterance is this long (first words decoded from a
#: fraction of a second of audio are often wrong in agreement).
STABLE_AFTER_S = 2.0
#: Agreed words at the end of a partial that are not yet made stable.
HOLD_BACK_WORDS = 2
#: Partials of a long utterance come at most every this share of its length so far (a 10 s
#: utterance gets one every 1.5 s instead of every 0.5 s).
PARTIAL_INTERVAL_SHARE = 0.15
#: Until a line shows text, partials come this often: the first decodes of an utterance often
#: hear too little speech for text (a decode of a second of audio costs about 0.05 CPU-s) ...
FIRST_TEXT_INTERVAL_S = 0.2
#: ... and a line's first text is shown only when the decoder is as sure of it as Whisper's own
#: threshold for speech (LOGPROB_THRESHOLD), or once the VAD has heard speech for this long.
#: Guesses at a first syllable ("They have" for "The cabbage") are the unsure ones.
FIRST_TEXT_SURE_AFTER_S = 0.7
#: A final decode ends a sentence when its text ends with one of these ("..." trails off) ...
SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")
#: ... and the decoder gave its last word at least this probability ("anything." heard in the
#: first syllable of the next phrase scores near 0).
SENTENCE_END_MIN_PROB = 0.5
#: An utterance whose speech starts less than ``vad.min_silence_ms`` after the last one's
#: (which a finished sentence ended early; a pause that long would not have cut it) goes on
#: from it: its final is decoded with that utterance's audio and text before it, if that is
#: at most this long.
SEQUEL_LEAD_MAX_S = 10.0
#: Dropped utterances the engine remembers for status and benchmarks (the store keeps all).
MAX_DROPPED_KEPT = 200


@dataclass(frozen=True, slots=True)
class EarlyFinal:
    """A final decode started at a pause, for the cut the pause announced."""

    item: str
    start: int
    end: int
    future: asyncio.Future[Decoded]
    stop: threading.Event  # set: the decode stops after the encoder, its result unused


class LocalEngine:
    name = "local"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        backend: WhisperBackend,
        params: Params | None = None,
        *,
        partial_interval_s: float = 0.5,
        word_timestamps: bool = True,
        stable_text: bool = False,
        partials: bool = True,
        id_prefix: str = "loc",
    ) -> None:
        self.backend = backend
        self.frontend = FrontEnd(params or Params(rate=SAMPLE_RATE), SAMPLE_RATE, engine="local")
        self.partial_interval_s = partial_interval_s
        self.word_timestamps = word_timestamps
        self.partials = partials and partial_interval_s > 0
        #: Whether partial text is ever made stable (forced on later decodes); off, only the
        #: final is, and partials carry ``stable = 0``.
        self.stable_text = stable_text
        self.id_prefix = id_prefix
        self._count = 0
        self._last_item: str | None = None
        self._prev: dict[str, str | None] = {}  # open item -> its predecessor
        self._open: str | None = None  # item of the utterance being spoken
        self._open_start = 0
        self._heard_at = 0  # where the VAD first heard the open utterance's speech
        self._open_text = ""
        # Tokens of the open utterance that partials agreed on: forced on every later partial,
        # so a partial decodes only the words after them. The first ``_promised`` of them are
        # the stability contract (``stable_text``): shown as stable, and forced on the final
        # too, so no decode can change them. Without ``stable_text`` nothing is promised and
        # the final decodes freely.
        self._agreed: list[int] = []
        self._promised = 0
        self._stable_text = ""
        self._tail: list[int] = []  # the last partial's tokens after the agreed ones
        self._earlier: list[list[int]] = []  # the last partials' tokens after those
        self._last_partial_at = 0
        self._partial_busy = False
        self._finals: deque[asyncio.Future[Any]] = deque()
        self._speculative: EarlyFinal | None = None
        self.speculative_used = 0
        self.speculative_wasted = 0
        self._final_cut_at: dict[str, float] = {}
        self._last_cut: tuple[int, int] | None = None  # extent of the last utterance decoded
        self._lead: tuple[int, int] | None = None  # the one the open utterance goes on from
        # (start, end, text tokens) of the last finals, written and read on the decoder's one
        # thread (in the order the decodes were submitted): what a sequel's final goes on from.
        self._said: deque[tuple[int, int, list[int]]] = deque(maxlen=8)
        # Figures for status and benchmarks.
        self.audio_s = 0.0
        self.partials_emitted = 0
        self.partials_skipped = 0
        self.finals_emitted = 0
        self.dropped = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.dropped_recent: deque[DroppedUtterance] = deque(maxlen=MAX_DROPPED_KEPT)
        self._spans: dict[str, tuple[int, int]] = {}
        self._drop_sink: Callable[[DroppedUtterance], None] | None = None
        self.last_final_lag_s = 0.0
        self._warned_at = float("-inf")
        #: Warn when finals lag (live runs; a batch run lags by design).
        self.warn_lag = partials

    def stats(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "state": "running",
            "audio_s": round(self.audio_s, 1),
            "finals_pending": len(self._finals),
            "lag_s": round(self.last_final_lag_s, 2),
            "partials": self.partials_emitted,
            "partials_skipped": self.partials_skipped,
            "finals": self.finals_emitted,
            "dropped": self.dropped,
            "dropped_by_reason": dict(self.dropped_by_reason),
            "speculative_used": self.speculative_used,
            "speculative_wasted": self.speculative_wasted,
            "cost_usd": 0.0,
        }

    def set_gap_sink(self, fn: object) -> None:
        """The local engine never loses audio itself (the pipeline records its gaps)."""

    def set_drop_sink(self, sink: Callable[[DroppedUtterance], None]) -> None:
        """Where dropped utterances are stored (the session's database)."""
        self._drop_sink = sink

    @property
    def params(self) -> Params:
        """The VAD and segmenter settings (the front end's)."""
        return self.frontend.params

    def update_settings(self, params: Params, partial_interval_s: float, word_timestamps: bool) -> None:
        """Live reload: takes effect from the next utterance."""
        self.frontend.params = params
        self.partial_interval_s = partial_interval_s
        self.partials = partial_interval_s > 0
        self.word_timestamps = word_timestamps

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        fe = self.frontend
        buf = fe.ring
        async for block in audio:
            early = self._speculative
            if early is not None and fe.sentence_end_due(block):
                # Whether this pause ends a sentence is the early final's verdict: the block
                # waits for it, so where an utterance is cut never depends on how fast the
                # decoder was (``transcribe`` and ``run`` cut alike).
                await asyncio.wait({early.future})
                self._pause_decoded(early, early.future, buf=buf, emit=emit, loop=loop)
            # The front end closes the open utterance at a gap and starts afresh after it.
            self._decide(fe.push(block), buf, emit, loop)
            self.audio_s += block.duration_s
            if self._speculative is not None and not fe.in_pause:
                self._drop_speculative()
            if self._open is not None:
                if not fe.in_pause:  # trailing silence adds no words: no partial
                    self._maybe_partial(buf, emit, loop)
                # A lead (the utterance the open one goes on from) starts before it.
                first = self._lead[0] if self._lead is not None else self._open_start
                buf.trim_before(first - SAMPLE_RATE // 10)
            else:
                keep = buf.end - int(KEEP_BEFORE_S * SAMPLE_RATE)
                last = self._last_cut
                if last is not None and buf.end - last[1] < fe.params.samples(fe.params.min_silence_ms):
                    keep = min(keep, last[0])  # speech may yet go on from it
                buf.trim_before(keep)
            while self._finals and self._finals[0].done():
                self._finals.popleft()
            while len(self._finals) >= MAX_PENDING_FINALS:
                await asyncio.wait({self._finals[0]})
                self._finals.popleft()
        self._decide(fe.finish(), buf, emit, loop)
        if self._finals:
            await asyncio.wait(set(self._finals), timeout=DRAIN_TIMEOUT_S)
        self._finals.clear()

    # -- decisions ------------------------------------------------------------------------

    def _decide(
        self, decisions: Iterable[Any], buf: PcmRing, emit: Emit, loop: asyncio.AbstractEventLoop
    ) -> None:
        for d in decisions:
            if isinstance(d, SpeechStarted):
                self._count += 1
                item = f"{self.id_prefix}-{self._count}"
                self._open, self._open_start, self._open_text = item, d.start, ""
                self._heard_at = d.heard
                last, p = self._last_cut, self.params
                self._lead = last if (
                    last is not None and d.heard - last[1] + p.samples(p.tail_ms) < p.samples(p.min_silence_ms)
                    and last[1] - last[0] <= SEQUEL_LEAD_MAX_S * SAMPLE_RATE
                ) else None
                self._agreed, self._promised, self._stable_text = [], 0, ""
                self._tail, self._earlier = [], []
                self._last_partial_at = d.start
                ms = d.start * 1000 // SAMPLE_RATE
                self._prev[item] = self._last_item
                emit(ItemCommitted(item, self._last_item, ms, ms))
                self._last_item = item
            elif isinstance(d, Pause):
                if self._open is not None:
                    self._drop_speculative()
                    stop = threading.Event()
                    fut = self._submit_final(buf, d.start, d.end, d.speech_ratio, loop, stop)
                    early = self._speculative = EarlyFinal(self._open, d.start, d.end, fut, stop)
                    fut.add_done_callback(
                        functools.partial(self._pause_decoded, early, buf=buf, emit=emit, loop=loop)
                    )
            elif isinstance(d, UtteranceEnded):
                ended = self._open
                self._open = None
                if ended is None:
                    continue
                start_ms = d.start * 1000 // SAMPLE_RATE
                end_ms = d.end * 1000 // SAMPLE_RATE
                emit(ItemCommitted(ended, self._prev.pop(ended, None), start_ms, end_ms))
                spec = self._speculative
                self._speculative = None
                if spec is not None and (spec.item, spec.start, spec.end) == (ended, d.start, d.end) and not d.noise:
                    fut = spec.future
                    self.speculative_used += 1
                else:
                    if spec is not None:
                        spec.stop.set()
                        self.speculative_wasted += 1
                    if d.noise:
                        self._record_drop(ended, start_ms, end_ms, "noise", "")
                        emit(ItemCompleted(ended, ""))
                        continue
                    fut = self._submit_final(buf, d.start, d.end, d.speech_ratio, loop)
                self._last_cut = (d.start, d.end)
                self._final_cut_at[ended] = time.monotonic()
                self._spans[ended] = (start_ms, end_ms)
                fut.add_done_callback(functools.partial(self._final_done, ended, emit=emit))
                self._finals.append(fut)

    def _submit_final(
        self, buf: PcmRing, start: int, end: int, ratio: float, loop: asyncio.AbstractEventLoop,
        stop: threading.Event | None = None,
    ) -> asyncio.Future[Decoded]:
        lead = self._lead if self._lead is not None and self._lead[0] >= buf.base else None
        first = lead[0] if lead is not None else start
        samples = buf.slice(first, end)
        words = self.word_timestamps
        prefix = self._agreed[: self._promised]

        def job() -> Decoded:
            # A sequel is decoded after the final it goes on from (decoded before it: one
            # thread, in order), unless that final had no text.
            said = next((toks for s, e, toks in self._said if (s, e) == lead), None)
            at = first if said else start
            decoded = self.backend.decode(
                samples[at - first:], offset_ms=at * 1000 // SAMPLE_RATE, word_timestamps=words,
                speech_ratio=ratio, prefix=prefix, stop=stop.is_set if stop is not None else None,
                said=said, said_samples=start - at,
            )
            if decoded.text:
                self._said.append((start, end, decoded.prefix_tokens + decoded.tokens))
            return decoded

        return loop.run_in_executor(self.backend.executor, job)

    def _pause_decoded(
        self, spec: EarlyFinal, fut: asyncio.Future[Decoded],
        *, buf: PcmRing, emit: Emit, loop: asyncio.AbstractEventLoop,
    ) -> None:
        """The final decode started at a pause is done: a finished sentence need not wait for
        the whole ``min_silence_ms``. Called when it is done and before the block that could
        end the pause (whichever comes first; the second call finds nothing to do)."""
        if self._speculative is not spec or not fut.done() or fut.cancelled() or fut.exception() is not None:
            return
        if ends_sentence(fut.result()):
            self._decide(self.frontend.end_of_sentence(spec.end), buf, emit, loop)

    def _drop_speculative(self) -> None:
        """Speech resumed after a pause: the early final decode is of no use."""
        if self._speculative is not None:
            # Not started yet: skipped; running: it stops after the encoder, its result ignored.
            self._speculative.future.cancel()
            self._speculative.stop.set()
            self._speculative = None
            self.speculative_wasted += 1

    def _final_done(self, item: str, fut: asyncio.Future[Decoded], *, emit: Emit) -> None:
        cut_at = self._final_cut_at.pop(item, time.monotonic())
        span = self._spans.pop(item, (0, 0))
        self.last_final_lag_s = time.monotonic() - cut_at
        if (self.warn_lag and self.last_final_lag_s > LAG_WARN_S
                and time.monotonic() - self._warned_at > LAG_WARN_EVERY_S):
            self._warned_at = time.monotonic()
            log.warning(
                "engine.behind lag_s=%.1f partials_skipped=%d (a smaller model or more "
                "local.threads helps)",
                self.last_final_lag_s,
                self.partials_skipped,
            )
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("engine.decode_failed item=%s error=%r", item, str(exc))
            emit(ItemFailed(item, f"decode failed: {exc}"))
            return
        decoded = fut.result()
        if decoded.dropped and not decoded.text:
            self._record_drop(item, span[0], span[1], decoded.dropped, decoded.dropped_text)
        elif decoded.dropped:
            # The stable text stays; what the decoder added after it was judged not speech.
            self._record_drop(item, span[0], span[1], f"trimmed_{decoded.dropped}", decoded.dropped_text)
        for at_ms, reason, text in decoded.trimmed:
            self._record_drop(item, span[0] + at_ms, span[1], f"trimmed_{reason}", text)
        self.finals_emitted += 1
        emit(ItemCompleted(item, decoded.text, decoded.words, decoded.language or self.backend.language))

    def _record_drop(self, item: str, start_ms: int, end_ms: int, reason: str, text: str) -> None:
        """Every utterance that ends without text is counted, logged and kept with its reason."""
        self.dropped += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1
        record = DroppedUtterance(item, start_ms, end_ms, reason, text)
        self.dropped_recent.append(record)
        if self._drop_sink is not None:
            self._drop_sink(record)
        log.debug(
            "engine.dropped item=%s start_ms=%d end_ms=%d reason=%s text=%r",
            item, start_ms, end_ms, reason, text,
        )

    def _maybe_partial(self, buf: PcmRing, emit: Emit, loop: asyncio.AbstractEventLoop) -> None:
        if not self.partials or self._open is None:
            return
        so_far = (buf.end - self._open_start) / SAMPLE_RATE
        every = max(self.partial_interval_s, PARTIAL_INTERVAL_SHARE * so_far)
        if not self._open_text:
            every = min(every, FIRST_TEXT_INTERVAL_S)
        interval = int(every * SAMPLE_RATE)
        if buf.end - self._last_partial_at < interval:
            return
        if self._partial_busy or self._finals:
            self.partials_skipped += 1
            return
        item, start, end = self._open, self._open_start, buf.end
        samples = buf.slice(start, end)
        self._last_partial_at = end
        self._partial_busy = True
        prefix = list(self._agreed)
        fut = loop.run_in_executor(
            self.backend.executor, lambda: self.backend.decode(samples, final=False, prefix=prefix)
        )

        def done(f: asyncio.Future[Decoded]) -> None:
            self._partial_busy = False
            if f.cancelled() or f.exception() is not None or self._open != item:
                return  # the final is on its way; a late partial would only flicker
            if self._speculative is not None or self._agreed != prefix:
                return  # a final decode already holds the stable prefix: keep it fixed
            decoded = f.result()
            if decoded.dropped:
                return
            if (not self._open_text and decoded.avg_logprob < LOGPROB_THRESHOLD
                    and end - self._heard_at < FIRST_TEXT_SURE_AFTER_S * SAMPLE_RATE):
                return  # an unsure guess at the first syllables: wait for more speech
            self._agree(decoded.tokens, commit=len(samples) >= STABLE_AFTER_S * SAMPLE_RATE)
            text = self.backend.join(self._agreed, self._tail)
            if not text:
                return
            self._open_text = text
            self.partials_emitted += 1
            emit(ItemPartial(item, text, len(self._stable_text)))

        fut.add_done_callback(done)

    def _agree(self, tokens: list[int], commit: bool = True) -> None:
        """Local agreement: the words :data:`AGREE_PARTIALS` consecutive partials agree on are
        committed, except the last :data:`HOLD_BACK_WORDS` of them (a word at the edge of the
        audio may still grow or be misheard): made stable with ``stable_text`` (never changed
        afterwards), else added to the draft that later partials are forced to begin with. A
        candidate that would repeat a phrase is not committed. ``tokens``: a partial's tokens
        after the agreed ones."""
        self._earlier.append(tokens)
        del self._earlier[:-AGREE_PARTIALS]
        agreed = 0
        if len(self._earlier) == AGREE_PARTIALS:
            for column in zip(*self._earlier):
                if any(t != column[0] for t in column):
                    break
                agreed += 1
        # Word starts inside the agreed tokens; the last HOLD_BACK_WORDS agreed words stay
        # open (words near the edge of the audio are the ones decodes still get wrong).
        starts = [i for i in range(1, agreed) if self.backend.starts_word(tokens[i])]
        cut = starts[-HOLD_BACK_WORDS] if len(starts) >= HOLD_BACK_WORDS else 0
        if cut and commit:
            candidate = self._agreed + tokens[:cut]
            text = self.backend.join(candidate, [])
            if not looks_repetitive(text):
                self._agreed = candidate
                if self.stable_text:
                    self._promised, self._stable_text = len(candidate), text
                self._earlier = [t[cut:] for t in self._earlier]
        self._tail = self._earlier[-1]


def ends_sentence(decoded: Decoded) -> bool:
    """Whether a final decode's text is a finished sentence: it ends with a full stop, question
    or exclamation mark, and the decoder was sure of its last word."""
    text = decoded.text.rstrip()
    if decoded.dropped or not text.endswith(SENTENCE_ENDS) or text.endswith(".."):
        return False
    return not decoded.words or decoded.words[-1].probability >= SENTENCE_END_MIN_PROB
