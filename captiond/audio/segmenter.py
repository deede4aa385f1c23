"""Utterance segmentation: speech probabilities in, cut decisions out.  [pure: no I/O, no clock]

Every engine decides turns with this one policy: the local engine decodes the utterances it
cuts, the OpenAI engine commits the service's audio buffer at them (gpt-realtime-whisper has
no server VAD). Positions are sample indices on the session stream at :attr:`Params.rate`.

- Speech starts at a window whose probability reaches ``threshold``. Soft first syllables
  ("the", "many") often score well below it, so the start walks back over the windows just
  before that still look faintly like speech (>= :data:`ONSET_BACKTRACK_PROB`), then
  ``pad_ms`` more (never before the previous cut). It ends ``tail_ms`` after the last speech.
- Hysteresis: a window counts as silence only below ``threshold - HYSTERESIS``.
- A pause of ``min_silence_ms`` ends the utterance, or of ``sentence_end_ms`` once the engine
  has judged the text before it a finished sentence (:meth:`Segmenter.end_of_sentence`).
- Continuous speech is cut before ``max_utterance_s``, at the quietest window of the last
  :data:`FORCED_CUT_SEARCH_S` (the softest point between words), and a new utterance starts
  there at once, so nothing is lost or duplicated.
- Utterances with less than ``min_speech_ms`` of speech are flagged ``noise``.
- Once a pause has lasted ``max(tail_ms, min_silence_ms / 4)``, a :class:`Pause` announces the
  cut that will happen if the pause goes on, with the same ``end``: an engine may start
  its final decode then, so text is ready the moment the pause is long enough.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

WINDOW = 512
HYSTERESIS = 0.15
#: How far back a forced cut looks for the quietest point.
FORCED_CUT_SEARCH_S = 3.0
#: A forced cut leaves at least this much audio in the utterance it ends.
FORCED_CUT_MIN_S = 1.0
#: Soft onsets: the start walks back over windows at least this likely to be speech ...
ONSET_BACKTRACK_PROB = 0.1
#: ... for at most this long.
ONSET_BACKTRACK_S = 1.0


@dataclass(frozen=True, slots=True)
class Params:
    threshold: float = 0.5
    min_silence_ms: int = 400
    sentence_end_ms: int = 300
    min_speech_ms: int = 0
    max_utterance_s: float = 15.0
    pad_ms: int = 400
    tail_ms: int = 100
    rate: int = 16_000

    def samples(self, ms: float) -> int:
        return int(ms * self.rate / 1000)


class _Settings(Protocol):
    """What :func:`segmenter_params` reads: a :class:`~captiond.config.Config` or any mapping
    of setting names to values."""

    def __getitem__(self, name: str) -> Any: ...


def segmenter_params(cfg: _Settings, rate: int = 16_000) -> Params:
    """The ``vad.*`` settings as segmenter :class:`Params` at ``rate`` (samples per second)."""
    return Params(
        threshold=cfg["vad.threshold"],
        min_silence_ms=cfg["vad.min_silence_ms"],
        sentence_end_ms=cfg["vad.sentence_end_ms"],
        min_speech_ms=cfg["vad.min_speech_ms"],
        max_utterance_s=cfg["vad.max_utterance_s"],
        pad_ms=cfg["vad.pad_ms"],
        tail_ms=cfg["vad.tail_ms"],
        rate=rate,
    )


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    start: int
    heard: int = 0  # where the VAD first called it speech (``start`` is walked back from it)


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    start: int
    end: int
    speech: int  # samples judged speech inside
    forced: bool = False  # cut during continuous speech (max length)
    noise: bool = False  # too little speech: not worth transcribing

    @property
    def speech_ratio(self) -> float:
        return self.speech / max(1, self.end - self.start)


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause that will become ``UtteranceEnded(start, end)`` unless speech resumes."""

    start: int
    end: int
    speech: int

    @property
    def speech_ratio(self) -> float:
        return self.speech / max(1, self.end - self.start)


Decision = SpeechStarted | UtteranceEnded | Pause


