"""The sans-I/O OpenAI transcription protocol: plain values in, events and client events out."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from fakes.openai_realtime import validate_client_event, validate_server_event
from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.events import ItemCommitted, ItemCompleted, ItemFailed, ItemPartial, LineStatus
from captiond.realtime.protocol import (
    BYTES_PER_SAMPLE,
    SAMPLE_RATE,
    Output,
    SessionSettings,
    TranscriptionProtocol,
)
from captiond.transcript.reconciler import Reconciler

MS = SAMPLE_RATE // 1000


def pcm(ms: int, value: int = 1000) -> bytes:
    return int(value).to_bytes(2, "little", signed=True) * (ms * MS)


class ScriptedServer:
    """An in-memory server for the protocol: keeps each connection's buffer and answers commits
    with the events the real service sends, delivered when and how the test decides."""

    def __init__(self) -> None:
        self.buffers: dict[int, bytearray] = {}
        self.items: dict[int, list[str]] = {}
        self.outbox: list[tuple[int, dict[str, Any]]] = []  # (handle, server event)
        self.sent_events: list[dict[str, Any]] = []
        self.counter = 0

    def take(self, out: Output) -> None:
        for handle, event in out.send:
            assert validate_client_event(event) == [], event
            self.sent_events.append(event)
            buf = self.buffers.setdefault(handle, bytearray())
            kind = event["type"]
            if kind == "session.update":
                self.outbox.append((handle, {"type": "session.updated",
                                             "session": event["session"]}))
            elif kind == "input_audio_buffer.append":
                buf += base64.b64decode(event["audio"])
            elif kind == "input_audio_buffer.clear":
                buf.clear()
            elif kind == "input_audio_buffer.commit":
                assert len(buf) >= 100 * MS * BYTES_PER_SAMPLE, "commit under 100 ms"
                self.counter += 1
                items = self.items.setdefault(handle, [])
                sid = f"item_{self.counter:03d}"
                prev = items[-1] if items else None
                items.append(sid)
                text = f"{len(buf) // BYTES_PER_SAMPLE // MS} ms"
                buf.clear()
                self.outbox += [
                    (handle, {"type": "conversation.item.input_audio_transcription.delta",
                              "item_id": sid, "content_index": 0, "delta": text[:2]}),
                    (handle, {"type": "input_audio_buffer.committed", "item_id": sid,
                              "previous_item_id": prev}),
                    (handle, {"type": "conversation.item.added", "previous_item_id": prev,
                              "item": {"id": sid, "type": "message", "role": "user",
                                       "content": [{"type": "input_audio", "transcript": None}]}}),
                    (handle, {"type": "conversation.item.input_audio_transcription.completed",
                              "item_id": sid, "content_index": 0, "transcript": text,
                              "usage": {"type": "duration", "seconds": 1}}),
                ]


def deliver(proto: TranscriptionProtocol, server: ScriptedServer, rec: Reconciler,
            handle: int, event: dict[str, Any], now: float = 0.0) -> None:
    event = {"event_id": "e1", **event}
    if event["type"] != "session.updated":
        assert validate_server_event(event) == [], event
    out = proto.receive(handle, json.dumps(event), now)
    apply(out, server, rec)


def apply(out: Output, server: ScriptedServer, rec: Reconciler) -> None:
    server.take(out)
    for ev in out.events:
        rec.apply(ev)


def connect(proto: TranscriptionProtocol, server: ScriptedServer, rec: Reconciler) -> int:
    handle, out = proto.connection_opened(0.0)
    apply(out, server, rec)
    deliver(proto, server, rec, handle, {"type": "session.created", "session": {
        "type": "transcription", "id": f"sess_{handle}", "object": "realtime.transcription_session",
        "expires_at": 2_000_000_000}})
    # session.updated
    pending = [e for e in server.outbox if e[0] == handle and e[1]["type"] == "session.updated"]
    for e in pending:
        server.outbox.remove(e)
        deliver(proto, server, rec, handle, e[1])
    return handle


def speak(proto: TranscriptionProtocol, server: ScriptedServer, rec: Reconciler, start_ms: int,
          ms: int, block_ms: int = 20) -> None:
    for t in range(start_ms, start_ms + ms, block_ms):
        apply(proto.audio(pcm(block_ms), t * MS, 0.0), server, rec)


def drain(proto: TranscriptionProtocol, server: ScriptedServer, rec: Reconciler,
          order: random.Random | None = None) -> None:
    while server.outbox:
        i = order.randrange(len(server.outbox)) if order else 0
        handle, event = server.outbox.pop(i)
        deliver(proto, server, rec, handle, event)


def test_session_update_is_the_ga_transcription_form() -> None:
    """session.update configures gpt-realtime-whisper with turn_detection null, 24 kHz PCM."""
    update = SessionSettings(delay="medium").session_update()
    assert validate_client_event(update) == []
    audio = update["session"]["audio"]["input"]
    assert update["session"]["type"] == "transcription"
    assert audio["turn_detection"] is None
    assert audio["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["transcription"] == {"model": "gpt-realtime-whisper", "language": "en",
                                      "delay": "medium"}
    other = SessionSettings(model="gpt-4o-transcribe", delay="low").session_update()
    assert "delay" not in other["session"]["audio"]["input"]["transcription"]


def test_bad_server_input_is_counted_never_raised() -> None:
    """Malformed JSON, non-objects, unknown types and missing fields are counted, not fatal."""
    proto = TranscriptionProtocol()
    handle, _ = proto.connection_opened(0.0)
    for raw in ["{nope", "[1,2]", "42", json.dumps({"no": "type"}),
                json.dumps({"type": "brand.new"}),
                json.dumps({"type": "input_audio_buffer.committed"}),
                json.dumps({"type": "conversation.item.input_audio_transcription.completed",
                            "item_id": 3}),
                json.dumps({"type": "error", "error": "x"}),
                json.dumps({"type": "conversation.item.added", "item": None}),
                b"\xff\xfe", "x" * 2_000_000]:
        assert not proto.receive(handle, raw, 0.0).events
    c = proto.counters
    assert c["malformed"] == 5 and c["unknown_type"] == 1 and c["missing_field"] == 5


def test_deltas_before_committed_wait_and_order_comes_from_captiond() -> None:
    """Deltas that arrive before committed are shown once the item is placed, under
    captiond's own id, and items chain in cut order."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    connect(proto, server, rec)
    speak(proto, server, rec, 0, 500)
    apply(proto.commit(0.0), server, rec)
    speak(proto, server, rec, 600, 300)
    apply(proto.commit(0.0), server, rec)
    drain(proto, server, rec)
    lines = rec.lines()
    assert [(ln.item_id, ln.previous_item_id) for ln in lines] == [("oa-1", None),
                                                                  ("oa-2", "oa-1")]
    assert [ln.text for ln in lines] == ["500 ms", "300 ms"]
    assert (lines[1].audio_start_ms, lines[1].audio_end_ms) == (600, 900)


