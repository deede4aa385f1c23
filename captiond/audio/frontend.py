"""The audio front end every utterance-cutting engine shares (local Whisper, OpenAI realtime).

:class:`FrontEnd` takes the engine's audio blocks (at the engine's rate, on the stream clock)
and turns them into the segmenter's decisions, so both engines cut the same utterances:

- a jump in the stream (a gap: device lost, overflow) closes the open utterance and starts
  the VAD, the segmenter and the ring afresh; a :class:`Discontinuity` marks where the
  stream (re)starts, the first block included;
- the VAD (silero, 16 kHz) sees every block as it arrives: a block at another rate gets one
  16 kHz copy, resampled from the capture block when the pipeline kept it (one resample per
  consumer rate, never 16 kHz -> 24 kHz -> 16 kHz);
- the segmenter's decisions (:class:`~captiond.audio.segmenter.SpeechStarted`,
  :class:`~captiond.audio.segmenter.Pause`, :class:`~captiond.audio.segmenter.UtteranceEnded`)
  come out in 16 kHz stream positions; :meth:`FrontEnd.at_rate` converts them to the
  engine's rate;
- :class:`PcmRing` keeps the recent audio at the engine's rate with stream positions, for the
  engine to slice utterances from and trim as it uses them (bounded in any case).

Live reload: set :attr:`FrontEnd.params`; the next block is cut with them.

No batching of VAD calls: the VAD runs once per block on whatever completes a 32 ms window.
Measured (FLEURS, 41 s of audio): 3.6-4.3 ms CPU per audio second fed one window per call,
3.3-3.8 ms fed two; the 0.3 ms saved is not worth a decision up to one block later. Batched by
two windows, the local engine cuts the same utterances with the same finals, but items open a
block later and 12 of 58 partials change (``benchmarks/local_replay.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from captiond.audio.block import AudioBlock
from captiond.audio.resample import Resampler
from captiond.audio.segmenter import WINDOW, Decision, Params, Segmenter
from captiond.audio.vad import SAMPLE_RATE as VAD_RATE
from captiond.audio.vad import StreamingVad
from captiond.errors import EngineError

#: Audio the ring keeps beyond the longest utterance, whatever the engine trims (seconds).
RING_SLACK_S = 10.0


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """The stream starts, or resumes after a gap, at ``at`` (a position at the engine's rate).
    Everything open before it has been closed by the decisions that came before."""

    at: int


FrontEndDecision = Decision | Discontinuity


class PcmRing:
    """The stream's recent audio (mono float32 at one rate) from ``base`` to ``end``."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.base = 0
        self._chunks: deque[np.ndarray] = deque()
        self._size = 0

    @property
    def end(self) -> int:
        return self.base + self._size

    def append(self, block: AudioBlock) -> None:
        if self._size == 0:
            self.base = block.start
        if len(block.samples):
            self._chunks.append(block.samples)
            self._size += len(block.samples)

    def reset(self, position: int) -> None:
        """Forget everything; the next audio starts at ``position``."""
        self._chunks.clear()
        self._size = 0
        self.base = position

    def slice(self, start: int, end: int) -> np.ndarray:
        """A copy of the audio from ``start`` to ``end`` (clipped to what is kept)."""
        lo = max(0, start - self.base)
        hi = max(lo, min(self._size, end - self.base))
        if hi == lo:
            return np.zeros(0, np.float32)
        if len(self._chunks) > 1:
            joined = np.concatenate(list(self._chunks))
            self._chunks = deque([joined])
        return self._chunks[0][lo:hi].copy()

    def trim_before(self, position: int) -> None:
        """Drop the audio before ``position``."""
        drop = min(position - self.base, self._size)
        if drop <= 0:
            return
        self.base += drop
        self._size -= drop
        while drop and self._chunks:
            first = self._chunks[0]
            if len(first) <= drop:
                self._chunks.popleft()
                drop -= len(first)
            else:
                self._chunks[0] = first[drop:]
                drop = 0


class FrontEnd:
    """Blocks at ``rate`` in, utterance decisions (16 kHz positions) out; see the module."""

    def __init__(self, params: Params, rate: int, *, engine: str = "engine") -> None:
        self.params = params
        self.rate = rate
        self.engine = engine
        self.ring = PcmRing(rate)
        self._seg = Segmenter(self.params)
        self._vad: StreamingVad | None = None
        self._to16 = Resampler(VAD_RATE)
        self._expected: int | None = None  # stream position the next block should start at
        self._vad_next = 0  # 16 kHz position of the next VAD window

    @property
    def params(self) -> Params:
        """The segmenter's settings (at 16 kHz, whatever rate they were given at); a new
        value applies from the next block."""
        return self._params

    @params.setter
    def params(self, params: Params) -> None:
        self._params = params if params.rate == VAD_RATE else replace(params, rate=VAD_RATE)

    @property
    def in_pause(self) -> bool:
        """Speaking, but the last window was silence."""
        return self._seg.in_pause

    def at_rate(self, position: int) -> int:
        """A 16 kHz stream position at the engine's rate."""
        return position * self.rate // VAD_RATE

    def push(self, block: AudioBlock) -> Iterator[FrontEndDecision]:
        """The decisions this block brings. A generator: consume each decision before the
        next (after a gap the closing decisions come while the ring still holds their audio;
        it starts afresh only after the :class:`Discontinuity`)."""
        if block.rate != self.rate:
            raise EngineError(f"{self.engine} engine needs {self.rate} Hz audio, got {block.rate}")
        if self._vad is None:
            self._vad = StreamingVad()
        if self._expected is None or block.start != self._expected:
            if self._expected is not None:
                yield from self._seg.finish()
                self._vad.reset()
            start16 = block.start * VAD_RATE // self.rate
            self._seg.reset(start16)
            self._vad_next = start16
            self.ring.reset(block.start)
            yield Discontinuity(block.start)
        self._expected = block.end
        if self._seg.params != self.params:
            self._seg.params = self.params
        self._bound()  # after the engine has handled (and trimmed for) the last decisions
        self.ring.append(block)
        probs = self._vad(self._vad_samples(block))
        decisions = self._seg.push(probs, self._vad_next)
        self._vad_next += len(probs) * WINDOW
        yield from decisions

    def sentence_end_due(self, block: AudioBlock) -> bool:
        """Whether this block could end the announced pause as a sentence's end."""
        return self._seg.sentence_end_due(len(block.samples) * VAD_RATE // self.rate)

    def end_of_sentence(self, end: int) -> list[Decision]:
        """The text up to the announced pause ending at ``end`` (16 kHz) is a finished
        sentence: see :meth:`~captiond.audio.segmenter.Segmenter.end_of_sentence`."""
        return self._seg.end_of_sentence(end)

    def finish(self) -> list[Decision]:
        """End of the stream: close the open utterance."""
        return self._seg.finish()

    def _vad_samples(self, block: AudioBlock) -> np.ndarray:
        if block.rate == VAD_RATE:
            return block.samples
        # The capture block when the pipeline kept it: one resample from the source's rate.
        source = block.origin if block.origin is not None else block
        return self._to16(source).samples

    def _bound(self) -> None:
        limit = int((self.params.max_utterance_s + RING_SLACK_S) * self.rate)
        if self.ring.end - self.ring.base > limit:
            self.ring.trim_before(self.ring.end - limit)

