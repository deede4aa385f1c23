"""The OpenAI engine and ``--engine auto`` inside the real pipeline: SQLite store, feed, logs."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import EN_CLIPS, normalise, reference
from fakes.openai_realtime import FakeRealtimeServer, Faults, whisper_transcriber
from fakes.speech import ArraySource, conversation

from captiond.api import handle_api
from captiond.audio.segmenter import Params
from captiond.engines.auto import AutoEngine
from captiond.engines.local import LocalEngine
from captiond.engines.openai import OpenAIAuthError, OpenAIEngine, OpenAIOptions
from captiond.engines.whisper import WhisperBackend
from captiond.feed import Feed
from captiond.logs import _JsonFormatter, _TextFormatter
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

KEY = "sk-test-pipeline-SECRET-9f8e7d6c5b4a"

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

_BACKEND: WhisperBackend | None = None


def backend() -> WhisperBackend:
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = WhisperBackend(None, threads=1)
    return _BACKEND


_LAST_SESSION: list[Session] = []


async def run_session(db_url: str, engine: Any, audio: Any, *, speed: float,
                      feed: Feed | None = None) -> tuple[Store, int]:
    store = Store.open(db_url)
    source = ArraySource(audio, speed=speed)
    session = Session(store, [Stream(source, engine)], feed=feed or Feed(), queue_s=60.0)
    _LAST_SESSION[:] = [session]
    sid = await session.run()
    return store, sid


async def test_outage_beyond_the_buffer_is_stored_as_a_gap(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Speech past openai.buffer_s during an outage becomes a row in ``gaps`` and an
    ``audio.gap`` log event; the session row records the engine and its cost."""
    caplog.set_level(logging.WARNING, logger="captiond")
    audio = conversation(EN_CLIPS[0:2])

    async with FakeRealtimeServer(KEY, faults=Faults(refuse_status=503)) as server:
        async def heal() -> None:
            await asyncio.sleep(1.5)
            server.faults.refuse_status = None

        engine = OpenAIEngine(KEY, OpenAIOptions(url=server.url, buffer_s=1.0))
        healer = asyncio.ensure_future(heal())
        store, sid = await run_session(db_url, engine, audio, speed=5.0)
        healer.cancel()
    gaps = store.gaps(sid)
    assert gaps and all("openai.buffer_s" in g.reason for g in gaps)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audio.gap ")]
    assert logged and all("openai.buffer_s" in m for m in logged)
    assert f"start_ms={gaps[0].start_ms} " in logged[0]
    dropped_ms = engine.protocol.counters["samples_dropped"] / 24
    assert sum(g.end_ms - g.start_ms for g in gaps) == pytest.approx(dropped_ms, abs=2 * len(gaps))
    lines = store.lines(sid)
    assert lines and all(row.engine == "openai" for row in lines)
    row = store.resolve_session(sid)
    assert row.engine == "openai" and row.cost_usd == pytest.approx(engine.cost_usd(), abs=1e-4)
    assert row.cost_usd > 0


