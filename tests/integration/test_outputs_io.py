"""The caption outputs against real sockets on 127.0.0.1: a fake obs-websocket v5 server, and
HTTP servers standing in for YouTube, Zoom and a webhook receiver that check every request and
fail, stall and recover on command."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.captions import FakeWebhook, FakeYouTube, FakeZoom
from fakes.obs_websocket import FakeObs

from captiond import config
from captiond.feed import Feed
from captiond.outputs.drivers import Output
from captiond.outputs.spec import OutputSpec, Secrets

#: Longest a test waits for something to arrive (generous: the machine is shared).
WAIT_S = 20.0

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a stitch in time saves nine and then some more",
    "all that glitters is not gold",
    "the early bird catches the worm every single morning",
]


def line(item: str, text: str, status: str = "final", *, stable: int = 0,
         speaker: str | None = None) -> dict:
    return {"type": "line", "event": "finalised" if status == "final" else "updated",
            "session": 1, "item_id": item, "seq": 0, "track": "original", "channel": "",
            "speaker": speaker, "status": status, "text": text, "stable": stable,
            "start_ms": 0, "end_ms": 1000, "engine": "local"}


def make(kind: str, **kw: object) -> OutputSpec:
    url = {"url": "http://127.0.0.1:1/x"} if kind != "obs" and "url_file" not in kw else {}
    table = {"kind": kind, **url, **kw}
    text = "[[outputs]]\n" + "".join(
        f"{k} = {v!r}\n".replace("'", '"') if not isinstance(v, bool)
        else f"{k} = {str(v).lower()}\n" for k, v in table.items())
    return config.parse(text).outputs[0]


async def until(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def running(output: Output) -> asyncio.Task[None]:
    output.subscribe()
    return asyncio.create_task(output.run())


async def stop(output: Output, task: asyncio.Task[None]) -> None:
    output.close()
    await asyncio.wait_for(task, 10)


# -- OBS ---------------------------------------------------------------------------------------


def test_obs_output_authenticates_and_sends_roll_up_captions(caplog: pytest.LogCaptureFixture) -> None:
    """The v5 handshake with a password, SendStreamCaption with rows of at most 32 characters
    (stable partial text first, then the rest of the final), 'waiting' while OBS is not
    streaming, and a reconnect after OBS drops the connection; the password is never logged."""
    caplog.set_level(logging.INFO, logger="captiond")

    async def main() -> None:
        obs = await FakeObs(password="s3cret-obs-pass").start()
        feed = Feed()
        output = Output(make("obs", min_interval_s=0.0, partials=True), Secrets(obs.url, "s3cret-obs-pass"), feed)
        task = await running(output)
        try:
            feed.publish(line("a", "the quick brown fox jumps over", "partial", stable=16))
            await until(lambda: obs.captions == ["the quick brown"])
            feed.publish(line("a", "the quick brown fox jumps over the lazy dog"))
            await until(lambda: len(obs.captions) == 2)
            assert obs.captions[1] == "the quick brown fox jumps over\nthe lazy dog"
            assert output.status()["state"] == "ok" and output.status()["sent_lines"] == 1

            obs.streaming = False
            feed.publish(line("b", "nobody sees this"))
            await until(lambda: output.state == "waiting")
            assert output.status()["not_live"] == 1 and output.status()["pending"] == 0

            obs.streaming = True
            obs.drop_next = True
            feed.publish(line("c", "back on air"))
            await until(lambda: any("back on air" in c for c in obs.captions))
            assert obs.identified == 2  # it reconnected and identified again
            assert obs.violations == [] and obs.refused == 0
        finally:
            await stop(output, task)
            await obs.close()

    asyncio.run(main())
    assert "output.failed" in caplog.text and "output.recovered" in caplog.text
    assert "s3cret-obs-pass" not in caplog.text


def test_obs_wrong_password_is_a_clear_failing_status() -> None:
    """OBS closing with 4009 shows as failing with 'refused the password'; captioning goes on."""

    async def main() -> None:
        obs = await FakeObs(password="right-password").start()
        feed = Feed()
        output = Output(make("obs"), Secrets(obs.url, "wrong-password"), feed)
        task = await running(output)
        try:
            feed.publish(line("a", "hello"))
            await until(lambda: output.state == "failing")
            assert "refused the password" in (output.last_error or "")
            assert obs.refused >= 1 and obs.captions == []
            assert output.status()["pending"] == 1  # kept for when the password is fixed
        finally:
            await stop(output, task)
            await obs.close()

    asyncio.run(main())


# -- YouTube -----------------------------------------------------------------------------------


def test_youtube_output_corrects_the_clock_and_survives_failures_and_stalls(
        caplog: pytest.LogCaptureFixture) -> None:
    """Against a YouTube stand-in whose clock is 5 minutes ahead: an empty POST first, cue times
    within its 60 s window, seq +1 per post; while it answers 503 and while it stalls the lines
    wait, and after it recovers every line arrives once, in order; one log line each way."""
    caplog.set_level(logging.INFO, logger="captiond")
    yt = FakeYouTube(clock_offset_s=300.0)

    async def main() -> None:
        feed = Feed()
        output = Output(make("youtube", timeout_s=0.5, min_interval_s=0.0),
                        Secrets(yt.ingestion_url), feed)
        task = await running(output)
        try:
            feed.publish(line("0", SENTENCES[0]))
            await until(lambda: len(yt.cues) == 1)
            assert yt.requests[0]["body"] == ""  # the clock post
            assert abs(output.planner.offset_s - 300.0) < 2.0  # type: ignore[attr-defined]

            yt.fail = True
            feed.publish(line("1", SENTENCES[1]))
            await until(lambda: output.state == "failing")
            feed.publish(line("2", SENTENCES[2]))
            yt.fail = False
            await until(lambda: len(yt.cues) == 3)
            assert output.state == "ok"

            yt.stall()
            feed.publish(line("3", SENTENCES[3]))
            await until(lambda: output.state == "failing")  # timed out
            assert output.last_error == "timed out"
            feed.publish(line("4", SENTENCES[4]))
            yt.release()
            await until(lambda: len(yt.cues) == 5)
        finally:
            await stop(output, task)

    try:
        asyncio.run(main())
    finally:
        yt.close()
    assert yt.violations == []
    assert [text for _, text in yt.cues] == SENTENCES
    seqs = [r["seq"] for r in yt.requests if not r.get("failed")]
    assert seqs[0] == 1 and all(b - a in (0, 1) for a, b in zip(seqs, seqs[1:], strict=False))
    assert caplog.text.count("output.failed") == 2 and caplog.text.count("output.recovered") == 2
    assert "cid=" not in caplog.text and yt.stream_id not in caplog.text


def test_slow_endpoint_never_holds_the_feed_and_stays_bounded() -> None:
    """With the far end stalled, 5,000 finals published at once return at once; the output
    keeps at most its bound and counts what it dropped."""
    yt = FakeYouTube()
    yt.stall()

    async def main() -> None:
        feed = Feed()
        output = Output(make("youtube", timeout_s=5.0), Secrets(yt.ingestion_url), feed)
        task = await running(output)
        try:
            for i in range(5000):
                feed.publish(line(str(i), f"line {i}"))
                if i % 500 == 0:
                    await asyncio.sleep(0)  # the pipeline publishes from the loop, between blocks
            await until(lambda: output.planner.dropped + len(output.planner.pending) == 5000)
            assert output.status()["pending"] == 2000 and output.status()["dropped"] == 3000
            assert output.status()["sent_lines"] == 0 and output.resubscribed == 0
        finally:
            yt.release()
            await stop(output, task)

    try:
        asyncio.run(main())
    finally:
        yt.close()


# -- Zoom ----------------------------------------------------------------------------------------


def test_zoom_output_continues_the_meetings_seq_after_a_restart() -> None:
    """The seq is asked from <url>/seq and posts go on from it with lang; a second output (a
    restarted daemon) continues where the first stopped; 503s are retried with the same seq."""
    zoom = FakeZoom(last_seq=41)

    async def one(items: list[str], fail_first: bool) -> None:
        feed = Feed()
        output = Output(make("zoom", lang="en-US", min_interval_s=0.0),
                        Secrets(zoom.api_token_url), feed)
        task = await running(output)
        try:
            zoom.fail = fail_first
            for item in items:
                feed.publish(line(item, f"caption {item}"))
            if fail_first:
                await until(lambda: output.state == "failing")
                zoom.fail = False
            await until(lambda: output.status()["sent_lines"] == len(items))
        finally:
            await stop(output, task)

    try:
        asyncio.run(one(["a", "b"], fail_first=True))
        asyncio.run(one(["c"], fail_first=False))
    finally:
        zoom.close()
    assert zoom.violations == []
    assert "".join(zoom.texts) == "caption a\ncaption b\ncaption c\n"
    assert zoom.last_seq in (42, 43, 44) and zoom.last_seq == 41 + len(zoom.texts)
    assert [r["op"] for r in zoom.requests if "op" in r] == ["seq", "seq"]


# -- webhook -----------------------------------------------------------------------------------


def test_webhook_posts_signed_json_per_final() -> None:
    """Each final line is one JSON POST whose HMAC-SHA256 signature the receiver verifies;
    partial text is never posted."""
    hook = FakeWebhook(key="hook-key-0123")

    async def main() -> None:
        feed = Feed()
        output = Output(make("webhook", min_interval_s=0.0), Secrets(hook.url, "hook-key-0123"),
                        feed)
        task = await running(output)
        try:
            feed.publish(line("a", "partial words here", "partial", stable=10, speaker="Ann"))
            for i, text in enumerate(SENTENCES[:3]):
                feed.publish(line(str(i), text, speaker="Ann"))
            await until(lambda: len(hook.lines) == 3)
        finally:
            await stop(output, task)

    try:
        asyncio.run(main())
    finally:
        hook.close()
    assert hook.violations == []
    assert [h["text"] for h in hook.lines] == SENTENCES[:3]
    assert hook.lines[0] == {"type": "line", "session": 1, "item_id": "0", "channel": "",
                             "track": "original", "speaker": "Ann", "start_ms": 0,
                             "end_ms": 1000, "text": SENTENCES[0]}


# -- the set of outputs (what a reload changes) ------------------------------------------------


def test_reload_adds_removes_and_refuses_outputs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Applying a new [[outputs]] list starts added outputs and stops removed ones; one whose
    secret file is missing is refused with config.outputs_failed and the running ones stay."""
    from captiond.outputs.service import OutputSet

    caplog.set_level(logging.INFO, logger="captiond")
    first, second = FakeWebhook(), FakeWebhook()

    def hook(name: str, url: str) -> OutputSpec:
        return make("webhook", name=name, url=url, min_interval_s=0.0)

    async def main() -> None:
        feed = Feed()
        outputs = OutputSet(feed)
        outputs.start([hook("one", first.url)])
        feed.publish(line("a", "only the first"))
        await until(lambda: len(first.lines) == 1)
        assert await outputs.apply([hook("two", second.url)])
        assert list(outputs.outputs) == ["two"]
        feed.publish(line("b", "only the second"))
        await until(lambda: len(second.lines) == 1)
        missing = make("webhook", name="three", url_file=str(tmp_path / "absent"))
        assert not await outputs.apply([hook("two", second.url), missing])
        assert list(outputs.outputs) == ["two"]
        await outputs.close()

    try:
        asyncio.run(main())
    finally:
        first.close()
        second.close()
    assert [h["text"] for h in first.lines] == ["only the first"]
    assert [h["text"] for h in second.lines] == ["only the second"]
    assert "config.outputs_failed" in caplog.text and "cannot read URL file" in caplog.text


def test_config_command_lists_outputs_without_secrets(tmp_path: Path) -> None:
    """`captiond config` lists each output with its kind, target and track; a URL written in
    the file shows only its scheme and host."""
    path = tmp_path / "c.toml"
    path.write_text('[[outputs]]\nkind = "zoom"\nurl = "https://wmcapi.zoom.us/closedcaption'
                    '?id=1&signature=SECRETSIG"\n')
    result = subprocess.run([sys.executable, "-m", "captiond", "config", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert "# output zoom: kind=zoom target=https://wmcapi.zoom.us track=original" in result.stdout
    assert "SECRETSIG" not in result.stdout
