"""Live translation: protocol, segmentation, alignment, storage, faults, cost.

The service is the fake in ``fakes/openai_translate.py`` (real WebSocket on 127.0.0.1), every
event validated against ``openai.types.realtime``'s translation models; input is the non-English
FLEURS clips; the source captions come from the OpenAI engine against the transcription fake.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from conftest import FLEURS
from fakes.openai_realtime import FakeRealtimeServer
from fakes.openai_translate import FakeTranslateServer, Faults, validate_client_event
from fakes.speech import ArraySource, load
from hypothesis import given, settings
from hypothesis import strategies as st
from needs import need_portaudio

from captiond.config import parse
from captiond.engines.openai import OpenAIEngine, OpenAIOptions
from captiond.engines.translate import TranslateOptions, TranslationEngine, build_translators
from captiond.errors import ConfigError
from captiond.events import ItemCommitted, ItemCompleted, ItemPartial
from captiond.pipeline import Session, Stream
from captiond.realtime.translate import (
    SUPPORTED_TARGETS,
    LineSegmenter,
    SegmentParams,
    TranslateSettings,
    TranslationProtocol,
)
from captiond.transcript.reconciler import Reconciler
from captiond.transcript.store import Store

KEY = "sk-test-translate-SECRET-0a1b2c3d4e"
CLIPS = [FLEURS / f"fleurs-{lang}-000.ogg" for lang in ("de", "es", "fr", "pt")]
SCRIPT = [
    "Uno alfa beta gamma delta. Uno epsilon zeta eta theta iota kappa lambda.",
    "Dos mu nu xi omicron pi. Dos rho sigma tau upsilon phi chi psi omega.",
    "Tres rojo verde azul. Tres negro blanco gris amarillo naranja violeta.",
    "Cuatro sol luna estrella. Cuatro cielo mar tierra fuego agua viento.",
]
PAUSE_S = 1.5


def _protocol(**kw: Any) -> TranslationProtocol:
    return TranslationProtocol(TranslateSettings("es"), item_prefix="t-", buffer_bytes=48_000 * 2,
                               resend_bytes=48_000 * 4, rotate_before_s=60.0, **kw)


def _ev(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": "e1", **fields})


# -- the pure protocol -----------------------------------------------------------------------


def test_protocol_configures_then_streams_and_maps_elapsed_to_the_stream_clock() -> None:
    p = _protocol()
    pcm = b"\x01\x00" * 4800  # 200 ms
    early = p.audio(pcm, 24_000 * 10, 0.0)  # captured at 10 s, before any session
    assert not early.send and p.buffered_s() == pytest.approx(0.2)
    h = p.connection_opened()
    out = p.receive(h, _ev("session.created", session={
        "id": "sess_1", "type": "translation", "model": "gpt-realtime-translate",
        "expires_at": 2_000_000_000, "audio": {}}), 0.0, 0.0)
    # The update goes first, the buffered audio right behind it on the same socket.
    assert {handle for handle, _ in out.send} == {h}
    update, *sent = [e for _, e in out.send]
    assert validate_client_event(update) == []
    assert update["session"]["audio"]["output"]["language"] == "es"
    assert [e["type"] for e in sent] == ["session.input_audio_buffer.append"]
    assert all(validate_client_event(e) == [] for e in sent)
    assert base64.b64decode(sent[0]["audio"]) == pcm
    # A hole in the captured stream (device lost for 5 s): the next audio is a new run.
    p.audio(pcm, 24_000 * 15, 0.2)
    out = p.receive(h, _ev("session.output_transcript.delta", delta="Hola", elapsed_ms=200), 1, 0)
    committed = [e for e in out.events if isinstance(e, ItemCommitted)]
    assert committed[0].audio_start_ms == 10_000 and committed[0].audio_end_ms == 10_200
    out = p.receive(h, _ev("session.output_transcript.delta", delta=" mundo", elapsed_ms=400), 1, 0)
    assert [e for e in out.events if isinstance(e, ItemCommitted)][-1].audio_end_ms == 15_200


def test_protocol_never_raises_on_bad_input() -> None:
    p = _protocol()
    h = p.connection_opened()
    junk: list[Any] = ["{not json", b"\xff\xfe", "[]", "null", '{"type": 5}',
                       _ev("session.output_transcript.delta", delta=None, elapsed_ms="x"),
                       _ev("session.output_transcript.delta", delta="x", elapsed_ms=-5),
                       _ev("session.output_audio.delta", delta="***", elapsed_ms=True),
                       _ev("session.created", session="nope"), _ev("error", error=None),
                       _ev("session.unheard_of")]
    for raw in junk:
        p.receive(h, raw, 0.0, 0.0)
    p.receive(99, _ev("session.closed"), 0.0, 0.0)  # unknown handle
    p.connection_lost(99, 0.0)
    assert p.counters["bad_messages"] >= 5


def test_a_dropped_session_resends_what_it_had_not_translated() -> None:
    p = _protocol()
    h = p.connection_opened()
    p.receive(h, _ev("session.created", session={"expires_at": 1}), 0, 0)
    for i in range(5):  # 1 s of audio, frames at 0.0-1.0 s
        p.audio(b"\0\0" * 4800, i * 4800, 0)
    p.receive(h, _ev("session.output_transcript.delta", delta="Hola", elapsed_ms=400), 0, 0)
    p.connection_lost(h, 0)
    assert p.counters["samples_resent"] == 3 * 4800  # 0.4-1.0 s goes again
    assert p.buffered_s() == pytest.approx(0.6)


def test_outage_beyond_the_buffer_is_a_gap() -> None:
    p = _protocol()  # buffer: 2 s
    gaps = []
    for i in range(15):  # 3 s with no session
        gaps += p.audio(b"\0\0" * 4800, i * 4800, 0).gaps
    assert p.buffered_s() == pytest.approx(2.0)
    assert sum(g.end_ms - g.start_ms for g in gaps) == 1000 and gaps[0].start_ms == 0


# -- segmentation -----------------------------------------------------------------------------


def _fold(events: list[Any]) -> tuple[dict[str, str], list[tuple[str, str | None]], dict]:
    finals: dict[str, str] = {}
    chain: list[tuple[str, str | None]] = []
    times: dict[str, tuple[int, int]] = {}
    for e in events:
        if isinstance(e, ItemCommitted):
            if e.item_id not in times:
                chain.append((e.item_id, e.previous_item_id))
                times[e.item_id] = (e.audio_start_ms, e.audio_end_ms)
            a, b = times[e.item_id]
            times[e.item_id] = (min(a, e.audio_start_ms), max(b, e.audio_end_ms))
        elif isinstance(e, ItemCompleted):
            finals[e.item_id] = e.text
    return finals, chain, times


words = st.text(alphabet="abcdefghij", min_size=1, max_size=30)
punct = st.sampled_from(["", "", "", ".", ",", "?", "!"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(words, punct, st.integers(0, 6), st.booleans()), min_size=1,
                max_size=80),
       st.integers(20, 120))
def test_segmenter_keeps_every_word_in_order_in_bounded_lines(
    parts: list[tuple[str, str, int, bool]], max_chars: int
) -> None:
    seg = LineSegmenter("t-", SegmentParams(max_chars=max_chars), language="es")
    events: list[Any] = []
    elapsed, now = 0, 0.0
    for word, p, frames, split in parts:
        elapsed += 200 * frames
        now += 0.2 * frames
        text = " " + word + p
        # Several deltas may share an elapsed_ms; a word may arrive in two pieces.
        pieces = [text[: len(text) // 2], text[len(text) // 2 :]] if split else [text]
        for piece in pieces:
            events += seg.push(piece, elapsed, now)
        events += seg.tick(now)
    events += seg.pause()
    finals, chain, times = _fold(events)
    lines = [finals[i] for i, _ in chain]
    assert " ".join(lines).split() == "".join(" " + w + p for w, p, _, _ in parts).split() \
        or "".join(lines).replace(" ", "") == "".join(w + p for w, p, _, _ in parts)
    assert all(0 < len(t) <= max_chars for t in lines)
    assert [prev for _, prev in chain] == [None] + [i for i, _ in chain[:-1]]
    starts = [times[i][0] for i, _ in chain]
    assert starts == sorted(starts)
    assert all(times[i][0] <= times[i][1] for i, _ in chain)


def test_segmenter_ends_lines_at_sentences_pauses_and_idle() -> None:
    seg = LineSegmenter("t-", SegmentParams(pause_ms=1000, idle_s=2.0), language="es")
    ev: list[Any] = []
    for i, w in enumerate(["Hola", " a", " todos", " los", " presentes.", " Hoy", " 3.5", " grados"]):
        ev += seg.push(w, 200 * (i + 1), 0.2 * i)
    ev += seg.push(" Luego", 200 * 8 + 1200, 2.0)  # a 1.2 s pause in model time
    ev += seg.tick(3.0)
    assert not [e for e in ev if isinstance(e, ItemCompleted) and e.text == "Luego"]
    ev += seg.tick(4.1)  # idle 2 s: the speaker stopped
    finals, chain, _ = _fold(ev)
    assert [finals[i] for i, _ in chain] == ["Hola a todos los presentes.", "Hoy 3.5 grados",
                                             "Luego"]
    assert any(isinstance(e, ItemPartial) and e.text == "Hola a todos" for e in ev)


def test_unsupported_targets_are_rejected_with_the_list() -> None:
    with pytest.raises(ConfigError) as err:
        parse('[translate]\ntargets = ["es", "xx"]\n', env={})
    assert "'xx'" in str(err.value) and ", ".join(SUPPORTED_TARGETS) in str(err.value)
    assert len(SUPPORTED_TARGETS) == 13
    cfg = parse('[translate]\ntargets = ["es"]\n', env={})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_translators(cfg, api_key="")


# -- end to end: pipeline, store, alignment, faults, cost -------------------------------------

pytestmark_e2e = [pytest.mark.asyncio, pytest.mark.timeout(120)]


async def _run(db_url: str, clips: list, *, t_faults: Faults | None = None, t_key: str = KEY,
               targets: tuple[str, ...] = ("es",), speed: float = 6.0,
               source_language: str = "de", rotate_before_s: float = 1.0) -> dict[str, Any]:
    audio = _conversation(clips)
    async with FakeRealtimeServer(KEY) as src, \
            FakeTranslateServer(KEY, script=SCRIPT, source_language=source_language,
                                faults=t_faults) as tr:
        engine = OpenAIEngine(KEY, OpenAIOptions(url=src.url, language=None))
        translators = [TranslationEngine(t_key, lang, TranslateOptions(url=tr.url,
                                                            rotate_before_s=rotate_before_s))
                       for lang in targets]
        store = Store.open(db_url)
        session = Session(store, [Stream(ArraySource(audio, speed=speed), engine,
                                         translators=translators)], queue_s=60.0)
        sid = await session.run()
        return {"store": store, "sid": sid, "engine": engine, "translators": translators,
                "tr": tr, "src": src, "audio_s": len(audio) / 24_000, "session": session}


def _conversation(clips: list) -> np.ndarray:
    """The clips at one speaking level (FLEURS levels differ by 35 dB), pauses between."""
    gap = np.zeros(int(PAUSE_S * 24_000), dtype=np.float32)
    parts = [gap]
    for c in clips:
        x = load(c)
        frames = np.sqrt(np.mean(x[: len(x) // 4800 * 4800].reshape(-1, 4800) ** 2, axis=1))
        parts += [(x * (0.1 / np.percentile(frames, 90))).astype(np.float32), gap]
    return np.concatenate(parts)


def _clip_spans(clips: list) -> list[tuple[int, int]]:
    spans, t = [], PAUSE_S
    for c in clips:
        d = len(load(c)) / 24_000
        spans.append((int(t * 1000), int((t + d) * 1000)))
        t += d + PAUSE_S
    return spans


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_translated_lines_are_stored_on_their_track_next_to_the_right_source_lines(
    db_url: str,
) -> None:
    r = await _run(db_url, CLIPS, targets=("es", "fr"))
    store, sid, tr = r["store"], r["sid"], r["tr"]
    assert tr.violations == []
    source = [x for x in store.lines(sid) if x.text]
    assert source and all(x.track == "original" for x in source)
    spans = _clip_spans(CLIPS)
    for lang in ("es", "fr"):
        lines = [x for x in store.lines(sid, track=lang)]
        assert lines and all(x.track == lang and x.status == "final" for x in lines)
        assert [x.seq for x in lines] == list(range(len(lines)))
        # Every word of the script arrived, in order.
        assert " ".join(x.text for x in lines).split() == " ".join(SCRIPT).split()
        for x in lines:
            clip = next(i for i, s in enumerate(SCRIPT) if x.text.split()[0] in s.split())
            # The translated line overlaps its clip's speech more than any other clip...
            overlaps = [_overlap((x.audio_start_ms, x.audio_end_ms), s) for s in spans]
            assert overlaps.index(max(overlaps)) == clip, (x.text, x.audio_start_ms, spans)
            # ...and the source line it overlaps most is one of that clip's lines.
            best = max(source, key=lambda s: _overlap((x.audio_start_ms, x.audio_end_ms),
                                                      (s.audio_start_ms, s.audio_end_ms)))
            mid = (best.audio_start_ms + best.audio_end_ms) // 2
            assert spans[clip][0] - 500 <= mid <= spans[clip][1] + 500
    # Cost: transcription + two translation sessions, each streamed the whole stream.
    row = store.resolve_session(sid)
    t_cost = sum(t.cost_usd() for t in r["translators"])
    assert t_cost == pytest.approx(2 * r["audio_s"] / 60 * 0.034, rel=0.02)
    assert row.cost_usd == pytest.approx(r["engine"].cost_usd() + t_cost, abs=1e-4)
    assert r["session"].stats()["cost_usd"] == pytest.approx(row.cost_usd, abs=1e-4)
    assert all(t.audio_out_s > 0 for t in r["translators"])


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_translation_survives_drops(db_url: str) -> None:
    r = await _run(db_url, CLIPS[:2], t_faults=Faults(drop_after_s=2.0, junk=True), speed=4.0)
    store, sid, tr = r["store"], r["sid"], r["tr"]
    t = r["translators"][0]
    assert tr.violations == []
    assert len(tr.sessions) >= 3 and t.protocol.counters["drops"] >= 2
    assert t.protocol.counters["samples_resent"] > 0
    assert t.protocol.counters["bad_messages"] >= 2  # the junk, counted, not raised
    _assert_translated(store, sid)


@pytest.mark.parametrize("rotate_before_s", [1.0, 0.01])
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_translation_survives_session_caps(db_url: str, rotate_before_s: float) -> None:
    """Rotated before the cap (old session flushed by session.close), or cut by it (the
    audio it had not translated is sent to the next session)."""
    r = await _run(db_url, CLIPS[:2], t_faults=Faults(session_cap_s=3.0), speed=4.0,
                   rotate_before_s=rotate_before_s)
    store, sid, tr = r["store"], r["sid"], r["tr"]
    t = r["translators"][0]
    assert tr.violations == []
    assert len(tr.sessions) >= 3
    if rotate_before_s >= 1.0:
        assert t.protocol.counters["rotations"] >= 2
    else:
        assert t.protocol.counters["samples_resent"] > 0
    _assert_translated(store, sid)


@pytest.mark.parametrize("faults", [
    Faults(session_cap_s=25.0),
    Faults(clock_skew_s=-7200.0, date_header=False),
], ids=["25s-lifetime", "clock-2h-fast-no-date"])
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_translation_opens_no_reconnect_storm(db_url: str, faults: Faults) -> None:
    """A 25 s advertised lifetime (below rotate_before_s, 300 s) or a client clock two hours
    fast (expires_at long past by the client's clock) opens one session, perhaps a standby;
    not a new one at once and forever."""
    r = await _run(db_url, CLIPS[:2], t_faults=faults, rotate_before_s=300.0)
    store, sid, tr = r["store"], r["sid"], r["tr"]
    assert tr.violations == []
    assert len(tr.handshakes) <= 2, tr.handshakes[:10]
    _assert_translated(store, sid)


def _assert_translated(store: Store, sid: int) -> None:
    lines = store.lines(sid, track="es")
    assert len(lines) >= 2 and [x.seq for x in lines] == list(range(len(lines)))
    assert all(x.status == "final" and x.text for x in lines)
    # A cut restarts the fake's utterance (it takes the next script text): any script words.
    words = set(" ".join(SCRIPT).split())
    assert all(w in words for x in lines for w in x.text.split())
    starts = [x.audio_start_ms for x in lines]
    assert starts == sorted(starts)
    assert [x for x in store.lines(sid) if x.text]  # source captions unaffected


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_translation_failure_leaves_the_source_captions_intact(db_url: str) -> None:
    r = await _run(db_url, CLIPS[:2], t_key="sk-wrong-key-for-translation-000", speed=6.0)
    store, sid = r["store"], r["sid"]
    t = r["translators"][0]
    assert t.state == "failed" and "401" in (t.failed or "")
    assert r["tr"].handshakes == [401]
    assert store.lines(sid, track="es") == []
    source = [x for x in store.lines(sid) if x.text]
    assert len(source) >= 2 and store.resolve_session(sid).status == "completed"


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_speech_already_in_the_target_language_gives_no_lines(db_url: str) -> None:
    r = await _run(db_url, CLIPS[:1], targets=("de",), speed=6.0, source_language="de")
    assert r["tr"].violations == [] and r["tr"].utterances >= 1
    assert r["store"].lines(r["sid"], track="de") == []
    assert [x for x in r["store"].lines(r["sid"]) if x.text]


def test_reconciler_places_segmenter_lines_in_order() -> None:
    """The segmenter's chain is one the reconciler places without orphans."""
    seg = LineSegmenter("t-", language="es")
    rec = Reconciler(track="es")
    for i, w in enumerate(np.array(" ".join(SCRIPT).split())):
        for e in seg.push(" " + str(w), 200 * (i + 1), 0.2 * i):
            rec.apply(e)
    for e in seg.pause():
        rec.apply(e)
    assert rec.settle_orphans() == []
    lines = rec.lines()
    assert " ".join(x.text for x in lines).split() == " ".join(SCRIPT).split()
    assert all(x.track == "es" for x in lines)


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_daemon_translate_setting_stores_feeds_saves_and_exports(tmp_path, monkeypatch) -> None:
    """The wiring: translate.targets through Daemon.build_streams; lines on the 'de' track in
    the store and on the overlay feed, translated speech in a WAV, `captiond export --lang de`."""
    import wave

    from subtitle_readers import verify_file

    from captiond import cli
    from captiond.config import load
    from captiond.daemon import Daemon

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CAPTIOND_DATABASE_DATA_DIR", str(tmp_path / "data"))
    clip = FLEURS / "fleurs-es-000.ogg"
    async with FakeRealtimeServer(KEY) as src, \
            FakeTranslateServer(KEY, script=SCRIPT, source_language="es") as tr:
        cfg = load(None, overrides={
            "audio.source": f"file:{clip}", "engine.name": "openai", "openai.url": src.url,
            "openai.translate_url": tr.url, "translate.targets": "de",
            "translate.audio_dir": str(tmp_path / "speech"),
        })
        daemon = Daemon(cfg, realtime=False, services=[], view=lambda _u: None)
        feed = daemon.feed.subscribe("test")
        sid = await daemon.run()
    assert tr.violations == []
    store = Store.open(cfg.database_url())
    lines = store.lines(sid, track="de")
    assert lines and " ".join(x.text for x in lines).split() == SCRIPT[0].split()
    assert all(x.engine == "openai-translate" for x in lines)
    seen = []
    while (m := feed.get_nowait()) is not None:
        seen.append(m)
    assert any(m.get("track") == "de" and m.get("text") for m in seen)
    (wav_path,) = (tmp_path / "speech").glob("translation-*-de.wav")
    with wave.open(str(wav_path)) as w:
        assert w.getframerate() == 24_000 and w.getnframes() >= 24_000 * len(SCRIPT[0].split()) // 5
    out = tmp_path / "de.srt"
    assert await asyncio.to_thread(cli.main, ["export", str(sid), "--lang", "de", "-o", str(out)]) == 0
    cues = verify_file(out, browser=False)
    assert " ".join(c[2] for c in cues).split() == SCRIPT[0].split()


def _ready(p: TranslationProtocol, expires_at: int = 2_000_000_000) -> tuple[int, Any]:
    h = p.connection_opened(0, server_time=0)  # the server's clock reads 0 at monotonic 0
    return h, p.receive(h, _ev("session.created", session={"expires_at": expires_at}), 0, 0)


def test_rotation_shows_the_old_sessions_tail_before_the_new_sessions_text() -> None:
    p = _protocol()
    old, _ = _ready(p, expires_at=1_000)
    p.audio(b"\0\0" * 4800, 0, 0)
    assert p.wants_connection(now=1_000 - 30)  # within rotate_before_s (60 s) of expiry
    new, out = _ready(p)
    assert (old, {"type": "session.close"}) in out.send
    p.audio(b"\0\0" * 4800, 4800, 0)  # goes to the new session
    lines: list[Any] = []
    lines += p.receive(new, _ev("session.output_transcript.delta", delta=" Nuevo", elapsed_ms=200),
                       1, 0).events
    lines += p.receive(old, _ev("session.output_transcript.delta", delta="Viejo", elapsed_ms=200),
                       1, 0).events
    lines += p.receive(old, _ev("session.closed"), 1, 0).events
    lines += p.connection_lost(old, 1).events
    lines += p.finish()
    finals, chain, times = _fold(lines)
    assert [finals[i] for i, _ in chain] == ["Viejo", "Nuevo"]
    assert times[chain[0][0]] == (0, 200) and times[chain[1][0]] == (200, 400)
    assert p.counters["rotations"] == 1


def test_end_of_input_closes_sessions_and_flushes_audio_a_drop_left_behind() -> None:
    p = _protocol()
    h, _ = _ready(p)
    p.audio(b"\0\0" * 4800, 0, 0)
    p.connection_lost(h, 0)  # nothing translated yet: the 200 ms go again
    out = p.close_all()
    assert out.send == [] and p.wants_connection(now=0)
    h2, out = _ready(p)
    assert [e["type"] for _, e in out.send] == ["session.update",
                                                "session.input_audio_buffer.append",
                                                "session.close"]
    assert not p.wants_connection(now=0)


def test_play_translation_is_checked_at_start(tmp_path) -> None:
    """translate.play names a target and an output device that opens, or start-up refuses it;
    translate.audio_dir writes one WAV per target."""
    cfg = parse('[translate]\ntargets = ["es", "de"]\nplay = "fr"\n', env={})
    with pytest.raises(ConfigError, match="fr is not among the translation targets"):
        build_translators(cfg, api_key=KEY)
    with pytest.raises(ConfigError, match="LANG one of es, pt"):
        parse('[translate]\nplay = "xx"\n', env={})
    cfg = parse(f'[translate]\ntargets = ["ja", "es"]\naudio_dir = "{tmp_path}"\n', env={})
    engines = build_translators(cfg, api_key=KEY)
    assert [(e.target, e.track, e.name) for e in engines] == [
        ("ja", "ja", "openai-translate"), ("es", "es", "openai-translate")]
    assert len(list(tmp_path.glob("translation-*.wav"))) == 2
    for e in engines:
        for sink in e.sinks:
            sink.close()
    need_portaudio()  # opening an output device is PortAudio's job
    cfg = parse('[translate]\ntargets = ["es"]\nplay = "es:no-such-device-xyz"\n', env={})
    with pytest.raises(ConfigError, match="cannot open output device 'no-such-device-xyz'"):
        build_translators(cfg, api_key=KEY)


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_editing_translate_targets_opens_and_closes_sessions_live(tmp_path, monkeypatch) -> None:
    """A config edit from ["fr"] to ["de"] while the daemon runs: a German session opens and
    its lines are stored; the French one is closed (its lines so far are kept); same session,
    no restart."""
    from captiond.config import load
    from captiond.daemon import Daemon

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "config.toml"
    clip = FLEURS / "fleurs-es-000.ogg"
    async with FakeRealtimeServer(KEY) as src, \
            FakeTranslateServer(KEY, script=SCRIPT, source_language="es") as tr:
        common = (f'[overlay]\nenabled = false\n[openai]\nurl = "{src.url}"\n'
                  f'translate_url = "{tr.url}"\n[engine]\nname = "openai"\n')
        path.write_text(common + '[translate]\ntargets = ["fr"]\n')
        cfg = load(path, env={}, overrides={
            "audio.source": f"file:{clip}", "database.url": f"sqlite:///{tmp_path / 'a.db'}"})
        daemon = Daemon(cfg, services=[], view=lambda _u: None)
        task = asyncio.create_task(daemon.run())
        while not daemon.ready:
            assert not task.done()
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.0)  # French is translating
        (french_engine,) = [t.engine for t in daemon.session.streams[0].tees]
        assert french_engine.track == "fr"
        path.write_text(common + '[translate]\ntargets = ["de"]\n')
        assert await daemon.reload() is True
        assert daemon.cfg["translate.targets"] == ["de"]
        assert "translation sessions" not in daemon.restart_needed
        tracks = [t.engine.track for t in daemon.session.streams[0].tees]
        sid = await task
    assert tracks == ["de"]
    assert french_engine.cost_usd() > 0  # it streamed until the edit, then was closed
    assert tr.violations == []
    store = Store.open(cfg.database_url())
    assert store.lines(sid, track="de"), "the added target produced lines"
    french = store.lines(sid, track="fr", statuses=("final", "partial", "failed"))
    assert all(x.status == "final" for x in french)  # closed cleanly, nothing left open
    assert len({s.id for s, _ in store.list_sessions()}) == 1
