"""The local engine's contracts on real audio: stable text never changes, sentence edges and
back-channels in conversation survive, and every discarded utterance is listed with its reason."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from conftest import AMI, FLEURS, normalise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import BLOCK, clip, paced, silence

from captiond import config
from captiond.audio.block import AudioBlock
from captiond.audio.segmenter import segmenter_params
from captiond.cli import main
from captiond.engines.factory import whisper_backend
from captiond.engines.guards import judge, looks_repetitive
from captiond.engines.local import LocalEngine
from captiond.engines.localcore import DecodeRequest
from captiond.engines.whisper import WhisperBackend
from captiond.events import ItemCommitted, ItemCompleted, ItemPartial
from captiond.transcript.store import Store

RATE = 16_000


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def partial(audio: np.ndarray) -> DecodeRequest:
    return DecodeRequest(1, "partial", "x", 0, len(audio), words=False)


def final(audio: np.ndarray) -> DecodeRequest:
    return DecodeRequest(1, "final", "x", 0, len(audio))


@pytest.fixture(scope="module")
def backend() -> WhisperBackend:
    return whisper_backend(config.parse("", env={}, overrides={}))


def run_engine(backend: WhisperBackend, audio: np.ndarray, every_s: float = 0.3,
               stable_text: bool = True) -> list[object]:
    cfg = config.parse("", env={}, overrides={})
    engine = LocalEngine(backend, segmenter_params(cfg), partial_interval_s=every_s, partials=True,
                         stable_text=stable_text)
    events: list[object] = []
    asyncio.run(engine.run(paced(audio, backend, every_s), events.append))
    return events


def check_stable_contract(events: list[object]) -> tuple[int, int]:
    """Every text of an item (partials and final) begins with the stable text shown before it,
    and the stable prefix never shrinks. Returns (partials, partials with stable text)."""
    shown: dict[str, str] = {}
    partials = with_stable = 0
    for ev in events:
        if isinstance(ev, ItemPartial):
            before = shown.get(ev.item_id, "")
            assert ev.text.startswith(before), f"stable {before!r} changed in {ev.text!r}"
            assert ev.stable >= len(before), f"stable prefix of {ev.text!r} shrank"
            assert not looks_repetitive(ev.text[: ev.stable])
            shown[ev.item_id] = ev.text[: ev.stable]
            partials += 1
            with_stable += ev.stable > 0
        elif isinstance(ev, ItemCompleted):
            before = shown.get(ev.item_id, "")
            assert ev.text.startswith(before), f"final {ev.text!r} does not begin with {before!r}"
    return partials, with_stable


def test_stable_text_never_changes_on_real_speech(backend: WhisperBackend) -> None:
    """Over a read sentence and a far-field meeting excerpt, no partial or final changes or
    withdraws text already marked stable (and partials do mark text stable)."""
    audio = np.concatenate(
        [clip(FLEURS / "fleurs-en-002.ogg"), silence(1.0), clip(AMI / "trn03.flac", 0, 12), silence(1.0)]
    )
    partials, with_stable = check_stable_contract(run_engine(backend, audio))
    assert partials >= 20 and with_stable >= 10


WORDS = ["the", "slope", "due", "to", "format", "dividing", "is", "a", "20th", "century",
         "people", "fly", "because", "they", "have", "feathers", "and", "can", ",", "."]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=14), min_size=1, max_size=12),
       st.booleans())
def test_agreement_only_ever_extends_the_stable_text(
    backend: WhisperBackend, hypotheses: list[list[str]], stable_text: bool
) -> None:
    """Property: whatever successive decodes say, the agreed text (stable with
    local.stable_text, else the draft later partials start from) only grows, every partial
    shown begins with it, and it never holds a phrase repeated three times. Without
    local.stable_text nothing is ever stable."""
    core = LocalEngine(backend, stable_text=stable_text).core
    before = ""
    for words in hypotheses:
        text = re.sub(r" ([,.])", r"\1", " ".join(words))
        core._agree(backend.tokenizer.encode(" " + text) if text else [])
        agreed = backend.join(core._agreed, [])
        assert agreed.startswith(before)
        assert backend.join(core._agreed, core._tail).startswith(agreed)
        assert not looks_repetitive(agreed)
        assert core._promised == (len(core._agreed) if stable_text else 0)
        assert core._stable_text == (agreed if stable_text else "")
        before = agreed


def transcribe(tmp_path: Path, audio: np.ndarray, name: str,
               command: str = "transcribe") -> tuple[str, Store, int]:
    """The audio through ``captiond transcribe`` (or ``captiond run`` in real time, the live
    daemon's engine wrappers included); the transcript, the store and the session id."""
    db = f"sqlite:///{tmp_path / 'captiond.db'}"
    wav = write_wav(tmp_path / f"{name}.wav", audio)
    if command == "transcribe":
        args = ["transcribe", str(wav), "--no-progress"]
    else:
        # In real time: the live daemon wraps the engine for live reload.
        args = ["run", "--source", f"file:{wav}", "--engine", "local"]
    assert main([*args, "--db", db]) == 0
    store = Store(db)
    session = store.resolve_session("last")
    return " ".join(ln.text for ln in store.lines(session.id)), store, session.id


def test_joined_meeting_keeps_sentence_edges(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The five English clips read on with half-second pauses: the first and last words of the
    sentences that used to be cut are in the transcript."""
    parts = []
    for i in range(5):
        parts += [clip(FLEURS / f"fleurs-en-00{i}.ogg"), silence(0.5)]
    text, _, _ = transcribe(tmp_path, np.concatenate(parts), "joined")
    words = normalise(text).split()
    for word in ("however", "years", "many", "people", "because", "feathers", "sentence", "north"):
        assert word in words, f"{word!r} missing from {text!r}"


def test_a_finished_sentence_ends_at_a_shorter_pause_and_its_sequel_loses_no_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLEURS en-002 (after 2 s of silence) pauses 0.35 s after "made famous" (a finished
    sentence to the decoder, under vad.min_silence_ms): by default the line ends there. What follows is decoded as its
    sequel, with the first line's audio and text before it: together the two lines say word
    for word what one line says with the shorter pause turned off (decoded alone, the second
    line read "spl interest" for "splinters"), and its words are only its own."""
    audio = np.concatenate([silence(2.0), clip(FLEURS / "fleurs-en-002.ogg"), silence(1.0)])
    _, store, sid = transcribe(tmp_path, audio, "sentence")
    lines = store.lines(sid)
    assert len(lines) == 2, [ln.text for ln in lines]
    first, second = lines
    assert first.text.endswith("famous."), first.text
    assert second.audio_start_ms == first.audio_end_ms
    assert second.words and all(w["start_ms"] >= second.audio_start_ms - 100 for w in second.words)
    assert normalise(second.words[0]["text"]) == normalise(second.text.split()[0])

    monkeypatch.setenv("CAPTIOND_VAD_SENTENCE_END_MS", "400")
    whole, store_b, sid_b = transcribe(tmp_path, audio, "one")
    assert normalise(first.text + " " + second.text) == normalise(whole)
    assert "splinters" in normalise(second.text).split()


def test_where_a_sentence_is_cut_does_not_depend_on_the_decoder_speed(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut at a sentence's end waits for the decoder's verdict: fed as fast as it comes and
    with every decode slowed by 0.3 s, the engine cuts the same utterances with the same text
    (``transcribe`` and a live ``run`` alike)."""
    audio = np.concatenate([silence(2.0), clip(FLEURS / "fleurs-en-002.ogg"), silence(1.0),
                            clip(FLEURS / "fleurs-en-001.ogg"), silence(1.0)])

    def finals(slow: bool) -> list[tuple[int, int, str]]:
        cfg = config.parse("", env={}, overrides={})
        engine = LocalEngine(backend, segmenter_params(cfg), partials=False)
        run = backend.run

        def slowed(*args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.3)
            return run(*args, **kwargs)

        if slow:
            monkeypatch.setattr(backend, "run", slowed)

        async def fast() -> AsyncIterator[AudioBlock]:
            for pos in range(0, len(audio), BLOCK):
                yield AudioBlock(audio[pos : pos + BLOCK], RATE, pos)
                await asyncio.sleep(0)

        events: list[object] = []
        asyncio.run(engine.run(fast(), events.append))
        monkeypatch.undo()
        extents = {e.item_id: (e.audio_start_ms, e.audio_end_ms) for e in events
                   if isinstance(e, ItemCommitted) and e.audio_end_ms > e.audio_start_ms}
        return [(*extents[e.item_id], e.text) for e in events if isinstance(e, ItemCompleted) and e.text]

    quick, slow = finals(False), finals(True)
    assert len(quick) >= 3 and quick[0][2].endswith("famous."), quick
    assert sorted(slow) == sorted(quick)


def test_backchannel_between_two_turns_is_a_line(tmp_path: Path) -> None:
    """A lone far-field "Okay." (from an AMI meeting) between two long turns survives as a line."""
    audio = np.concatenate([
        clip(FLEURS / "fleurs-en-003.ogg"), silence(1.0),
        clip(AMI / "trn07.flac", 15.1, 16.1), silence(1.0),
        clip(FLEURS / "fleurs-en-004.ogg"), silence(1.0),
    ])
    _, store, sid = transcribe(tmp_path, audio, "backchannel")
    lines = [normalise(ln.text) for ln in store.lines(sid)]
    assert "okay" in lines, lines


@pytest.mark.parametrize("command", ["transcribe", "run"])
def test_dropped_utterance_is_listed_with_reason(tmp_path: Path, capsys, monkeypatch, command: str) -> None:  # type: ignore[no-untyped-def]
    """Audio the guards throw away (a far-field murmur Whisper calls "Thank you.") is stored,
    by `transcribe` and by `run`, and `captiond show --dropped` lists its time, reason and text."""
    audio = np.concatenate([clip(AMI / "trn01.flac", 0, 4.0), silence(1.0)])
    monkeypatch.setenv("CAPTIOND_OVERLAY_PORT", "0")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    _, store, sid = transcribe(tmp_path, audio, "murmur", command)
    rows = store.dropped(sid)
    assert rows and all(r.reason for r in rows)
    capsys.readouterr()
    db = f"sqlite:///{tmp_path / 'captiond.db'}"
    assert main(["show", str(sid), "--dropped", "--db", db]) == 0
    out = capsys.readouterr().out
    assert f"{len(rows)} dropped" in out
    assert rows[0].reason in out and repr(rows[0].text) in out


def test_without_stable_text_partials_decode_after_agreed_words_and_finals_freely(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With local.stable_text off, words that partials agree on are forced on the partials
    after them (each decodes only what follows), never on the final, and none is marked
    stable."""
    calls: list[tuple[bool, list[int], str]] = []
    run = backend.run

    def recording(req: DecodeRequest, audio: np.ndarray, stop=None):  # type: ignore[no-untyped-def]
        d = run(req, audio, stop)
        calls.append((req.kind == "final", list(req.prefix), d.text))
        return d

    monkeypatch.setattr(backend, "run", recording)
    events = run_engine(backend, np.concatenate([clip(FLEURS / "fleurs-en-001.ogg"), silence(1.0)]),
                        stable_text=False)
    forced = [(prefix, text) for final, prefix, text in calls if not final and prefix]
    assert forced, "no partial started from agreed words"
    for prefix, text in forced:
        assert not text or text.startswith(backend.join(prefix, []))
    assert all(not prefix for final, prefix, _ in calls if final)
    assert all(e.stable == 0 for e in events if isinstance(e, ItemPartial))
    final = " ".join(e.text for e in events if isinstance(e, ItemCompleted))
    assert "capital letter" in normalise(final)


def test_first_text_comes_from_quick_partials_that_are_sure_or_heard_long_enough(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until a line shows text its partials come every FIRST_TEXT_INTERVAL_S (not every
    partial_interval_s), and its first text is a decode the model was sure of (average
    log-probability at Whisper's speech threshold) or one of at least FIRST_TEXT_SURE_AFTER_S
    of speech heard; an unsure early guess is not shown."""
    from captiond.engines import localcore as local
    from captiond.engines.guards import LOGPROB_THRESHOLD

    cfg = config.parse("", env={}, overrides={})
    engine = LocalEngine(backend, segmenter_params(cfg), partial_interval_s=0.5, partials=True)
    decodes: list[tuple[str | None, int, int, str, float]] = []  # item, end, heard, text, logprob
    run = backend.run

    def recording(req: DecodeRequest, audio: np.ndarray, stop=None):  # type: ignore[no-untyped-def]
        opened = engine.core._open
        heard = opened.heard if opened is not None and opened.item == req.item else req.start
        d = run(req, audio, stop)
        if req.kind == "partial":
            decodes.append((req.item, req.end, heard, d.text, d.avg_logprob))
        return d

    monkeypatch.setattr(backend, "run", recording)
    audio = np.concatenate([x for c in sorted(FLEURS.glob("fleurs-en-*.ogg"))
                            for x in (clip(c), silence(1.5))])
    firsts: dict[str, int] = {}  # item -> the partial decode its first text came from

    def emit(event: object) -> None:
        # A partial is decoded only when no other is running: the last one recorded is this.
        if isinstance(event, ItemPartial) and event.item_id not in firsts:
            assert decodes[-1][3] == event.text
            firsts[event.item_id] = len(decodes) - 1

    asyncio.run(engine.run(paced(audio, backend, 0.05), emit))
    assert len(firsts) >= 5
    withheld = quick = 0
    for item, index in firsts.items():
        mine = [i for i, d in enumerate(decodes) if d[0] == item]
        shown = mine.index(index)
        _, end, heard, _, logprob = decodes[index]
        assert logprob >= LOGPROB_THRESHOLD or (end - heard) / RATE >= local.FIRST_TEXT_SURE_AFTER_S
        withheld += sum(1 for i in mine[:shown] if decodes[i][3])
        ends = [decodes[i][1] / RATE for i in mine]
        gaps = [b - a for a, b in zip(ends, ends[1:])]
        # Quicker than partial_interval_s (0.5 s) before the first text, that cadence after it.
        assert all(g <= 0.3 for g in gaps[:shown]), gaps
        assert all(g >= 0.5 - 0.05 for g in gaps[shown:]), gaps
        quick += shown
    assert withheld >= 1, "no unsure early guess was held back"
    assert quick >= 3, "no line needed a second decode for its first text"


def test_without_stable_text_partials_promise_nothing(backend: WhisperBackend) -> None:
    """With local.stable_text off (the default) partials still come but mark no text stable,
    so nothing shown as stable can be taken back by the unconstrained final."""
    events = run_engine(backend, np.concatenate([clip(FLEURS / "fleurs-en-002.ogg"), silence(1.0)]),
                        stable_text=False)
    partials = [e for e in events if isinstance(e, ItemPartial)]
    assert len(partials) >= 5
    assert all(e.stable == 0 for e in partials)
    assert any(isinstance(e, ItemCompleted) and e.text for e in events)


@pytest.mark.parametrize(("text", "loop"), [
    ("Oh, actually, just, yeah. Yeah, yeah. That's it.", False),
    ("No, no, no, that was last week.", False),
    ("Not at all. Not at all. Not at all.", True),
    ("the the the the", True),
    ("we should ship it we should ship it", True),
])
def test_conversational_repeats_are_not_decoder_loops(text: str, loop: bool) -> None:
    """A word said three times ("yeah, yeah, yeah") is how people talk, not a decoder loop
    (an AMI turn was once dropped whole for it); real loops are still caught."""
    assert looks_repetitive(text) is loop


def test_partial_the_model_doubts_shows_nothing(backend: WhisperBackend) -> None:
    """A partial decoded from murmur or from the first fraction of a second of speech, which
    the model itself doubts is speech, carries no text (it used to show "Thank you."-like
    guesses such as "I'm not sure." before the speaker's first word)."""
    for audio in (clip(AMI / "trn01.flac", 0, 4.0), clip(FLEURS / "fleurs-en-001.ogg", 0, 0.6)):
        d = backend.run(partial(audio), audio)
        assert judge(d.new_text, no_speech_prob=d.no_speech_prob, avg_logprob=d.avg_logprob) == "no_speech", d


def test_looping_partial_is_not_decoded_again_on_the_full_window(backend: WhisperBackend) -> None:
    """A partial whose short window makes the decoder loop ("styles, styles, styles") shows
    nothing and is not decoded a second time on the 30 s window."""
    audio = clip(FLEURS / "fleurs-en-000.ogg", 0, 5.0)
    d = backend.run(partial(audio), audio)
    assert judge(d.new_text, no_speech_prob=d.no_speech_prob, avg_logprob=d.avg_logprob) == "repetition"
    assert not d.full_window
    # The core shows nothing and asks for no second decode (tests/test_localcore.py).


def test_stopped_decode_gives_no_text(backend: WhisperBackend) -> None:
    """A decode whose caller no longer needs it (a speculative final after the speaker went
    on) ends after the encoder with no text; the next decode is whole."""
    audio = clip(FLEURS / "fleurs-en-002.ogg")
    req = DecodeRequest(1, "final", "x", 0, len(audio), stoppable=True)
    stopped = backend.run(req, audio, stop=lambda: True)
    assert stopped.stopped and stopped.text == ""
    assert "north" in normalise(backend.run(req, audio, stop=lambda: False).text)


def test_partials_come_less_often_as_the_utterance_grows(backend: WhisperBackend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each partial re-decodes the whole utterance, so once it is long they come every
    PARTIAL_INTERVAL_SHARE of its length instead of every partial_interval_s (once the line
    shows text; before, they come every FIRST_TEXT_INTERVAL_S)."""
    from captiond.engines import localcore as local

    cfg = config.parse("", env={}, overrides={})
    engine = LocalEngine(backend, segmenter_params(cfg), partial_interval_s=0.3, partials=True)
    lengths: list[tuple[int, bool]] = []  # audio decoded, whether its line showed text then
    run = backend.run

    def recording(req: DecodeRequest, audio: np.ndarray, stop=None):  # type: ignore[no-untyped-def]
        if req.kind == "partial":
            lengths.append((len(audio), bool(engine.core._open_text)))
        return run(req, audio, stop)

    monkeypatch.setattr(backend, "run", recording)
    audio = np.concatenate([clip(FLEURS / "fleurs-en-000.ogg"), silence(1.0)])
    asyncio.run(engine.run(paced(audio, backend, 0.3), lambda e: None))
    steps = [(a, b) for (a, _), (b, shown) in zip(lengths, lengths[1:]) if b > a and shown]
    assert len(steps) >= 5
    for a, b in steps:
        assert b - a >= int(max(0.3, local.PARTIAL_INTERVAL_SHARE * b / RATE) * RATE) - BLOCK, (a, b)
    assert any(b - a > int(0.3 * RATE) + BLOCK for a, b in steps)


def test_fitted_final_window_is_the_default_and_tried_again_before_dropping(backend: WhisperBackend) -> None:
    """By default (local.final_window = fit) a sentence's final is decoded on a window fitted
    to it, even one the model is unsure of ("However." alone, average log-probability near
    -1); text the fitted window would drop (a murmur judged no speech) is decoded again on the
    full 30 s window first. With full, every final uses the full window."""
    assert backend.final_window == "fit"
    audio = clip(FLEURS / "fleurs-en-002.ogg")
    clear = backend.run(final(audio), audio)
    assert not clear.full_window and "sintra" in normalise(clear.text) and clear.words
    audio = clip(FLEURS / "fleurs-en-000.ogg", 0.6, 1.7)
    unsure = backend.run(final(audio), audio)
    assert not unsure.full_window and unsure.avg_logprob < -0.5 and "however" in normalise(unsure.text)
    retries = backend.full_window_retries
    murmur = backend.decode(clip(AMI / "trn01.flac", 0, 4.0))
    assert murmur.dropped == "no_speech" and not murmur.text
    assert backend.full_window_retries == retries + 1
    full = whisper_backend(config.parse("", env={}, overrides={"local.final_window": "full"}))
    audio = clip(FLEURS / "fleurs-en-002.ogg")
    assert full.run(final(audio), audio).full_window