@dataclass(slots=True)
class Segmenter:
    params: Params = field(default_factory=Params)
    speaking: bool = False
    start: int = 0
    last_speech_end: int = 0
    speech: int = 0
    floor: int = 0  # utterances never begin before the previous cut
    position: int = 0  # end of the last window seen
    _pause_announced: bool = False
    _sentence_ended: bool = False  # the engine judged the text before this pause a sentence
    _idle: list[float] = field(default_factory=list)  # recent probabilities while idle
    _history: list[tuple[int, float]] = field(default_factory=list)  # (window start, prob)

    def push(self, probabilities: Iterable[float], start: int) -> list[Decision]:
        """Windows of :data:`WINDOW` samples, the first beginning at sample ``start``."""
        out: list[Decision] = []
        p = self.params
        pos = start
        for prob in probabilities:
            prob = float(prob)
            end = pos + WINDOW
            self.position = end
            if not self.speaking:
                if prob >= p.threshold:
                    back = 0
                    limit = int(ONSET_BACKTRACK_S * p.rate) // WINDOW
                    while back < min(limit, len(self._idle)) and (
                        self._idle[-1 - back] >= ONSET_BACKTRACK_PROB
                    ):
                        back += 1
                    self._idle.clear()
                    self.speaking = True
                    self.start = max(self.floor, pos - back * WINDOW - p.samples(p.pad_ms))
                    self.last_speech_end = end
                    self.speech = WINDOW
                    self._history = [(pos, prob)]
                    out.append(SpeechStarted(self.start, pos))
                else:
                    self._idle.append(prob)
                    if len(self._idle) > 2 * int(ONSET_BACKTRACK_S * p.rate) // WINDOW:
                        del self._idle[: len(self._idle) // 2]
            else:
                self._history.append((pos, prob))
                if prob >= p.threshold - HYSTERESIS:
                    self.last_speech_end = end
                    self.speech += WINDOW
                    self._pause_announced = self._sentence_ended = False
                else:
                    silence = end - self.last_speech_end
                    cut = self._pause_cut(end)
                    if silence >= self._pause_needed():
                        out.append(self._end(cut))
                    elif not self._pause_announced and silence >= p.samples(
                        max(p.tail_ms, p.min_silence_ms / 4)
                    ):
                        self._pause_announced = True
                        out.append(Pause(self.start, cut, self.speech))
                if self.speaking and end - self.start >= int(p.max_utterance_s * p.rate):
                    out.extend(self._forced_cut(end))
            pos = end
        return out

    @property
    def in_pause(self) -> bool:
        """Speaking, but the last window was silence."""
        return self.speaking and self.position > self.last_speech_end

    def sentence_end_due(self, samples: int) -> bool:
        """Whether the next ``samples`` could take the announced pause to ``sentence_end_ms``
        (and so end the utterance if the engine judges its text a finished sentence)."""
        p = self.params
        if p.sentence_end_ms >= p.min_silence_ms or not self._pause_announced or self._sentence_ended:
            return False
        return self.speaking and self.position + samples - self.last_speech_end >= p.samples(p.sentence_end_ms)

    def end_of_sentence(self, end: int) -> list[Decision]:
        """The engine judged the text up to the announced pause that ends at ``end`` a finished
        sentence: the pause ends the utterance after ``sentence_end_ms`` of silence instead of
        ``min_silence_ms``, now if it has lasted that long. Nothing if speech has resumed."""
        if not (self.speaking and self._pause_announced) or self._pause_cut(self.position) != end:
            return []
        self._sentence_ended = True
        if self.position - self.last_speech_end >= self._pause_needed():
            return [self._end(end)]
        return []

    def _pause_cut(self, position: int) -> int:
        """Where the open utterance ends if the pause before ``position`` ends it."""
        return min(self.last_speech_end + self.params.samples(self.params.tail_ms), position)

    def _pause_needed(self) -> int:
        """Silence (samples) that ends the utterance now."""
        p = self.params
        ms = min(p.min_silence_ms, p.sentence_end_ms) if self._sentence_ended else p.min_silence_ms
        return p.samples(ms)

    def finish(self) -> list[Decision]:
        """End of stream (or a gap): close the open utterance."""
        if not self.speaking:
            return []
        return [self._end(self._pause_cut(self.position))]

    def reset(self, position: int) -> None:
        """Start over at ``position`` (after a gap in the stream)."""
        self._idle.clear()
        self.speaking = False
        self.floor = self.position = position
        self._history = []

    def _end(self, end: int, forced: bool = False) -> UtteranceEnded:
        cut = UtteranceEnded(
            start=self.start,
            end=max(end, self.start + 1),
            speech=self.speech,
            forced=forced,
            noise=self.speech < self.params.samples(self.params.min_speech_ms),
        )
        self.speaking = False
        self.floor = cut.end
        self._history = []
        self._pause_announced = self._sentence_ended = False
        return cut

    def _forced_cut(self, end: int) -> list[Decision]:
        p = self.params
        earliest = max(self.start + int(FORCED_CUT_MIN_S * p.rate), end - int(FORCED_CUT_SEARCH_S * p.rate))
        candidates = [(prob, -pos, pos) for pos, prob in self._history if pos >= earliest]
        if candidates:
            _, _, quiet = min(candidates)
            cut_at = quiet + WINDOW // 2
        else:
            cut_at = end
        remaining = [(pos, prob) for pos, prob in self._history if pos >= cut_at - WINDOW // 2]
        ended = self._end(cut_at, forced=True)
        # Speech goes on: the next utterance starts exactly at the cut.
        self.speaking = True
        self.start = cut_at
        self._history = remaining
        speech_windows = [pos for pos, prob in remaining if prob >= p.threshold - HYSTERESIS]
        self.speech = WINDOW * len(speech_windows)
        self.last_speech_end = (max(speech_windows) + WINDOW) if speech_windows else cut_at
        return [ended, SpeechStarted(cut_at, cut_at)]