async def test_the_api_key_never_reaches_logs_db_feed_or_errors(db_url: str,
                                                                tmp_path: Path) -> None:
    """The key goes over the wire (Authorization) but never into a formatted log line (even
    with websockets' header debug logging on), the database, the feed, the JSON API (incl.
    /api/status with the engine's figures) or an error message."""
    text_out, json_out = io.StringIO(), io.StringIO()
    handlers = []
    for out, formatter in ((text_out, _TextFormatter()), (json_out, _JsonFormatter())):
        h = logging.StreamHandler(out)
        h.setFormatter(formatter)
        h.setLevel(logging.DEBUG)
        handlers.append(h)
    raw: list[str] = []

    class Raw(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(record.getMessage())

    root = logging.getLogger()
    old_level = root.level
    for h in [*handlers, Raw()]:
        root.addHandler(h)
    root.setLevel(logging.DEBUG)
    feed = Feed()
    try:
        async with FakeRealtimeServer(KEY, faults=Faults(drop_after_s=1.0)) as server:
            engine = OpenAIEngine(KEY, OpenAIOptions(url=server.url))
            store, sid = await run_session(db_url, engine, conversation(EN_CLIPS[3:4]),
                                           speed=5.0, feed=feed)
            session = _LAST_SESSION[0]
            api = [handle_api(store, path, "", status=session.stats) for path in (
                "/api/sessions", f"/api/sessions/{sid}", f"/api/sessions/{sid}/lines",
                "/api/status")]
            wrong = OpenAIEngine("sk-wrong-but-secret-123456", OpenAIOptions(url=server.url))
            with pytest.raises(BaseExceptionGroup) as refused:
                await run_session(db_url, wrong, conversation(EN_CLIPS[3:4]), speed=10.0)
            auth = refused.value.subgroup(OpenAIAuthError)
            assert auth is not None
    finally:
        for h in root.handlers[-3:]:
            root.removeHandler(h)
        root.setLevel(old_level)
    assert server.request_headers[0]["authorization"] == f"Bearer {KEY}"
    assert any(KEY in message for message in raw), "the leak check would not see a leak"
    db_path = Path(db_url.removeprefix("sqlite:///"))
    blobs = {
        "text log": text_out.getvalue(),
        "json log": json_out.getvalue(),
        "feed": json.dumps(feed.snapshot()),
        "json api": json.dumps(api, default=str),
        "error": str(auth.exceptions[0]) + repr(auth.exceptions[0]),
        "stats": json.dumps(engine.stats()),
        "database": b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
        .decode("latin-1"),
    }
    assert store.lines(sid) and all(status == 200 for status, _ in api)
    for where, blob in blobs.items():
        for secret in (KEY, "sk-wrong-but-secret-123456"):
            assert secret not in blob, f"API key found in {where}"


def _local(prefix: str) -> LocalEngine:
    return LocalEngine(backend(), Params(rate=16_000), partial_interval_s=0.0, id_prefix=prefix)


def _decode(samples: Any, offset_ms: int) -> Any:
    return backend().decode(samples, offset_ms=offset_ms)


def _auto(url: str, key: str, grace_s: float) -> AutoEngine:
    options = OpenAIOptions(url=url, item_timeout_s=10.0)
    return AutoEngine(
        lambda prefix: OpenAIEngine(key, options, id_prefix=prefix),
        _local, decode=_decode, grace_s=grace_s, probe_s=0.5, url=url, api_key=key,
        language="en",
    )


def _assert_one_chain(rows: list[Any]) -> None:
    by_seq = sorted(rows, key=lambda r: r.seq)
    assert [r.seq for r in by_seq] == list(range(len(by_seq)))
    for before, after in itertools.pairwise(by_seq):
        assert after.previous_item_id == before.item_id
    assert len({r.item_id for r in rows}) == len(rows)


async def test_auto_falls_back_to_local_when_the_key_is_refused(db_url: str) -> None:
    """auto + HTTP 401: the meeting is transcribed by the local engine; lines say so."""
    clips = EN_CLIPS[3:5]
    async with FakeRealtimeServer(KEY) as server:
        engine = _auto(server.url, "sk-refused-key-000000000", grace_s=30.0)
        store, sid = await run_session(db_url, engine, conversation(clips), speed=3.0)
    rows = store.lines(sid, statuses=())
    assert rows and {r.engine for r in rows} == {"local"}
    _assert_one_chain(rows)
    text = normalise(" ".join(r.text for r in rows if r.status == "final"))
    import jiwer

    assert jiwer.wer(" ".join(reference(c) for c in clips), text) < 0.35
    assert server.handshakes[0] == 401
    assert store.resolve_session(sid).engine == "openai+local"


async def test_auto_falls_back_after_the_grace_period_and_comes_back(db_url: str) -> None:
    """auto: the service goes away mid-meeting (links dropped, 503 at the upgrade); after
    openai.grace_s the local engine takes over -- utterances the service had not answered are
    transcribed locally under their own ids -- and when the service returns, OpenAI takes
    over again at a pause. One continuous chain, every line final, each line names its
    engine."""
    clips = EN_CLIPS[0:3]
    faults = Faults(completion_delay_s=(1.5, 2.0))
    async with FakeRealtimeServer(KEY, faults=faults, transcriber=whisper_transcriber) as server:
        async def outage() -> None:
            await asyncio.sleep(5.0)
            server.faults.refuse_status = 503
            server.drop_all()
            await asyncio.sleep(4.0)
            server.faults.refuse_status = None

        engine = _auto(server.url, KEY, grace_s=1.0)
        task = asyncio.ensure_future(outage())
        store, sid = await run_session(db_url, engine, conversation(clips, pause_s=1.0),
                                       speed=2.0)
        task.cancel()
    rows = store.lines(sid, statuses=())
    _assert_one_chain(rows)
    assert all(r.status == "final" for r in rows)
    engines = [r.engine for r in sorted(rows, key=lambda r: r.seq)]
    assert "local" in engines and engines[0] == "openai" and engines[-1] == "openai"
    assert engine.switches == 2
    assert server.handshakes.count(503) >= 1
    text = normalise(" ".join(r.text for r in sorted(rows, key=lambda r: r.seq)))
    import jiwer

    assert jiwer.wer(" ".join(reference(c) for c in clips), text) < 0.35