def test_short_utterance_is_cleared_not_committed() -> None:
    """Less than 100 ms is never committed (input_audio_buffer_commit_empty): it is cleared."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    connect(proto, server, rec)
    speak(proto, server, rec, 0, 80)
    out = proto.commit(0.0)
    assert [e["type"] for _, e in out.send] == ["input_audio_buffer.clear"]
    assert proto.counters["cleared_short"] == 1 and not out.events


def test_drop_resends_unsettled_items_and_the_utterance_in_progress() -> None:
    """Items whose completion had not come when the link dropped are committed again on the
    next session under the same ids; nothing is duplicated."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    h1 = connect(proto, server, rec)
    speak(proto, server, rec, 0, 400)
    apply(proto.commit(0.0), server, rec)
    speak(proto, server, rec, 500, 200)  # in progress when the link drops
    server.outbox.clear()  # the dropped session's answers never arrive
    apply(proto.connection_lost(h1, 1.0), server, rec)
    speak(proto, server, rec, 700, 300)  # spoken during the outage: buffered
    apply(proto.commit(1.0), server, rec)
    assert not proto.live()
    connect(proto, server, rec)
    drain(proto, server, rec)
    lines = rec.lines()
    assert [(ln.item_id, ln.text, ln.status) for ln in lines] == [
        ("oa-1", "400 ms", LineStatus.FINAL), ("oa-2", "500 ms", LineStatus.FINAL)]
    c = proto.counters
    assert c["samples_in"] == 900 * MS
    assert c["samples_sent"] == 900 * MS  # each sample once for the first time
    assert c["samples_resent"] == 600 * MS  # item 1 and the 200 ms appended before the drop
    assert proto.unsettled_count() == 0


def test_outage_buffer_overflow_becomes_a_gap() -> None:
    """Speech beyond the outage buffer is reported as a gap, never silently dropped."""
    proto = TranscriptionProtocol(buffer_bytes=500 * MS * BYTES_PER_SAMPLE)
    server, rec = ScriptedServer(), Reconciler()
    gaps = []
    for t in range(0, 800, 20):
        gaps += proto.audio(pcm(20), t * MS, 0.0).gaps
    out = proto.commit(0.0)
    gaps += out.gaps
    assert [(g.start_ms, g.end_ms) for g in gaps] == [(500, 800)]
    assert proto.counters["samples_dropped"] == 300 * MS
    connect(proto, server, rec)
    drain(proto, server, rec)
    assert [ln.text for ln in rec.lines()] == ["500 ms"]


