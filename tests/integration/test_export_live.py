"""Live subtitle files: fed by a real Feed and a real SQLite store, rewritten atomically."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from subtitle_readers import verify_file

from captiond import config
from captiond.events import Line, LineStatus, LineUpdate, UpdateKind
from captiond.exports.live import LiveSubtitles, live_from_config, live_paths, live_service
from captiond.feed import MAX_PENDING_KEYS, Feed
from captiond.transcript.store import Store

WAIT_S = 10.0  # bound on waiting for the writer in tests (it normally takes milliseconds)


def line(i: int, text: str, *, status: LineStatus = LineStatus.FINAL, start: int | None = None,
         channel: str = "", track: str = "original") -> Line:
    start = i * 3_000 if start is None else start
    return Line(item_id=f"it-{i}", previous_item_id=None, seq=i, audio_start_ms=start,
                audio_end_ms=start + 2_500, text=text, status=status, channel=channel,
                track=track, engine="local")


def publish(feed: Feed, sid: int, *lines: Line, kind: UpdateKind = UpdateKind.FINALISED) -> None:
    feed.publish_updates(LineUpdate(kind, ln, sid) for ln in lines)


async def until(predicate, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    yield s
    s.close()


def test_live_files_follow_the_feed(store, tmp_path: Path):
    """Finals already stored and finals from the feed end up in valid .srt/.vtt files;
    partials, other sessions, other tracks and removed lines do not."""
    sid = store.begin_session(source="mic", engine="local")
    store.write_lines(sid, [line(0, "Stored before the writer started.")])
    paths = [tmp_path / "live" / "s.srt", tmp_path / "live" / "s.vtt"]

    async def scenario() -> LiveSubtitles:
        feed = Feed()
        live = LiveSubtitles(store, sid, paths, feed=feed, interval_s=0.05, title="Live")
        task = asyncio.create_task(live.run())
        await until(lambda: live.writes >= 1, "first write")
        assert "Stored before" in paths[0].read_text(encoding="utf-8")
        publish(feed, sid, line(1, "First final from the feed."),
                line(2, "Gone again.", ), line(3, "Still talking", status=LineStatus.PARTIAL))
        publish(feed, sid + 1, line(4, "Another session."))
        publish(feed, sid, line(5, "Deutsch.", track="de"))
        publish(feed, sid, line(2, "", status=LineStatus.FINAL), kind=UpdateKind.REMOVED)
        publish(feed, sid, line(6, "Second speaker & co <at once>.", start=3_500,
                                channel="remote"))
        await until(lambda: "at once" in paths[1].read_text(encoding="utf-8"), "feed lines")
        live.close()
        live.close()  # idempotent
        await asyncio.wait_for(task, WAIT_S)
        return live

    live = asyncio.run(scenario())
    assert live.last_error is None
    for path in paths:
        texts = " ".join(t for _, _, t in verify_file(path))
        assert "Stored before" in texts and "First final" in texts and "at once" in texts
        for absent in ("Gone again", "Still talking", "Another session", "Deutsch"):
            assert absent not in texts
    assert not list((tmp_path / "live").glob(".*.tmp"))  # no temporary files left


def test_burst_of_finals_is_one_rewrite(tmp_path: Path):
    """Finals published together cause one rewrite, not one per line (bounded rate)."""
    path = tmp_path / "s.vtt"

    async def scenario() -> tuple[int, int]:
        feed = Feed()
        live = LiveSubtitles(None, 1, [path], feed=feed, interval_s=0.05)
        task = asyncio.create_task(live.run())
        await until(lambda: live.writes == 1, "first write")
        publish(feed, 1, *(line(i, f"Line number {i}.") for i in range(200)))
        await until(lambda: live.writes >= 2, "burst")
        await asyncio.sleep(0.2)  # several intervals: any extra rewrite would happen now
        writes = live.writes
        live.close()
        await asyncio.wait_for(task, WAIT_S)
        return writes, live.writes

    during, after = asyncio.run(scenario())
    assert during == 2 and after == 2
    assert len(verify_file(path, browser=False)) == 200


def test_readers_never_see_half_a_file(tmp_path: Path):
    """While the file is rewritten many times, every read of it is a complete subtitle file."""
    path = tmp_path / "s.srt"
    reads: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                reads.append(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                pass

    async def scenario() -> int:
        feed = Feed()
        live = LiveSubtitles(None, 1, [path], feed=feed, interval_s=0.01)
        task = asyncio.create_task(live.run())
        await until(lambda: live.writes == 1, "first write")
        for i in range(30):
            publish(feed, 1, *(line(i * 50 + k, f"Sentence {i}-{k} of the long meeting.")
                               for k in range(50)))
            await until(lambda i=i: live.writes >= i + 2, "rewrite")
        live.close()
        await asyncio.wait_for(task, WAIT_S)
        return live.writes

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        writes = asyncio.run(scenario())
    finally:
        stop.set()
        thread.join()
    assert writes >= 30
    complete = [r for r in reads if r]
    assert complete, "the reader never saw the file"
    for text in complete:
        blocks = text.split("\n\n")
        assert blocks[-1] == "" and all(b.count("\n") >= 2 for b in blocks[:-1])
        assert text.count(" --> ") == len(blocks) - 1
        # cues are added 50 at a time: a complete file has a multiple of 50
        assert (len(blocks) - 1) % 50 == 0


def test_cut_off_writer_recovers_from_the_store(store, tmp_path: Path):
    """A writer the feed cuts off for falling behind re-reads the store and loses nothing."""
    sid = store.begin_session(source="mic", engine="local")
    lines = [line(i, f"Line {i}.", start=i * 1_000) for i in range(MAX_PENDING_KEYS + 5)]
    store.write_lines(sid, lines)
    path = tmp_path / "s.srt"

    async def scenario() -> LiveSubtitles:
        feed = Feed()
        live = LiveSubtitles(store, sid, [path], feed=feed, interval_s=0.05)
        task = asyncio.create_task(live.run())
        await until(lambda: live.writes >= 1, "first write")
        live._lines.clear()  # forget the seed, so only recovery can bring the lines back
        live._chunks.clear()
        publish(feed, sid, *lines)  # more than a subscriber may hold: it is cut off
        await until(lambda: live.resubscribed == 1 and live.writes >= 2, "recovery")
        live.close()
        await asyncio.wait_for(task, WAIT_S)
        return live

    live = asyncio.run(scenario())
    assert live.resubscribed == 1
    assert len(verify_file(path, browser=False)) == len(lines)


def test_cancelled_writer_flushes(tmp_path: Path):
    """Cancelling run() (daemon shutdown) still writes the finals it had."""
    path = tmp_path / "s.srt"

    async def scenario() -> None:
        feed = Feed()
        live = LiveSubtitles(None, 1, [path], feed=feed, interval_s=30)
        task = asyncio.create_task(live.run())
        await until(lambda: live.writes == 1, "first write")
        publish(feed, 1, line(1, "Said just before shutdown."))
        await asyncio.sleep(0.05)  # the writer takes it, then waits out its 30 s interval
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert "Said just before shutdown." in path.read_text(encoding="utf-8")


def test_paths_and_settings(tmp_path: Path):
    """Live files go to export.dir as session-ID.fmt for each configured format."""
    cfg = config.parse(env={"CAPTIOND_EXPORT_DIR": str(tmp_path), "CAPTIOND_EXPORT_LIVE": "1",
                            "CAPTIOND_EXPORT_LIVE_FORMATS": "vtt"})
    assert cfg["export.live"] is True
    assert live_paths(cfg, 7) == [tmp_path / "session-7.vtt"]
    live = live_from_config(cfg.replace(export__max_cps=12), None, 7, feed=Feed())
    assert live is not None and live.paths == [tmp_path / "session-7.vtt"]
    assert live.limits.max_cps == 12
    assert live_from_config(config.parse(env={}), None, 7, feed=Feed()) is None
    with pytest.raises(config.ConfigError, match="srt and/or vtt"):
        config.parse(env={"CAPTIOND_EXPORT_LIVE_FORMATS": "ass"})
    with pytest.raises(ValueError, match=r"\.srt or \.vtt"):
        LiveSubtitles(None, 1, [tmp_path / "x.txt"], feed=Feed())


def test_follows_the_session_the_daemon_starts(store, tmp_path: Path):
    """As a daemon service (started before the session exists) the writer picks up the
    session announced on the feed and names its files after it."""
    cfg = config.parse(env={"CAPTIOND_EXPORT_DIR": str(tmp_path), "CAPTIOND_EXPORT_LIVE": "true",
                            "CAPTIOND_EXPORT_LIVE_INTERVAL_S": "0.2"})
    daemon = SimpleNamespace(cfg=cfg, store=store, feed=Feed(), title="Standup")
    made = live_service(daemon)
    assert made is not None
    start, close = made.start, made.close

    async def scenario() -> int:
        await start()
        await asyncio.sleep(0)  # the writer subscribes
        sid = store.begin_session(source="mic", engine="local")
        daemon.feed.publish({"type": "session", "event": "started", "session": sid,
                             "title": "Standup"})
        publish(daemon.feed, sid, line(1, "Yesterday I finished the export."))
        vtt = tmp_path / f"session-{sid}.vtt"
        await until(lambda: vtt.exists() and "finished the export" in vtt.read_text(
            encoding="utf-8"), "session file")
        publish(daemon.feed, sid, line(2, "Today the minutes template."))
        await close()  # writes what is pending before it returns
        return sid

    sid = asyncio.run(scenario())
    for fmt in ("srt", "vtt"):
        cues = verify_file(tmp_path / f"session-{sid}.{fmt}", browser=False)
        assert [t for _, _, t in cues] == ["Yesterday I finished the export.",
                                           "Today the minutes template."]
    assert (tmp_path / f"session-{sid}.vtt").read_text(encoding="utf-8").startswith(
        "WEBVTT - Standup")
    assert live_service(SimpleNamespace(cfg=config.parse(env={}), store=store, feed=Feed(),
                                        title=None)) is None
