"""The local engine's core on a scripted decoder, no model: one join (no word emitted twice
whatever the decoder returns), continuations and sequels, lines cut at sentence ends, items in
transcript order, every discard recorded with its reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.audio.segmenter import Params, Pause, SpeechStarted, UtteranceEnded
from captiond.engines import guards
from captiond.engines.join import join, lines, overlap
from captiond.engines.localcore import (
    DecodeRequest,
    FinalDecode,
    LocalCore,
    Pass,
)
from captiond.events import ItemCommitted, ItemCompleted, ItemFailed, ItemPartial, Word
from captiond.transcript.reconciler import Reconciler

RATE = 16_000


def ms(position: int) -> int:
    return position * 1000 // RATE


class Vocab:
    """A tokenizer where every word is one token (with its leading space)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.ids: dict[str, int] = {}

    def token(self, word: str) -> int:
        if word not in self.ids:
            self.ids[word] = len(self.words)
            self.words.append(word)
        return self.ids[word]

    def join(self, prefix: list[int], tokens: list[int]) -> str:
        return " ".join(self.words[t] for t in [*prefix, *tokens])

    def starts_word(self, token: int) -> bool:
        return True

    def encode(self, text: str) -> list[int]:
        return [self.token(w) for w in text.split()]


@dataclass
class Script:
    """Speech as words with times, and how the decoder misbehaves."""

    words: list[Word]
    stop_early: float = 0.0  # chance a final's first pass stops halfway through its words
    restart: float = 0.0  # chance a pass starts over on words before its span
    doubt: float = 0.0  # chance a pass is judged no speech
    empty: float = 0.0  # chance a pass returns nothing
    skip_head: float = 0.0  # chance a final's first pass skips its first words
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class ScriptedDecoder:
    """Decodes a request from the script: the words whose middle lies in its span (after the
    said part), with misbehaviour drawn from the script's chances."""

    def __init__(self, script: Script, vocab: Vocab) -> None:
        self.script, self.vocab = script, vocab
        self.requests: list[DecodeRequest] = []
        self._seen: set[str] = set()

    def run(self, req: DecodeRequest) -> Pass:
        self.requests.append(req)
        s = self.script
        lo = ms(req.said_end if req.said else req.start)
        hi = ms(req.end)
        words = [w for w in s.words if lo <= (w.start_ms + w.end_ms) // 2 < hi]
        if req.kind == "final" and words and s.rng.random() < s.restart:
            earlier = [w for w in s.words if w.end_ms <= lo][-4:]
            words = earlier + words  # the decoder started over on audio it had transcribed
        first = req.kind == "final" and req.item not in self._seen
        if req.kind == "final":
            self._seen.add(req.item)
        if first and not req.said and len(words) > 3 and s.rng.random() < s.skip_head:
            words = words[len(words) // 2 :]  # the decoder skipped the start of the speech
        if req.kind == "final" and not req.context and len(words) > 2 and s.rng.random() < s.stop_early:
            words = words[: len(words) // 2]  # stopped early: the rest is skipped
        if s.rng.random() < s.empty:
            return Pass(full_window=req.full_window)
        if s.rng.random() < s.doubt and not req.full_window:
            return Pass(tokens=[self.vocab.token("Thank"), self.vocab.token("you.")],
                        text="Thank you.", new_text="Thank you.", no_speech_prob=0.9,
                        avg_logprob=-1.5)
        # Forced words stand for the first words of the span; the decoder goes on after them.
        prefix_words = [Word(self.vocab.words[t], w.start_ms, w.end_ms, w.probability)
                        for t, w in zip(req.prefix, words)]
        words = words[len(req.prefix):]
        tokens = [self.vocab.token(w.text) for w in words]
        text = " ".join([*(w.text for w in prefix_words), *(w.text for w in words)])
        return Pass(tokens=tokens, text=text, new_text=" ".join(w.text for w in words),
                    words=(*prefix_words, *words) if req.words else (), full_window=req.full_window,
                    forced_words=len(prefix_words))


def speech(sentences: list[list[str]], start_ms: int = 500, word_ms: int = 300,
           pause_ms: int = 250) -> list[Word]:
    """Words of the sentences, one after another, ``pause_ms`` between sentences."""
    out: list[Word] = []
    at = start_ms
    for sentence in sentences:
        for i, text in enumerate(sentence):
            last = i == len(sentence) - 1
            out.append(Word(text + ("." if last else ""), at, at + word_ms - 40, 0.9))
            at += word_ms
        at += pause_ms
    return out


def drive(core: LocalCore, decoder: ScriptedDecoder, cuts: list[tuple[int, int]],
          lag: int = 0, end: int | None = None) -> list[object]:
    """Feed the core the decisions of ``cuts`` (utterance spans in samples) and run its
    requests on the decoder in order, ``lag`` blocks late; returns every event."""
    events: list[object] = []
    queue: list[DecodeRequest] = []
    stopped: set[int] = set()

    def apply(out) -> None:  # type: ignore[no-untyped-def]
        events.extend(out.events)
        queue.extend(out.requests)
        stopped.update(out.stop)
        if out.sentence_end is not None:
            pass  # the segmenter's early end is tested with the real front end

    def run_one() -> None:
        req = queue.pop(0)
        result = Pass(stopped=True) if req.id in stopped else decoder.run(req)
        apply(core.decoded(req, result, 0.0))

    block = 512
    stream_end = end or (cuts[-1][1] + RATE if cuts else RATE)
    todo = {s: ("start", s, e) for s, e in cuts}
    ends = {e: (s, e) for s, e in cuts}
    pauses = {e - RATE // 10: (s, e) for s, e in cuts}
    pending_lag: list[int] = []
    for pos in range(0, stream_end, block):
        for p in range(pos, pos + block):
            if p in ends:
                s, e = ends[p]
                apply(core.decisions([UtteranceEnded(s, e, e - s)], 0.0))
            if p in todo:
                _, s, e = todo[p]
                apply(core.decisions([SpeechStarted(s, s)], 0.0))
            if p in pauses:
                s, e = pauses[p]
                apply(core.decisions([Pause(s, e, e - s)], 0.0))
        in_pause = not any(s <= pos < e - RATE // 10 for s, e in cuts)
        apply(core.block(pos + block, in_pause))
        pending_lag.append(pos)
        while queue and len(pending_lag) > lag:
            run_one()
            pending_lag.clear()
    while queue:
        run_one()
    return events


def transcript(events: list[object]) -> list[tuple[str, str]]:
    rec = Reconciler()
    for ev in events:
        rec.apply(ev)  # type: ignore[arg-type]
    return [(line.item_id, line.text) for line in rec.lines() if line.text and line.status.value == "final"]


def cuts_of(words: list[Word], split_every: int) -> list[tuple[int, int]]:
    """Utterance spans over the words, a cut after every ``split_every`` words (in the gap)."""
    spans: list[tuple[int, int]] = []
    for i in range(0, len(words), split_every):
        group = words[i : i + split_every]
        s = max(0, group[0].start_ms - 100) * RATE // 1000
        e = (group[-1].end_ms + 30) * RATE // 1000
        spans.append((max(s, spans[-1][1] if spans else 0), e))
    return spans


def make_core(vocab: Vocab, **kw) -> LocalCore:  # type: ignore[no-untyped-def]
    return LocalCore(vocab, Params(), partials=kw.pop("partials", False), **kw)


# -- the join --------------------------------------------------------------------------------


def w(text: str, start: int, end: int | None = None) -> Word:
    return Word(text, start, end if end is not None else start + 200)


def test_overlap_drops_words_whose_audio_is_covered_by_time() -> None:
    """A new word that starts before the covered words end is already said."""
    covered = [w("built", 0), w("in", 300), w("modern", 600, 900)]
    new = [w("modern", 650, 900), w("times.", 1000)]
    assert join(covered, new) == ([new[1]], [new[0]])


def test_overlap_drops_a_restart_found_by_text() -> None:
    """A decoder that starts over on words it gave (at later times) repeats nothing."""
    covered = [w(t, i * 300) for i, t in enumerate("cities or at campuses, easier to reach".split())]
    new = [w(t, 3000 + i * 300) for i, t in enumerate("cities or at campuses, easier to reach than".split())]
    assert overlap(covered, new) == 7


def test_overlap_keeps_a_short_phrase_said_again() -> None:
    """Two words that recur later in real speech ("I think") are not a restart."""
    covered = [w("I", 0), w("think", 300), w("so.", 600)]
    new = [w("Yes,", 2000), w("I", 2300), w("think", 2600), w("so.", 2900)]
    assert overlap(covered, new) == 0


@given(st.lists(st.sampled_from("a b c d e f g".split()), min_size=1, max_size=12),
       st.lists(st.sampled_from("a b c d e f g".split()), min_size=0, max_size=12))
def test_joined_words_never_start_before_the_covered_ones_end(a: list[str], b: list[str]) -> None:
    """Whatever the texts, a kept word never starts well inside the covered audio."""
    covered = [w(t, i * 300) for i, t in enumerate(a)]
    new = [w(t, i * 250) for i, t in enumerate(b)]
    kept, dropped = join(covered, new)
    assert dropped + kept == new
    end = covered[-1].end_ms
    assert all(k.start_ms >= end - 200 for k in kept[:1])


def test_lines_cut_at_sentence_ends_and_keep_short_ones_together() -> None:
    """One sentence per line; "Yes. Yes." said in one breath stays one line."""
    words = speech([["Yes"], ["Okay"], ["we", "will", "ship", "it", "on", "Friday"], ["Good"]], pause_ms=100)
    got = [" ".join(x.text for x in piece) for piece in lines(words)]
    assert got == ["Yes. Okay.", "we will ship it on Friday.", "Good."]


# -- guards ----------------------------------------------------------------------------------


def test_phrases_nobody_says_in_a_meeting_are_dropped_whatever_the_audio() -> None:
    """"Thanks for watching." is a phantom even in speech-filled audio."""
    assert guards.judge("Thanks for watching!", speech_ratio=1.0) == "phantom"
    assert guards.judge("Okay.", speech_ratio=1.0) is None


def test_trailing_phantom_and_filler_runs_are_trimmed() -> None:
    """"… look at it. Mhm. Mhm. Mhm. Thanks for watching." keeps "… look at it. Mhm."."""
    words = [w("look", 0), w("at", 300), w("it.", 600), w("Mhm.", 900), w("Mhm.", 1200),
             w("Mhm.", 1500), w("Thanks", 1800), w("for", 2000), w("watching.", 2200)]
    kept, cut = guards.trim_tail(words)
    assert [x.text for x in kept] == ["look", "at", "it.", "Mhm."]
    assert [reason for reason, _ in cut] == ["repetition", "repetition", "phantom"]


# -- the core on a scripted decoder ------------------------------------------------------------


SENTENCES = [["the", "cabbage", "juice", "changes", "color"], ["many", "people", "do", "not", "think"],
             ["all", "nouns", "begin", "with", "capitals"], ["towards", "northern", "hills", "lies", "Sintra"]]


def test_an_early_stop_is_continued_and_no_word_comes_twice() -> None:
    """A decoder that stops halfway gets the rest decoded from where its words end."""
    vocab = Vocab()
    words = speech(SENTENCES[:2], pause_ms=100)
    script = Script(words, stop_early=1.0)
    dec = ScriptedDecoder(script, vocab)
    events = drive(make_core(vocab), dec, cuts_of(words, len(words)))
    said = " ".join(t for _, t in transcript(events)).split()
    assert said == [x.text for x in words]
    assert any(r.context for r in dec.requests), "no continuation was asked for"


def test_a_skipped_start_is_decoded_and_put_first() -> None:
    """A decoder whose words begin long after the speech does ("because they have feathers"
    for "many people ... because they have feathers") gets the audio before them decoded."""
    vocab = Vocab()
    words = speech(SENTENCES[:2], pause_ms=100)
    dec = ScriptedDecoder(Script(words, skip_head=1.0), vocab)
    events = drive(make_core(vocab), dec, cuts_of(words, len(words)))
    said = " ".join(t for _, t in transcript(events)).split()
    assert said == [x.text for x in words]
    assert len([r for r in dec.requests if r.kind == "final"]) == 2


def test_a_restarting_continuation_repeats_nothing() -> None:
    """The decoder starting over on words it gave ("... modern cities or at campuses ...")."""
    vocab = Vocab()
    words = speech(SENTENCES[:2], pause_ms=100)
    script = Script(words, stop_early=0.6, restart=1.0, seed=3)
    events = drive(make_core(vocab), ScriptedDecoder(script, vocab), cuts_of(words, len(words)))
    said = " ".join(t for _, t in transcript(events)).split()
    assert said == [x.text for x in words]


def test_a_final_is_cut_into_one_line_per_sentence_in_order() -> None:
    """Two sentences in one utterance become two lines, before the next utterance's line."""
    vocab = Vocab()
    words = speech(SENTENCES[:3])
    events = drive(make_core(vocab), ScriptedDecoder(Script(words), vocab), cuts_of(words, 10) + [])
    lines_ = transcript(events)
    assert [t for _, t in lines_] == [" ".join(s) + "." for s in SENTENCES[:3]]
    assert [i for i, _ in lines_] == ["loc-1", "loc-1.1", "loc-2"]


def test_a_doubtful_fitted_pass_is_decoded_again_on_the_full_window() -> None:
    """Text is never dropped on the fitted window's word alone."""
    vocab = Vocab()
    words = speech(SENTENCES[:1])
    dec = ScriptedDecoder(Script(words, doubt=1.0), vocab)
    events = drive(make_core(vocab), dec, cuts_of(words, 5))
    assert [t for _, t in transcript(events)] == ["the cabbage juice changes color."]
    assert [r.full_window for r in dec.requests] == [False, True]


def test_a_phantom_utterance_is_dropped_with_its_reason() -> None:
    """A doubtful "Thank you." on both windows gives no line and a recorded drop."""
    vocab = Vocab()

    class Phantom(ScriptedDecoder):
        def run(self, req: DecodeRequest) -> Pass:
            self.requests.append(req)
            return Pass(tokens=[vocab.token("Thank"), vocab.token("you.")], text="Thank you.",
                        new_text="Thank you.", words=(w("Thank", 600), w("you.", 800)),
                        no_speech_prob=0.9, avg_logprob=-1.5, full_window=req.full_window)

    core = make_core(vocab)
    dropped: list[object] = []
    out = core.decisions([SpeechStarted(0, 0)], 0.0)
    out = core.decisions([UtteranceEnded(0, 16_000, 16_000)], 0.0)
    dec = Phantom(Script([]), vocab)
    queue = list(out.requests)
    events = list(out.events)
    while queue:
        req = queue.pop(0)
        o = core.decoded(req, dec.run(req), 1.0)
        queue += o.requests
        events += o.events
        dropped += o.dropped
    assert [d.reason for d in dropped] == ["no_speech"]  # type: ignore[attr-defined]
    assert ItemCompleted("loc-1", "", (), None) in events


def test_a_sequel_is_decoded_after_its_lead_and_repeats_none_of_its_words() -> None:
    """Speech resuming right after a finished sentence is decoded with that line's text forced
    first; words the decoder gives again for the lead's audio are left out."""
    vocab = Vocab()
    words = speech([SENTENCES[0], SENTENCES[1]], pause_ms=200)
    script = Script(words, restart=1.0)
    dec = ScriptedDecoder(script, vocab)
    cuts = [((words[0].start_ms - 100) * 16, (words[4].end_ms + 30) * 16),
            ((words[5].start_ms - 100) * 16, (words[-1].end_ms + 30) * 16)]
    core = make_core(vocab, partials=False)
    events = drive(core, dec, cuts, lag=0)
    said = " ".join(t for _, t in transcript(events)).split()
    assert said == [x.text for x in words]
    sequel = [r for r in dec.requests if r.said]
    assert sequel and sequel[0].start == cuts[0][0] and sequel[0].said_end == cuts[1][0]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=4),
    split=st.integers(min_value=2, max_value=12),
    stop_early=st.sampled_from([0.0, 0.5, 1.0]),
    restart=st.sampled_from([0.0, 0.5, 1.0]),
    doubt=st.sampled_from([0.0, 0.3]),
    empty=st.sampled_from([0.0, 0.2]),
    skip_head=st.sampled_from([0.0, 0.5]),
    lag=st.integers(min_value=0, max_value=40),
    seed=st.integers(min_value=0, max_value=1000),
    pause=st.sampled_from([60, 250, 700]),
)
def test_whatever_the_decoder_does_no_word_is_emitted_twice_and_lines_stay_in_order(
    n: int, split: int, stop_early: float, restart: float, doubt: float, empty: float,
    skip_head: float, lag: int, seed: int, pause: int,
) -> None:
    """Overlapping, repeated, empty, doubtful and late pieces: every word at most once, in
    order; every item settles; the items form one chain."""
    vocab = Vocab()
    words = speech(random.Random(seed).sample(SENTENCES, n), pause_ms=pause)
    script = Script(words, stop_early=stop_early, restart=restart, doubt=doubt, empty=empty,
                    skip_head=skip_head, seed=seed)
    core = make_core(vocab, partials=True, partial_interval_s=0.3)
    events = drive(core, ScriptedDecoder(script, vocab), cuts_of(words, split), lag=lag)
    said = " ".join(t for _, t in transcript(events)).split()
    times = {x.text: i for i, x in enumerate(words)}
    order = [times[t] for t in said if t in times]
    assert order == sorted(set(order)), said
    assert len(said) == len(order), "a word nobody said"
    # One chain: every item follows the one committed before it.
    previous: dict[str, str | None] = {}
    for ev in events:
        if isinstance(ev, ItemCommitted):
            previous.setdefault(ev.item_id, ev.previous_item_id)
    assert sorted(p for p in previous.values() if p is not None) == sorted(
        i for i in previous if i in set(previous.values()))
    settled = {ev.item_id for ev in events if isinstance(ev, ItemCompleted | ItemFailed)}
    assert settled == set(previous)
    assert core.pending_finals == 0


def test_partials_show_only_when_sure_and_agreed_words_are_forced_on_later_ones() -> None:
    """The first text waits for a sure partial; agreement forces its words on later partials."""
    vocab = Vocab()
    words = speech([["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]], word_ms=400)
    dec = ScriptedDecoder(Script(words), vocab)
    core = make_core(vocab, partials=True, partial_interval_s=0.3, stable_text=True)
    events = drive(core, dec, [(0, (words[-1].end_ms + 30) * 16)])
    partials = [ev for ev in events if isinstance(ev, ItemPartial)]
    assert partials and all(p.text.startswith(p.text[: p.stable]) for p in partials)
    stable = [p.text[: p.stable] for p in partials]
    assert all(b.startswith(a) for a, b in zip(stable, stable[1:])), "stable text changed"
    assert any(r.prefix for r in dec.requests if r.kind == "partial")
    final = [t for _, t in transcript(events)]
    assert final == ["a b c d e f g h i j."]


def test_one_shot_decode_uses_the_same_passes() -> None:
    """FinalDecode alone (what ``WhisperBackend.decode`` runs) continues an early stop."""
    vocab = Vocab()
    words = speech(SENTENCES[:2], pause_ms=100)
    dec = ScriptedDecoder(Script(words, stop_early=1.0), vocab)
    fd = FinalDecode(vocab, "x", 0, (words[-1].end_ms + 100) * 16)
    req = fd.first()
    while req is not None:
        req = fd.feed(dec.run(req))
    assert fd.result.text.split() == [x.text for x in words]


def test_backchannels_need_two_signs_and_phantom_runs_count_as_one_phrase() -> None:
    """A sure "Okay." in speech stays; "Thanks. Thank you." with a doubtful decoder and a
    no-speech probability of 0.55 (a far-field murmur in an AMI meeting) is a phantom."""
    assert guards.judge("Okay.", speech_ratio=0.9, no_speech_prob=0.2, avg_logprob=-0.6) is None
    assert guards.judge("Okay.", speech_ratio=0.9, no_speech_prob=0.4, avg_logprob=-0.6) is None
    assert guards.judge("Thanks. Thank you.", speech_ratio=0.9, no_speech_prob=0.55,
                        avg_logprob=-1.22) == "phantom"
    assert guards.judge("Great, thank you.", speech_ratio=0.9, no_speech_prob=0.55,
                        avg_logprob=-1.22) is None


def test_a_final_stopped_at_shutdown_fails_its_item_and_asks_for_nothing() -> None:
    """The shell stops what is still decoding when the stream's drain is over: the item
    settles as failed; no decode is asked for again."""
    vocab = Vocab()
    core = make_core(vocab)
    core.decisions([SpeechStarted(0, 0)], 0.0)
    out = core.decisions([UtteranceEnded(0, 16_000, 16_000)], 0.0)
    (req,) = out.requests
    after = core.decoded(req, Pass(stopped=True), 1.0)
    assert after.requests == []
    assert any(isinstance(e, ItemFailed) and e.item_id == "loc-1" for e in after.events)
    assert core.pending_finals == 0