def test_refused_commit_settles_and_later_commits_bind_right() -> None:
    """An error echoing a commit's event_id fails that item only; the next committed binds to
    the next item."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    h = connect(proto, server, rec)
    speak(proto, server, rec, 0, 200)
    out = proto.commit(0.0)
    commit_id = next(e for _, e in out.send if e["type"] == "input_audio_buffer.commit")["event_id"]
    apply(out, server, rec)
    server.outbox.clear()  # the service refused it: no committed
    deliver(proto, server, rec, h, {"type": "error", "error": {
        "type": "invalid_request_error", "code": "input_audio_buffer_commit_empty",
        "message": "buffer too small", "param": None, "event_id": commit_id}})
    server.buffers[h].clear()
    speak(proto, server, rec, 300, 200)
    apply(proto.commit(0.0), server, rec)
    drain(proto, server, rec)
    assert [(ln.item_id, ln.status) for ln in rec.lines()] == [
        ("oa-1", LineStatus.FAILED), ("oa-2", LineStatus.FINAL)]


def test_overdue_items_fail_so_later_lines_flow() -> None:
    """An item whose completion never comes fails after the timeout; a late committed for it
    does not shift the bindings of later items."""
    proto = TranscriptionProtocol(item_timeout_s=5.0)
    server, rec = ScriptedServer(), Reconciler()
    h = connect(proto, server, rec)
    speak(proto, server, rec, 0, 200)
    apply(proto.commit(0.0), server, rec)
    held = list(server.outbox)
    server.outbox.clear()
    speak(proto, server, rec, 300, 300)
    apply(proto.commit(1.0), server, rec)
    out = proto.tick(5.5)
    assert out.events == [ItemFailed("oa-1", "no transcription in time")]
    apply(out, server, rec)
    for _, event in held:  # the late answers for item 1
        deliver(proto, server, rec, h, event)
    drain(proto, server, rec)
    assert [(ln.item_id, ln.status, ln.text) for ln in rec.lines()] == [
        ("oa-1", LineStatus.FAILED, ""), ("oa-2", LineStatus.FINAL, "300 ms")]


def test_rotation_switches_at_a_pause_and_drains_the_old_session() -> None:
    """A second session takes over only at a pause; the old one is closed once its pending
    completions arrive; no audio goes to both."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    h1 = connect(proto, server, rec)
    speak(proto, server, rec, 0, 300)
    h2 = connect(proto, server, rec)  # ready while an utterance is in progress
    assert proto.active_handle == h1
    speak(proto, server, rec, 300, 200)
    out = proto.commit(0.0)
    assert proto.active_handle == h2 and not out.close  # h1 still owes item 1
    apply(out, server, rec)
    speak(proto, server, rec, 600, 200)
    apply(proto.commit(0.0), server, rec)
    closes: list[tuple[int, int]] = []
    while server.outbox:
        handle, event = server.outbox.pop(0)
        out = proto.receive(handle, json.dumps({"event_id": "e", **event}), 0.0)
        closes += out.close
        apply(out, server, rec)
    assert closes == [(h1, 1000)]
    assert len(server.buffers[h1]) == 0 and len(server.buffers[h2]) == 0
    assert [ln.text for ln in rec.lines()] == ["500 ms", "200 ms"]
    assert proto.counters["samples_resent"] == 0


