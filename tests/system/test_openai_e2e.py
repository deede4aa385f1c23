"""End to end: the five FLEURS en clips in real time through the pipeline and the OpenAI engine,
against a fake server that transcribes with the local Whisper model -- once cleanly, once with
shuffled completions, a forced drop every ~20 s and a 15-second session cap. Both runs go at
the same time (same wall clock, half the test time)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import jiwer
import pytest
from conftest import EN_CLIPS, normalise, reference
from fakes.openai_realtime import FakeRealtimeServer, Faults, whisper_transcriber
from fakes.speech import ArraySource, conversation

from captiond.engines.openai import OpenAIEngine, OpenAIOptions
from captiond.feed import Feed
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

KEY = "sk-test-e2e-0123456789abcdef"

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Outcome:
    rows: list[Any]
    engine: OpenAIEngine
    server: FakeRealtimeServer
    source: ArraySource
    gaps: list[Any]


async def one_run(db_url: str, faults: Faults, audio: Any, **options: Any) -> Outcome:
    async with FakeRealtimeServer(KEY, faults=faults, transcriber=whisper_transcriber,
                                  seed=3) as server:
        engine = OpenAIEngine(KEY, OpenAIOptions(url=server.url, **options))
        store = Store.open(db_url)
        source = ArraySource(audio, speed=1.0)
        session = Session(store, [Stream(source, engine)], feed=Feed(), queue_s=60.0)
        sid = await session.run()
        rows = store.lines(sid, statuses=())
        return Outcome(rows, engine, server, source, store.gaps(sid))


def pooled_wer(rows: list[Any]) -> float:
    hyp = normalise(" ".join(r.text for r in sorted(rows, key=lambda r: r.seq)))
    return jiwer.wer(" ".join(reference(c) for c in EN_CLIPS), hyp)


async def test_faulty_realtime_run_matches_the_clean_run(tmp_path: Any) -> None:
    """Shuffled completions, drops every ~20 s and 15 s sessions: the store ends complete and
    in order, pooled WER within 2 points of the clean run, and no audio frame lost."""
    audio = conversation(EN_CLIPS, pause_s=1.5)
    clean, faulty = await asyncio.gather(
        one_run(f"sqlite:///{tmp_path / 'clean.db'}", Faults(), audio),
        one_run(
            f"sqlite:///{tmp_path / 'faulty.db'}",
            Faults(reorder_s=1.5, drop_every_s=20.0, session_cap_s=15.0),
            audio,
            rotate_before_s=5.0,
        ),
    )
    for run in (clean, faulty):
        assert run.server.violations == []
        # Complete and in order: one chain, every line final, times increasing with seq.
        rows = sorted(run.rows, key=lambda r: r.seq)
        assert [r.seq for r in rows] == list(range(len(rows)))
        assert all(r.status == "final" for r in rows)
        for before, after in itertools.pairwise(rows):
            assert after.previous_item_id == before.item_id
            assert after.audio_start_ms >= before.audio_end_ms
        # Zero audio frames lost, counted: every captured sample reached the engine, every
        # speech sample went on the wire (first time) exactly once, none dropped.
        c = run.engine.protocol.counters
        assert run.source.handed_out[0] == len(audio)
        assert round(run.engine.audio_s * 24_000) == len(audio)
        assert c["samples_dropped"] == 0 and run.gaps == []
        assert c["samples_in"] == c["samples_sent"] + c["samples_cleared"]
        assert c["samples_completed"] == c["samples_sent"] - c["samples_cleared"]
        received = sum(s.appended_samples for s in run.server.sessions)
        assert received <= c["samples_sent"] + c["samples_resent"]
        done = sum(i.samples for i in run.server.items() if i.outcome == "completed")
        assert done >= c["samples_completed"]
    assert sum(s.appended_samples for s in clean.server.sessions) == \
        clean.engine.protocol.counters["samples_sent"]
    assert len(faulty.rows) == len(clean.rows)
    assert faulty.engine.rotations >= 2 and faulty.engine.reconnects >= 1
    codes = [e["error"]["code"] for e in faulty.server.emitted if e["type"] == "error"]
    assert "session_expired" not in codes
    clean_wer, faulty_wer = pooled_wer(clean.rows), pooled_wer(faulty.rows)
    print(f"pooled WER clean={clean_wer:.3f} faulty={faulty_wer:.3f} "
          f"sessions={len(faulty.server.sessions)} rotations={faulty.engine.rotations} "
          f"reconnects={faulty.engine.reconnects} moved={faulty.engine.protocol.counters['moved_utterances']} "
          f"resent_s={faulty.engine.protocol.counters['samples_resent'] / 24000:.1f}")
    assert clean_wer < 0.25
    assert abs(faulty_wer - clean_wer) <= 0.02
