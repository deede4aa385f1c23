"""The shared audio front end on real speech: the same cuts at every engine rate, a gap closes
the open utterance while its audio is still at hand, and the ring stays bounded."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from conftest import EN_CLIPS

from captiond.audio.block import AudioBlock
from captiond.audio.frontend import RING_SLACK_S, Discontinuity, FrontEnd
from captiond.audio.resample import Resampler
from captiond.audio.segmenter import Params, Pause, SpeechStarted, UtteranceEnded

RATE = 16_000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two FLEURS sentences with a second of silence between them and after them."""
    from faster_whisper import decode_audio

    gap = np.zeros(RATE, np.float32)
    clips = [np.asarray(decode_audio(str(c), RATE), np.float32) for c in EN_CLIPS[:2]]
    return np.concatenate([clips[0], gap, clips[1], gap])


def blocks(audio: np.ndarray, rate: int, start: int = 0, block_ms: int = 32) -> list[AudioBlock]:
    n = rate * block_ms // 1000
    return [AudioBlock(audio[i : i + n], rate, start + i) for i in range(0, len(audio), n)]


def run(fe: FrontEnd, stream: list[AudioBlock]) -> list[object]:
    out: list[object] = []
    for block in stream:
        out.extend(fe.push(block))
    out.extend(fe.finish())
    return out


def cuts(decisions: list[object]) -> list[tuple[int, int]]:
    return [(d.start, d.end) for d in decisions if isinstance(d, UtteranceEnded)]


def test_the_same_cuts_at_16_and_24_khz(speech: np.ndarray) -> None:
    """The OpenAI engine (24 kHz in) cuts where the local engine (16 kHz in) cuts, within a
    quarter second (its VAD reads a 24 -> 16 kHz copy); both say where the stream starts, once."""
    at16 = run(FrontEnd(Params(), RATE), blocks(speech, RATE))
    audio24 = soxr.resample(speech, RATE, 24_000).astype(np.float32)
    at24 = run(FrontEnd(Params(), 24_000), blocks(audio24, 24_000))
    assert [d for d in at16 if isinstance(d, Discontinuity)] == [Discontinuity(0)]
    assert [d for d in at24 if isinstance(d, Discontinuity)] == [Discontinuity(0)]
    assert len(cuts(at16)) >= 2
    assert len(cuts(at24)) == len(cuts(at16))
    for (a, b), (c, d) in zip(cuts(at16), cuts(at24), strict=True):
        assert abs(a - c) <= RATE // 4 and abs(b - d) <= RATE // 4


def test_the_vad_copy_comes_from_the_capture_block(speech: np.ndarray) -> None:
    """A 24 kHz block resampled from 16 kHz capture is cut exactly as the 16 kHz capture: the
    VAD reads the capture block (no 16 -> 24 -> 16 kHz round trip)."""
    direct = run(FrontEnd(Params(), RATE), blocks(speech, RATE))
    up = Resampler(24_000)
    resampled = [up(b) for b in blocks(speech, RATE)]
    assert all(b.origin is not None and b.origin.rate == RATE for b in resampled)
    via = run(FrontEnd(Params(), 24_000), resampled)
    assert cuts(via) == cuts(direct)


def test_a_gap_closes_the_utterance_while_its_audio_is_in_the_ring(speech: np.ndarray) -> None:
    """A jump in the stream in the middle of speech ends the open utterance first (the ring
    still holds its audio when the decision is handled), then marks the discontinuity; the
    ring then starts at the new position."""
    half = int(1.5 * RATE)  # inside the first sentence
    first = blocks(speech[:half], RATE)
    later = blocks(speech[half:], RATE, start=half + 5 * RATE)
    fe = FrontEnd(Params(), RATE)
    seen: list[object] = []
    for block in first + later:
        for d in fe.push(block):
            if isinstance(d, UtteranceEnded) and d.end <= half:
                # Handled before the ring starts afresh: the utterance's audio is all there.
                assert len(fe.ring.slice(d.start, d.end)) == d.end - d.start
            seen.append(d)
    kinds = [type(d) for d in seen]
    jump = seen.index(Discontinuity(half + 5 * RATE))
    assert kinds[jump - 1] is UtteranceEnded and seen[jump - 1].end <= half  # type: ignore[attr-defined]
    assert fe.ring.base >= half + 5 * RATE
    assert SpeechStarted in kinds[jump:]


def test_live_params_apply_from_the_next_block(speech: np.ndarray) -> None:
    """A longer minimum silence set while running merges the two sentences into one cut."""
    fe = FrontEnd(Params(), RATE)
    fe.params = Params(min_silence_ms=1_500)
    merged = run(fe, blocks(speech, RATE))
    assert len(cuts(merged)) < len(cuts(run(FrontEnd(Params(), RATE), blocks(speech, RATE))))
    assert any(isinstance(d, Pause) for d in merged)


def test_the_ring_is_bounded_whatever_the_engine_trims(speech: np.ndarray) -> None:
    """An engine that never trims still holds at most the longest utterance, the slack and the
    newest block."""
    params = Params(max_utterance_s=2.0)
    fe = FrontEnd(params, RATE)
    for block in blocks(np.concatenate([speech, speech]), RATE):
        list(fe.push(block))
    assert fe.ring.end - fe.ring.base <= (2.0 + RING_SLACK_S) * RATE + 512
    assert fe.ring.end == 2 * len(speech)