def test_session_expired_error_moves_work_to_the_next_session() -> None:
    """session_expired (then close 1001) resends that session's unsettled items."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    h = connect(proto, server, rec)
    speak(proto, server, rec, 0, 300)
    apply(proto.commit(0.0), server, rec)
    server.outbox.clear()
    deliver(proto, server, rec, h, {"type": "error", "error": {
        "type": "invalid_request_error", "code": "session_expired", "message": "expired",
        "param": None, "event_id": None}})
    assert not proto.live()
    apply(proto.connection_lost(h, 0.0), server, rec)
    connect(proto, server, rec)
    drain(proto, server, rec)
    assert [ln.text for ln in rec.lines()] == ["300 ms"]


def test_legacy_event_names_are_accepted() -> None:
    """transcription_session.created/updated and conversation.item.created work too."""
    proto, rec = TranscriptionProtocol(), Reconciler()
    handle, _ = proto.connection_opened(0.0)
    proto.receive(handle, json.dumps({"type": "transcription_session.created",
                                      "session": {"id": "s", "expires_at": 99}}), 0.0)
    proto.receive(handle, json.dumps({"type": "transcription_session.updated",
                                      "session": {}}), 0.0)
    assert proto.live() and proto.expires_at() == 99
    proto.audio(pcm(200), 0, 0.0)
    for ev in proto.commit(0.0).events:
        rec.apply(ev)
    for msg in [{"type": "input_audio_buffer.committed", "item_id": "a", "previous_item_id": None},
                {"type": "conversation.item.created", "item": {"id": "a"}},
                {"type": "conversation.item.input_audio_transcription.completed",
                 "item_id": "a", "transcript": "hi"}]:
        for ev in proto.receive(handle, json.dumps(msg), 0.0).events:
            rec.apply(ev)
    assert [(ln.item_id, ln.text) for ln in rec.lines()] == [("oa-1", "hi")]
    assert proto.counters["unknown_type"] == 0


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=12),
    drops=st.sets(st.integers(min_value=0, max_value=11), max_size=4),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_any_delivery_order_and_drops_give_every_item_once_in_order(
    lengths: list[int], drops: set[int], seed: int
) -> None:
    """Whatever the order server events arrive in and wherever links drop, every utterance
    ends final, once, in cut order, with its own audio's text."""
    order = random.Random(seed)
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    handle = connect(proto, server, rec)
    t = 0
    expected = []
    for i, tens in enumerate(lengths):
        ms = tens * 20 + 100
        speak(proto, server, rec, t, ms)
        apply(proto.commit(0.0), server, rec)
        expected.append(f"{ms} ms")
        t += ms + 100
        # deliver part of what the server has, in random order
        for _ in range(order.randrange(len(server.outbox) + 1)):
            h, event = server.outbox.pop(order.randrange(len(server.outbox)))
            deliver(proto, server, rec, h, event)
        if i in drops:
            server.outbox = [(h, e) for h, e in server.outbox if h != handle]
            apply(proto.connection_lost(handle, 0.0), server, rec)
            handle = connect(proto, server, rec)
    drain(proto, server, rec, order)
    lines = rec.lines()
    assert [ln.text for ln in lines] == expected
    assert [ln.item_id for ln in lines] == [f"oa-{i + 1}" for i in range(len(lengths))]
    assert all(ln.status is LineStatus.FINAL for ln in lines)
    assert proto.unsettled_count() == 0
    assert proto.counters["samples_sent"] == proto.counters["samples_in"]


def test_event_types() -> None:
    """The protocol emits only the shared transcript events."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    connect(proto, server, rec)
    speak(proto, server, rec, 0, 200)
    out = proto.commit(0.0)
    server.take(out)
    events = list(out.events)
    while server.outbox:
        h, e = server.outbox.pop(0)
        events += proto.receive(h, json.dumps({"event_id": "x", **e}), 0.0).events
    assert {type(e) for e in events} == {ItemCommitted, ItemPartial, ItemCompleted}


def test_switch_now_moves_the_utterance_in_progress_whole() -> None:
    """Near expiry with no pause: the utterance is cleared from the old session and appended
    whole to the new one, then committed there once."""
    proto, server, rec = TranscriptionProtocol(), ScriptedServer(), Reconciler()
    h1 = connect(proto, server, rec)
    speak(proto, server, rec, 0, 300)
    h2 = connect(proto, server, rec)
    out = proto.switch_now(0.0)
    assert (h1, {"type": "input_audio_buffer.clear"}) in out.send
    assert (h1, 1000) in out.close  # it owed nothing
    apply(out, server, rec)
    assert proto.active_handle == h2
    speak(proto, server, rec, 300, 200)
    apply(proto.commit(0.0), server, rec)
    drain(proto, server, rec)
    assert [ln.text for ln in rec.lines()] == ["500 ms"]
    assert len(server.buffers[h1]) == 0 and server.items.get(h1) is None
    assert proto.counters["moved_utterances"] == 1
    assert proto.counters["samples_resent"] == 300 * MS


def test_completions_store_the_configured_language() -> None:
    """The service's completion events name no language: a line stores engine.language
    (none when the service auto-detects)."""
    for language in ("de", None):
        proto = TranscriptionProtocol(SessionSettings(language=language))
        server, rec = ScriptedServer(), Reconciler()
        connect(proto, server, rec)
        speak(proto, server, rec, 0, 500)
        apply(proto.commit(0.0), server, rec)
        drain(proto, server, rec)
        [line] = rec.lines()
        assert line.status is LineStatus.FINAL and line.language == language
