"""The utterance segmenter turns speech probabilities into cuts: at pauses, and before the
maximum length at the quietest point, never losing or duplicating audio."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.audio.segmenter import (
    WINDOW,
    Params,
    Pause,
    Segmenter,
    SpeechStarted,
    UtteranceEnded,
)

RATE = 16_000


def windows(ms: int) -> int:
    return ms * RATE // 1000 // WINDOW


def run(probs: list[float], params: Params, chunk: int = 7) -> list:
    seg = Segmenter(params)
    out = []
    for i in range(0, len(probs), chunk):
        out.extend(seg.push(probs[i : i + chunk], i * WINDOW))
    out.extend(seg.finish())
    return out


def test_pause_ends_an_utterance_with_pad_and_tail() -> None:
    """Speech, a long pause, speech: two utterances, padded before and after the speech."""
    p = Params(min_silence_ms=400, pad_ms=200, tail_ms=100, min_speech_ms=100)
    probs = [0.0] * 20 + [0.9] * 40 + [0.0] * 30 + [0.9] * 20 + [0.0] * 5
    decisions = run(probs, p)
    ends = [d for d in decisions if isinstance(d, UtteranceEnded)]
    starts = [d for d in decisions if isinstance(d, SpeechStarted)]
    assert len(starts) == 2 and len(ends) == 2
    assert starts[0].start == 20 * WINDOW - p.samples(200)
    assert ends[0].end == 60 * WINDOW + p.samples(100)
    assert ends[0].speech == 40 * WINDOW
    assert not ends[0].forced and not ends[0].noise


def test_short_pause_does_not_cut_but_announces() -> None:
    """A pause shorter than min_silence keeps one utterance; a Pause was announced and dropped."""
    p = Params(min_silence_ms=400, tail_ms=100)
    probs = [0.9] * 30 + [0.0] * windows(250) + [0.9] * 30 + [0.0] * 20
    decisions = run(probs, p)
    assert sum(isinstance(d, UtteranceEnded) for d in decisions) == 1
    assert sum(isinstance(d, Pause) for d in decisions) == 2


def test_pause_announces_the_cut_it_becomes() -> None:
    """The Pause before a cut names the same start and end as the cut."""
    p = Params(min_silence_ms=400, tail_ms=100)
    decisions = run([0.9] * 30 + [0.0] * 20, p)
    pause = next(d for d in decisions if isinstance(d, Pause))
    end = next(d for d in decisions if isinstance(d, UtteranceEnded))
    assert (pause.start, pause.end) == (end.start, end.end)
    assert decisions.index(pause) < decisions.index(end)


def test_hysteresis_keeps_speech_through_dips() -> None:
    """Probabilities between threshold-0.15 and threshold do not count as silence."""
    p = Params(threshold=0.5, min_silence_ms=100)
    decisions = run([0.9] * 10 + [0.4] * 20 + [0.9] * 10 + [0.0] * 10, p)
    assert sum(isinstance(d, UtteranceEnded) for d in decisions) == 1


def test_noise_is_flagged() -> None:
    """A blip shorter than min_speech_ms is marked noise."""
    p = Params(min_speech_ms=200)
    decisions = run([0.0] * 10 + [0.9] * 2 + [0.0] * 30, p)
    (end,) = [d for d in decisions if isinstance(d, UtteranceEnded)]
    assert end.noise


def test_forced_cut_at_the_quietest_point() -> None:
    """Continuous speech is cut before max_utterance_s, at the softest window, and the next
    utterance starts exactly there."""
    p = Params(max_utterance_s=4.0, pad_ms=0)
    n = windows(10_000)
    probs = [0.95] * n
    dip = windows(2_500)
    probs[dip] = 0.6  # still speech, but the softest point
    decisions = run(probs, p)
    ends = [d for d in decisions if isinstance(d, UtteranceEnded)]
    assert ends[0].forced
    assert ends[0].end == dip * WINDOW + WINDOW // 2
    starts = [d for d in decisions if isinstance(d, SpeechStarted)]
    assert starts[1].start == ends[0].end


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=1500),
    st.integers(min_value=1, max_value=50),
    st.floats(min_value=2.0, max_value=10.0),
)
def test_cuts_never_overlap_and_stay_bounded(probs, chunk, max_s) -> None:  # type: ignore[no-untyped-def]
    """Whatever the probabilities and block sizes: utterances are ordered, never overlap,
    never exceed the maximum length, and each start is announced before its end."""
    p = Params(max_utterance_s=max_s)
    decisions = run(probs, p, chunk)
    open_start = None
    last_end = 0
    for d in decisions:
        if isinstance(d, SpeechStarted):
            assert open_start is None
            assert d.start >= last_end
            open_start = d.start
        elif isinstance(d, UtteranceEnded):
            assert open_start == d.start
            assert d.end > d.start
            assert d.end - d.start <= int(max_s * RATE) + WINDOW
            last_end = d.end
            open_start = None
        elif isinstance(d, Pause):
            assert open_start == d.start
    assert open_start is None


def test_chunking_does_not_change_decisions() -> None:
    """Feeding windows one by one or all at once gives the same decisions."""
    import random

    rng = random.Random(7)
    probs = [rng.choice([0.0, 0.2, 0.7, 0.95]) for _ in range(2000)]
    p = Params(max_utterance_s=5.0)
    assert run(probs, p, 1) == run(probs, p, 2000)


def test_a_finished_sentence_ends_the_pause_at_sentence_end_ms() -> None:
    """Told at the Pause that the text before it is a finished sentence, the segmenter cuts once
    the pause reaches sentence_end_ms, at the end the Pause announced; a pause as long with no
    such word keeps the utterance open."""
    p = Params(min_silence_ms=400, sentence_end_ms=300, tail_ms=100)
    seg = Segmenter(p)
    pause_ms = 352  # 11 windows: over sentence_end_ms, under min_silence_ms
    speech = [0.9] * 30
    out = seg.push(speech, 0)
    out += seg.push([0.0] * windows(128), len(speech) * WINDOW)
    pause = next(d for d in out if isinstance(d, Pause))
    assert seg.sentence_end_due(WINDOW) is False  # 128 ms of silence + 32 ms: not yet due
    assert seg.end_of_sentence(pause.end + 1) == []  # not the announced pause: nothing
    assert seg.end_of_sentence(pause.end) == []  # due, but not reached yet
    pos = seg.position
    cut = []
    while not cut:
        cut = [d for d in seg.push([0.0], pos) if isinstance(d, UtteranceEnded)]
        pos += WINDOW
    assert (cut[0].start, cut[0].end) == (pause.start, pause.end)
    assert pos - 30 * WINDOW == p.samples(320)  # the first window at or past 300 ms

    # The same pause without the verdict: one utterance.
    probs = speech + [0.0] * windows(pause_ms) + speech + [0.0] * 20
    assert sum(isinstance(d, UtteranceEnded) for d in run(probs, p)) == 1


def test_a_verdict_that_comes_late_cuts_at_once_and_never_outlives_the_pause() -> None:
    """A verdict after sentence_end_ms of silence cuts right away; one given before speech
    resumed does not shorten the next pause."""
    p = Params(min_silence_ms=400, sentence_end_ms=300, tail_ms=100)
    seg = Segmenter(p)
    seg.push([0.9] * 30, 0)
    out = seg.push([0.0] * windows(340), 30 * WINDOW)
    pause = next(d for d in out if isinstance(d, Pause))
    assert seg.sentence_end_due(WINDOW)
    (cut,) = seg.end_of_sentence(pause.end)
    assert isinstance(cut, UtteranceEnded) and cut.end == pause.end
    assert not seg.sentence_end_due(WINDOW)  # no utterance open

    seg = Segmenter(p)
    seg.push([0.9] * 30, 0)
    out = seg.push([0.0] * windows(160), 30 * WINDOW)
    pause = next(d for d in out if isinstance(d, Pause))
    assert seg.end_of_sentence(pause.end) == []
    seg.push([0.9] * 10, seg.position)  # speech resumes: the verdict was for another pause
    out = seg.push([0.0] * windows(352), seg.position)
    assert not any(isinstance(d, UtteranceEnded) for d in out)


def test_sentence_end_at_or_above_min_silence_changes_nothing() -> None:
    p = Params(min_silence_ms=400, sentence_end_ms=400, tail_ms=100)
    seg = Segmenter(p)
    seg.push([0.9] * 30, 0)
    out = seg.push([0.0] * windows(352), 30 * WINDOW)
    pause = next(d for d in out if isinstance(d, Pause))
    assert not seg.sentence_end_due(WINDOW)
    assert seg.end_of_sentence(pause.end) == []
    assert seg.speaking


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=1500),
    st.lists(st.booleans(), min_size=1, max_size=50),
)
def test_sentence_verdicts_keep_cuts_ordered_and_at_announced_ends(probs, verdicts) -> None:  # type: ignore[no-untyped-def]
    """Whatever the probabilities and whichever pauses are judged sentence ends: cuts are
    ordered, never overlap, and a cut the verdict brings ends where its Pause said."""
    p = Params(max_utterance_s=5.0)
    seg = Segmenter(p)
    judged: dict[int, bool] = {}
    decisions = []
    for i, prob in enumerate(probs):
        out = seg.push([prob], i * WINDOW)
        decisions += out
        for d in out:
            if isinstance(d, Pause) and verdicts[len(judged) % len(verdicts)]:
                judged[d.end] = True
                early = seg.end_of_sentence(d.end)
                assert all(isinstance(e, UtteranceEnded) and e.end == d.end for e in early)
                decisions += early
    decisions += seg.finish()
    open_start, last_end = None, 0
    for d in decisions:
        if isinstance(d, SpeechStarted):
            assert open_start is None and d.start >= last_end
            open_start = d.start
        elif isinstance(d, UtteranceEnded):
            assert open_start == d.start and d.end > d.start
            last_end, open_start = d.end, None
    assert open_start is None
