"""The OpenAI engine against the fake realtime server: every fault it must survive, real sockets.

Each run streams the same two FLEURS clips (with pauses) through the real VAD at 5x real time,
so the utterance cuts are the same in every run; the fake answers "<ms> ms" for each
committed buffer. A faulty run must therefore give exactly the baseline's lines: same times,
same text (each item got exactly its own audio), same order, all final.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import EN_CLIPS
from fakes.openai_realtime import FakeRealtimeServer, Faults
from fakes.speech import conversation, stream

from captiond.engines.openai import OpenAIAuthError, OpenAIEngine, OpenAIOptions
from captiond.events import Gap, Line, LineStatus
from captiond.transcript.reconciler import Reconciler

KEY = "sk-test-captiond-0123456789abcdefXYZ"
SPEED = 5.0

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


@dataclass
class Run:
    lines: list[Line]
    engine: OpenAIEngine
    server: FakeRealtimeServer
    gaps: list[Gap] = field(default_factory=list)
    handed_out: int = 0


_AUDIO: np.ndarray | None = None


def audio() -> np.ndarray:
    global _AUDIO
    if _AUDIO is None:
        _AUDIO = conversation(EN_CLIPS[0:2], pause_s=1.5)
    return _AUDIO


async def run_engine(faults: Faults | None = None, *, key: str = KEY, during: Any = None,
                     **options: Any) -> Run:
    async with FakeRealtimeServer(KEY, faults=faults) as server:
        engine = OpenAIEngine(key, OpenAIOptions(url=server.url, **options),
                              rng=random.Random(7))
        run = Run([], engine, server)
        engine.set_gap_sink(run.gaps.append)
        rec = Reconciler()
        counter = [0]
        helper = asyncio.ensure_future(during(server)) if during else None
        try:
            await engine.run(stream(audio(), speed=SPEED, counter=counter), rec.apply)
        finally:
            if helper is not None:
                helper.cancel()
        run.lines = rec.lines()
        run.handed_out = counter[0]
        return run


def shape(lines: list[Line]) -> list[tuple[int, int, str, LineStatus]]:
    return [(ln.audio_start_ms, ln.audio_end_ms, ln.text, ln.status) for ln in lines]


def assert_nothing_lost(run: Run) -> None:
    """Every frame accounted for: all audio reached the engine; every speech sample went on
    the wire once for the first time and came back transcribed; none dropped. (Bytes in flight
    when a link dies never reach the server -- that is why unanswered items are resent -- so
    the server may have received less than was sent.) The chain is continuous."""
    assert run.server.violations == []
    c = run.engine.protocol.counters
    assert c["samples_dropped"] == 0 and run.gaps == []
    assert c["samples_in"] == c["samples_sent"] + c["samples_cleared"]
    assert c["samples_completed"] == c["samples_sent"] - c["samples_cleared"]
    received = sum(s.appended_samples for s in run.server.sessions)
    assert received <= c["samples_sent"] + c["samples_resent"]
    completed_at_server = sum(i.samples for i in run.server.items() if i.outcome == "completed")
    assert completed_at_server >= c["samples_completed"]
    assert round(run.engine.audio_s * 24_000) == run.handed_out == len(audio())
    for before, after in itertools.pairwise(run.lines):
        assert after.previous_item_id == before.item_id
        assert after.audio_start_ms >= before.audio_end_ms


_BASELINE: Run | None = None


async def baseline() -> Run:
    global _BASELINE
    if _BASELINE is None:
        _BASELINE = await run_engine()
    return _BASELINE


async def test_baseline_lines_each_carry_their_own_audio() -> None:
    """Without faults: several utterances, all final, each text the length of its own audio,
    one session, the GA session.update and Bearer auth accepted by the fake."""
    run = await baseline()
    assert_nothing_lost(run)
    assert len(run.lines) >= 3
    for line in run.lines:
        assert line.status is LineStatus.FINAL
        ms = int(line.text.split()[0])
        assert abs(ms - (line.audio_end_ms - line.audio_start_ms)) <= 1
    assert run.server.handshakes == [101]
    assert "openai-beta" not in run.server.request_headers[0]
    c = run.engine.protocol.counters
    assert c["samples_resent"] == 0
    assert sum(s.appended_samples for s in run.server.sessions) == c["samples_sent"]
    stats = run.engine.stats()
    assert stats["cost_usd"] > 0 and stats["state"] == "stopped"
    assert stats["cost_usd"] == pytest.approx(stats["sent_s"] / 60 * 0.017, rel=0.01)


async def test_out_of_order_completions_and_early_deltas_keep_order() -> None:
    """Shuffled completions and deltas before committed end in the baseline order."""
    run = await run_engine(Faults(reorder_s=2.0, deltas_before_commit=True))
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)


@pytest.mark.parametrize("faults", [
    Faults(drop_after_s=1.3, completion_delay_s=(1.0, 1.2)),
    Faults(close_after_s=1.3, close_code=1011, completion_delay_s=(1.0, 1.2)),
], ids=["drop-1006", "close-1011"])
async def test_dropped_links_reconnect_and_resend_unanswered_items(faults: Faults) -> None:
    """After 1006/1011 the engine reconnects and sends again what the dead session had not
    answered: the same lines as without faults."""
    run = await run_engine(faults)
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    assert run.engine.reconnects >= 2
    assert run.engine.protocol.counters["samples_resent"] > 0
    assert {s.close_code for s in run.server.sessions[:-1]} <= {1006, 1011}


async def test_stalled_server_is_detected_by_keepalive() -> None:
    """A server that stops answering (pings unanswered) is left and replaced."""
    run = await run_engine(Faults(stall_after_s=1.5), ping_interval_s=0.3, ping_timeout_s=0.3)
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    assert run.engine.reconnects >= 1


async def test_outage_audio_is_buffered_and_sent_after_reconnect() -> None:
    """While the service refuses connections (503), speech is kept and sent when it returns."""
    async def heal(server: FakeRealtimeServer) -> None:
        await asyncio.sleep(2.0)
        server.faults.refuse_status = None

    run = await run_engine(Faults(refuse_status=503), during=heal)
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    assert run.engine.refused.get(503, 0) >= 2
    assert run.server.handshakes[-1] == 101


async def test_outage_longer_than_the_buffer_is_a_gap() -> None:
    """Speech beyond openai.buffer_s during an outage is reported as a gap, and the lines
    before and after it still come."""
    async def heal(server: FakeRealtimeServer) -> None:
        await asyncio.sleep(1.2)  # ~4.8 s of audio at 4x
        server.faults.refuse_status = None

    run = await run_engine(Faults(refuse_status=503), during=heal, buffer_s=1.0)
    c = run.engine.protocol.counters
    assert run.gaps and c["samples_dropped"] > 0
    assert sum(g.end_ms - g.start_ms for g in run.gaps) == pytest.approx(
        c["samples_dropped"] / 24, abs=len(run.gaps) * 2)
    assert all(ln.status is LineStatus.FINAL for ln in run.lines)
    assert run.lines  # speech after the outage was transcribed
    assert run.server.violations == []


async def test_sessions_rotate_before_expiry_without_loss_or_duplicates() -> None:
    """With a 3 s session cap (shorter than the utterances) the engine opens new sessions
    before expires_at and switches at pauses, or -- when no pause comes in time -- moves the
    utterance in progress whole to the new session: no session_expired, every utterance
    committed once, the same lines as without a cap."""
    run = await run_engine(Faults(session_cap_s=3.0), rotate_before_s=1.8)
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    assert run.engine.rotations >= 2
    assert run.engine.protocol.counters["moved_utterances"] >= 1
    codes = [e["error"]["code"] for e in run.server.emitted if e["type"] == "error"]
    assert "session_expired" not in codes
    assert sum(1 for i in run.server.items() if i.outcome == "completed") == len(run.lines)


async def test_session_expired_and_close_1001_are_survived() -> None:
    """If the cap hits anyway (session_expired, then 1001), nothing is lost."""
    run = await run_engine(Faults(session_cap_s=2.0, completion_delay_s=(0.8, 1.0)),
                           rotate_before_s=0.001)
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    codes = [e["error"]["code"] for e in run.server.emitted if e["type"] == "error"]
    assert "session_expired" in codes
    assert 1001 in {s.close_code for s in run.server.sessions}


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_key_is_fatal_and_names_the_variable(status: int) -> None:
    """HTTP 401/403 at the upgrade ends the run with a message naming OPENAI_API_KEY (and
    never the key)."""
    faults = Faults(refuse_status=403) if status == 403 else None
    key = KEY if status == 403 else "sk-wrong-key-0123456789"
    with pytest.raises(OpenAIAuthError) as info:
        await run_engine(faults, key=key)
    message = str(info.value)
    assert f"HTTP {status}" in message and "OPENAI_API_KEY" in message
    assert key not in message and KEY not in message


async def test_http_429_backs_off_then_connects() -> None:
    """429 at the upgrade: the next attempt waits at least the rate-limit backoff."""
    async def heal(server: FakeRealtimeServer) -> None:
        while len(server.handshakes) < 2:
            await asyncio.sleep(0.01)
        server.faults.refuse_status = None

    run = await run_engine(Faults(refuse_status=429), during=heal, rate_limit_backoff_s=0.6)
    assert run.server.handshakes[:2] == [429, 429]
    times = run.server.handshake_times
    assert times[1] - times[0] >= 0.6 and times[2] - times[1] >= 0.6
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)


async def test_error_events_are_logged_and_the_run_carries_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """An error for a client event (here rate_limit_exceeded for a commit) fails that item,
    is logged with its code, and the later items complete."""
    caplog.set_level(logging.WARNING, logger="captiond")
    run = await run_engine(Faults(commit_errors={2: "rate_limit_exceeded"}),
                           rate_limit_backoff_s=0.1)
    statuses = [ln.status for ln in run.lines]
    assert statuses[1] is LineStatus.FAILED and run.lines[1].error == "openai: rate_limit_exceeded"
    assert statuses.count(LineStatus.FINAL) == len(statuses) - 1
    assert "code=rate_limit_exceeded" in caplog.text
    assert run.server.violations == []


async def test_missing_completion_times_out_and_later_lines_flow() -> None:
    """An item whose completion never comes is failed after openai.item_timeout_s."""
    run = await run_engine(Faults(never_complete={2}), item_timeout_s=2.0)
    base = shape((await baseline()).lines)
    got = shape(run.lines)
    assert got[1][3] is LineStatus.FAILED
    assert [g for i, g in enumerate(got) if i != 1] == [b for i, b in enumerate(base) if i != 1]
    assert run.engine.protocol.counters["timed_out"] == 1


async def test_failed_transcriptions_settle_their_slot() -> None:
    """...transcription.failed marks that line failed; the others are unaffected."""
    run = await run_engine(Faults(fail_items={1}))
    assert run.lines[0].status is LineStatus.FAILED
    assert run.lines[0].error == "openai: audio_unintelligible"
    assert shape(run.lines)[1:] == shape((await baseline()).lines)[1:]


async def test_older_event_names_and_junk_are_handled() -> None:
    """transcription_session.created, conversation.item.created, malformed JSON and unknown
    event types: the lines are the same, the junk is counted."""
    run = await run_engine(Faults(legacy_names=True, junk=True))
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    assert run.engine.stats()["bad_server_events"] == 3 * len(run.server.sessions)


async def test_a_short_advertised_lifetime_causes_no_reconnect_storm() -> None:
    """A service advertising 25 s sessions (less than rotate_before_s, 300 s) is rotated at
    most once per judged period, not at once and forever: a handful of connections, the same
    lines as without a cap."""
    run = await run_engine(Faults(session_cap_s=25.0))
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    # The run lasts well under 25 s of wall time: one session, perhaps one standby.
    assert len(run.server.handshakes) <= 2, run.server.handshakes[:10]


@pytest.mark.parametrize("date_header", [True, False])
async def test_a_client_clock_two_hours_fast_causes_no_reconnect_storm(date_header: bool) -> None:
    """With the client's clock two hours ahead of the server's, expires_at reads as long past:
    read against the upgrade's HTTP Date it is a normal session; without a Date, the absurd
    (negative) lifetime is distrusted. Either way one connection, nothing lost."""
    run = await run_engine(Faults(clock_skew_s=-7200.0, date_header=date_header))
    assert_nothing_lost(run)
    assert shape(run.lines) == shape((await baseline()).lines)
    assert run.server.handshakes == [101]
    clock = run.engine.protocol.counters["untrusted_lifetimes"]
    assert clock == (0 if date_header else 1)


async def test_a_live_vad_reload_reaches_the_openai_engine() -> None:
    """update_settings (live reload of vad.*) changes where the OpenAI engine cuts: with a
    minimum silence longer than the 1.5 s pauses, the utterances merge into fewer lines."""
    from captiond.audio.segmenter import Params

    async with FakeRealtimeServer(KEY) as server:
        engine = OpenAIEngine(KEY, OpenAIOptions(url=server.url), rng=random.Random(7))
        engine.update_settings(Params(rate=24_000, min_silence_ms=2_500), 0.0, False)
        rec = Reconciler()
        await engine.run(stream(audio(), speed=SPEED), rec.apply)
    merged, base = rec.lines(), (await baseline()).lines
    assert server.violations == []
    assert 1 <= len(merged) < len(base)
    assert merged[0].audio_start_ms == pytest.approx(base[0].audio_start_ms, abs=100)


async def test_links_that_die_young_back_off_instead_of_hammering() -> None:
    """A service that accepts and drops every connection at once (0.2 s) is retried with a
    growing backoff, not reconnected to at once each time: the attempt counter climbs and
    only a handful of connections are opened over the run."""
    run = await run_engine(Faults(drop_after_s=0.2), item_timeout_s=2.0)
    assert run.server.violations == []
    assert run.engine.driver.attempt >= 3
    # Without the backoff: one connection per 0.2 s over a run of several seconds.
    assert 3 <= len(run.server.handshakes) <= 12, len(run.server.handshakes)
