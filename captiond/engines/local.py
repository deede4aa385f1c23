"""The embedded engine: silero VAD + streaming Whisper on the CPU, no network.  [I/O shell]

The shell around :class:`~captiond.engines.localcore.LocalCore`: it pushes audio blocks through
the front end (VAD and segmenter), hands the core the decisions and the block positions,
slices the audio of the decodes the core asks for, runs them on the decoder's one thread and
hands the results back; it emits the transcript events and stores the dropped utterances the
core returns. Every rule (partials, agreement, early and sequel finals, continuations, the
join, lines cut at sentence ends) lives in the core and is described there. Audio that the
VAD calls silence is never decoded, so Whisper cannot invent text for it.

Events: an item opens (``ItemCommitted`` with start = end) when speech starts and the line
before it has its final; partials replace its text; its final gives it its extent and text
(``ItemCompleted``), or the lines a final is cut into at sentence ends each get an item. An
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
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from captiond.audio.block import AudioBlock
from captiond.audio.frontend import FrontEnd
from captiond.audio.segmenter import Params
from captiond.engines.base import Emit
from captiond.engines.localcore import DecodeRequest, LocalCore, Out, Pass
from captiond.engines.whisper import SAMPLE_RATE, WhisperBackend
from captiond.events import DroppedUtterance, ItemCompleted

log = logging.getLogger("captiond.engine.local")

#: Finals being decoded at once before the engine stops reading audio (fast mode back-pressure).
MAX_PENDING_FINALS = 3
#: How long the engine waits for the last decodes at the end of the stream.
DRAIN_TIMEOUT_S = 60.0
#: A final arriving this long after its cut is reported (at most every LAG_WARN_EVERY_S).
LAG_WARN_S = 3.0
LAG_WARN_EVERY_S = 60.0
#: Dropped utterances the engine remembers for status and benchmarks (the store keeps all).
MAX_DROPPED_KEPT = 200


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
        self.core = LocalCore(
            backend, self.frontend.params, partial_interval_s=partial_interval_s,
            partials=partials, stable_text=stable_text, word_timestamps=word_timestamps,
            fit=backend.final_window == "fit", id_prefix=id_prefix,
        )
        self._futures: dict[int, asyncio.Future[Pass]] = {}
        self._stops: dict[int, threading.Event] = {}
        self._requests: dict[int, DecodeRequest] = {}
        self._handled: set[int] = set()
        #: The audio of cut utterances whose final is still being decoded: item -> (start, samples).
        self._kept: dict[str, tuple[int, np.ndarray]] = {}
        self._emit: Emit | None = None
        self._closing = False  # the stream ended and the drain is over: results are dropped
        self._partials_built = partials  # reload never turns on what construction turned off
        # Figures for status and benchmarks.
        self.audio_s = 0.0
        self.dropped = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.dropped_recent: deque[DroppedUtterance] = deque(maxlen=MAX_DROPPED_KEPT)
        self._drop_sink: Callable[[DroppedUtterance], None] | None = None
        self._warned_at = float("-inf")
        #: Warn when finals lag (live runs; a batch run lags by design).
        self.warn_lag = partials

    @property
    def partials(self) -> bool:
        return self.core.partials

    @property
    def stable_text(self) -> bool:
        return self.core.stable_text

    def stats(self) -> dict[str, Any]:
        core = self.core
        return {
            "engine": self.name,
            "state": "running",
            "audio_s": round(self.audio_s, 1),
            "finals_pending": core.pending_finals,
            "lag_s": round(core.last_final_lag_s, 2),
            "partials": core.partials_emitted,
            "partials_skipped": core.partials_skipped,
            "finals": core.finals_emitted,
            "dropped": self.dropped,
            "dropped_by_reason": dict(self.dropped_by_reason),
            "speculative_used": core.speculative_used,
            "speculative_wasted": core.speculative_wasted,
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

    @property
    def open_item(self) -> str | None:
        """The item of the utterance being spoken, if any."""
        return self.core.open_item

    def update_settings(self, params: Params, partial_interval_s: float, word_timestamps: bool) -> None:
        """Live reload: takes effect from the next utterance."""
        self.frontend.params = params
        core = self.core
        core.params = self.frontend.params
        core.partial_interval_s = partial_interval_s
        core.partials = self._partials_built and partial_interval_s > 0
        core.word_timestamps = word_timestamps

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        self._emit = emit
        fe, core = self.frontend, self.core
        ring = fe.ring
        async for block in audio:
            verdict = core.verdict_request()
            while verdict is not None and fe.sentence_end_due(block):
                # Whether this pause ends a sentence is the early final's verdict: the block
                # waits for it, so where an utterance is cut never depends on how fast the
                # decoder was (``transcribe`` and ``run`` cut alike).
                await asyncio.wait({self._futures[verdict]})
                self._result(verdict)
                verdict = core.verdict_request()
            # The front end closes the open utterance at a gap and starts afresh after it:
            # each decision is handled while the ring still holds its audio.
            for decision in fe.push(block):
                self._apply(core.decisions([decision], time.monotonic()))
            core.params = fe.params
            self.audio_s += block.duration_s
            self._apply(core.block(ring.end, fe.in_pause))
            ring.trim_before(core.keep_from(ring.end))
            while core.pending_finals >= MAX_PENDING_FINALS and self._futures:
                await asyncio.wait(set(self._futures.values()), return_when=asyncio.FIRST_COMPLETED)
                self._collect()
        self._apply(core.decisions(fe.finish(), time.monotonic()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_S
        while self._futures and loop.time() < deadline:
            await asyncio.wait(set(self._futures.values()), timeout=deadline - loop.time(),
                               return_when=asyncio.FIRST_COMPLETED)
            self._collect()
        # What is still decoding is not waited for: its results are dropped.
        self._closing = True
        for req_id in list(self._futures):
            self._stop(req_id)

    # -- the core's requests and results ---------------------------------------------------

    def _apply(self, out: Out) -> None:
        emit = self._emit
        assert emit is not None
        for item, start, end in out.keep:
            self._kept[item] = (start, self.frontend.ring.slice(start, end))
        for req_id in out.stop:
            self._stop(req_id)
        for req in out.requests:
            self._submit(req)
        for record in out.dropped:
            self._record_drop(record)
        for event in out.events:
            if isinstance(event, ItemCompleted):
                self._warn_lag()
            emit(event)
        for item in out.released:
            self._kept.pop(item, None)
        if out.sentence_end is not None:
            self._apply(self.core.decisions(self.frontend.end_of_sentence(out.sentence_end),
                                            time.monotonic()))

    def _audio(self, req: DecodeRequest) -> np.ndarray:
        kept = self._kept.get(req.item) if req.kind == "final" else None
        if kept is not None:
            start, samples = kept
            if start <= req.start and req.end <= start + len(samples):
                return samples[req.start - start : req.end - start]
        return self.frontend.ring.slice(req.start, req.end)

    def _submit(self, req: DecodeRequest) -> None:
        loop = asyncio.get_running_loop()
        samples = self._audio(req)
        stop = threading.Event() if req.stoppable else None
        check = stop.is_set if stop is not None else None
        fut = loop.run_in_executor(self.backend.executor, self.backend.run, req, samples, check)
        self._futures[req.id] = fut
        self._requests[req.id] = req
        if stop is not None:
            self._stops[req.id] = stop
        fut.add_done_callback(functools.partial(self._done, req.id))

    def _done(self, req_id: int, _fut: asyncio.Future[Pass]) -> None:
        self._result(req_id)

    def _stop(self, req_id: int) -> None:
        """The core no longer needs this decode: skipped if not started, else it stops after
        the encoder, its result unused."""
        stop = self._stops.pop(req_id, None)
        if stop is not None:
            stop.set()
        fut = self._futures.get(req_id)
        if fut is not None:
            fut.cancel()

    def _collect(self) -> None:
        for req_id, fut in list(self._futures.items()):
            if fut.done():
                self._result(req_id)

    def _result(self, req_id: int) -> None:
        """Hand a finished decode to the core (once, whichever of its callback and a waiting
        block gets here first)."""
        fut = self._futures.get(req_id)
        if fut is None or not fut.done() or self._closing:
            return
        del self._futures[req_id]
        self._stops.pop(req_id, None)
        req = self._requests.pop(req_id)
        if fut.cancelled():
            result: Pass | BaseException = Pass(stopped=True)
        else:
            exc = fut.exception()
            if exc is not None:
                log.error("engine.decode_failed item=%s error=%r", req.item, str(exc))
            result = exc if exc is not None else fut.result()
        self._apply(self.core.decoded(req, result, time.monotonic()))

    def _warn_lag(self) -> None:
        lag = self.core.last_final_lag_s
        if self.warn_lag and lag > LAG_WARN_S and time.monotonic() - self._warned_at > LAG_WARN_EVERY_S:
            self._warned_at = time.monotonic()
            log.warning(
                "engine.behind lag_s=%.1f partials_skipped=%d (a smaller model or more "
                "local.threads helps)", lag, self.core.partials_skipped,
            )

    def _record_drop(self, record: DroppedUtterance) -> None:
        """Every utterance that ends without text is counted, logged and kept with its reason."""
        self.dropped += 1
        self.dropped_by_reason[record.reason] = self.dropped_by_reason.get(record.reason, 0) + 1
        self.dropped_recent.append(record)
        if self._drop_sink is not None:
            self._drop_sink(record)
        log.debug(
            "engine.dropped item=%s start_ms=%d end_ms=%d reason=%s text=%r",
            record.item_id, record.start_ms, record.end_ms, record.reason, record.text,
        )
