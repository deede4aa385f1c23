"""Hostile input that used to crash captiond or leak: non-finite numbers, huge session ids,
HTTP methods the server does not serve, database file modes."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from needs import need_programs
from overlay_helpers import overlay_config
from service_helpers import ROOT, daemon_env

from captiond import config
from captiond.api import handle_api
from captiond.errors import CaptiondError, ConfigError
from captiond.feed import Feed
from captiond.overlay import style
from captiond.overlay.server import OverlayServer
from captiond.transcript.store import Store

BIG_ID = str(2**63)


# -- non-finite numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize("name", ["vad.max_utterance_s", "vad.threshold", "overlay.linger_s"])
def test_non_finite_number_in_the_file_is_refused(name: str, value: str) -> None:
    """`nan`/`inf` in the TOML file fail with file:line, the key, the value and the fix."""
    section, key = name.split(".")
    text = f"[{section}]\n{key} = {value}\n"
    with pytest.raises(ConfigError) as exc:
        config.parse(text, path=Path("/etc/captiond.toml"), env={})
    message = str(exc.value)
    assert message.startswith("/etc/captiond.toml:2: ") and name in message
    assert "finite number" in message and "write a number from" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", " nan "])
def test_non_finite_number_in_environment_and_flags_is_refused(value: str) -> None:
    """CAPTIOND_AUDIO_QUEUE_S=nan and a flag given nan are refused, not accepted silently."""
    with pytest.raises(ConfigError, match=r"^environment CAPTIOND_AUDIO_QUEUE_S: audio.queue_s "
                                          r"must be a finite number"):
        config.parse("", env={"CAPTIOND_AUDIO_QUEUE_S": value})
    with pytest.raises(ConfigError, match=r"^--partial_interval_s: .*finite number"):
        config.parse("", env={}, overrides={"local.partial_interval_s": value})


def test_nan_in_the_environment_is_one_line_at_start(tmp_path: Path) -> None:
    """`captiond run` with CAPTIOND_AUDIO_QUEUE_S=nan exits 2 with one line, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "captiond", "run", "--source", "stdin"],
        env=daemon_env(tmp_path, CAPTIOND_AUDIO_QUEUE_S="nan"), cwd=ROOT, input="",
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "captiond: environment CAPTIOND_AUDIO_QUEUE_S: audio.queue_s must be a finite number "
        "(nan and inf are not numbers captiond can use), got 'nan' (write a number from 1 to 600)"
    ]


@pytest.mark.parametrize("query", [{"linger_s": "nan"}, {"outline_px": "inf"},
                                   {"background_opacity": "NaN"}])
def test_non_finite_overlay_url_parameter_is_a_style_error(query: dict[str, str]) -> None:
    """?linger_s=nan is refused as a bad URL parameter (a 400), not rendered into a 500."""
    with pytest.raises(style.StyleError, match="finite number"):
        style.resolve(overlay_config(), query)


# -- session ids beyond 64 bits ----------------------------------------------------------------


def test_session_id_beyond_64_bits_is_a_bad_request(db_url: str) -> None:
    """/api/sessions/2**63 (and its lines, and search's session=) answer 400 with one line."""
    store = Store.open(db_url)
    try:
        for path, query in ((f"/api/sessions/{BIG_ID}", ""),
                            (f"/api/sessions/{BIG_ID}/lines", ""),
                            (f"/api/sessions/-{BIG_ID}9", ""),
                            ("/api/search", f"q=hello&session={BIG_ID}")):
            code, body = handle_api(store, path, query)
            assert code == 400, (path, body)
            assert "out of range" in body["error"] and "\n" not in body["error"]
        with pytest.raises(CaptiondError):
            store.resolve_session(BIG_ID)
    finally:
        store.close()


@pytest.mark.parametrize("command", [["show", BIG_ID], ["export", BIG_ID, "--format", "srt"]])
def test_session_id_beyond_64_bits_on_the_command_line(tmp_path: Path, command: list[str]) -> None:
    """`captiond show 9223372036854775808` prints one line and exits 1, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "captiond", *command], env=daemon_env(tmp_path), cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"captiond: session id {BIG_ID} is out of range (ids are numbers from 1 to "
        f"{2**63 - 1}; see `captiond sessions`)"
    ]


# -- HTTP methods ------------------------------------------------------------------------------


async def _raw(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str],
                                                                             bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_raw, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), headers, rest


@pytest.mark.asyncio
async def test_only_get_and_head_are_served() -> None:
    """POST/PUT/DELETE/PATCH get 405 with Allow; HEAD gets GET's headers and no body; pages
    may be framed by the server's own index only (frame-ancestors)."""
    server = OverlayServer(overlay_config(), Feed(), dict)
    await server.start()
    try:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/", "/overlay", "/status", "/api/sessions"):
                status, headers, _ = await _raw(server.port, method, path)
                assert status == 405, (method, path)
                assert headers["allow"] == "GET, HEAD"
        get_status, get_headers, get_body = await _raw(server.port, "GET", "/overlay")
        head_status, head_headers, head_body = await _raw(server.port, "HEAD", "/overlay")
        assert get_status == head_status == 200 and get_body and head_body == b""
        assert head_headers["content-length"] == str(len(get_body))
        assert head_headers["content-type"] == get_headers["content-type"]
        assert (await _raw(server.port, "HEAD", "/ws"))[0] == 426
        status, _, body = await _raw(server.port, "GET", "/overlay?linger_s=nan")
        assert status == 400 and b"URL parameter linger_s: must be a finite number" in body
        csp = get_headers["content-security-policy"]
        assert "frame-ancestors 'self'" in csp
        assert get_headers["x-frame-options"] == "SAMEORIGIN"
    finally:
        await server.close()


# -- file modes --------------------------------------------------------------------------------


def test_database_and_data_directory_are_private(tmp_path: Path) -> None:
    """Outside systemd (umask 022) the data dir is created 0700 and the database, -wal and
    -shm 0600."""
    old = os.umask(0o022)
    try:
        data = tmp_path / "data" / "captiond"
        store = Store.open(f"sqlite:///{data / 'captiond.db'}")
        sid = store.begin_session(source="stdin", engine="local")
        store.end_session(sid)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = sorted(p.name for p in data.iterdir())
        assert files == ["captiond.db", "captiond.db-shm", "captiond.db-wal"]
        for p in data.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    finally:
        store.close()


# -- live reload: a failed switch does not pin the old value -------------------------------------


def test_failed_source_switch_does_not_pin_and_flags_are_reported(
    fleurs_en: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After config.source_failed, a corrected audio.source edit is applied by the next reload
    (it used to log changed=none until a restart); nan in a live edit keeps the old config; a
    file value that a command-line flag overrides is named in the log."""
    import io
    import logging

    from captiond.daemon import Daemon

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "config.toml"
    head = "[overlay]\nport = 0\n"
    path.write_text(head + f'[audio]\nsource = "file:{fleurs_en[2]}"\n')
    cfg = config.load(path, env={}, overrides={
        "database.url": f"sqlite:///{tmp_path / 'a.db'}", "local.threads": "1"})
    caplog.set_level(logging.INFO, logger="captiond")

    async def main() -> tuple[bool, bool, int, str, str]:
        daemon = Daemon(cfg, out=io.StringIO())
        task = asyncio.create_task(daemon.run())
        while not daemon.ready:
            assert not task.done()
            await asyncio.sleep(0.02)
        path.write_text(head + f'[audio]\nsource = "file:{tmp_path / "missing.wav"}"\n')
        await daemon.reload()
        path.write_text(head + f'[audio]\nsource = "file:{fleurs_en[2]}"\n'
                        "[vad]\nmax_utterance_s = nan\n")
        refused_nan = not await daemon.reload()
        path.write_text(head + f'[audio]\nsource = "file:{fleurs_en[4]}"\n'
                        '[local]\nthreads = 3\n')
        applied = await daemon.reload()
        await asyncio.sleep(0.5)  # the new source takes over at the next block
        daemon.session.stop()
        await task
        switches = daemon.session.streams[0].source.switches
        return refused_nan, applied, switches, daemon.cfg["audio.source"], \
            daemon.cfg.origins["audio.source"]

    refused_nan, applied, switches, source, origin = asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("config.source_failed") for m in messages), messages
    assert refused_nan and any("config.reload_failed" in m and "finite number" in m
                               for m in messages)
    assert applied and switches == 1 and source == f"file:{fleurs_en[4]}"
    assert origin == str(path)
    overridden = [m for m in messages if m.startswith("config.overridden")]
    assert len(overridden) == 1 and "setting=local.threads file=3 in_force=1" in overridden[0]


# -- --engine auto at stop with the service unreachable ------------------------------------------


@pytest.mark.timeout(180)
def test_auto_engine_stop_with_service_unreachable_transcribes_locally(
    fleurs_en: list[Path], db_url: str
) -> None:
    """--engine auto, the OpenAI endpoint refusing connections, stopped mid-meeting before
    openai.grace_s: the speech taken in is transcribed locally (it used to wait 30 s, log
    engine.switch_timeout and store nothing)."""
    import socket

    from conftest import normalise, reference
    from fakes.speech import ArraySource, conversation

    from captiond.audio.segmenter import Params
    from captiond.engines.auto import AutoEngine
    from captiond.engines.local import LocalEngine
    from captiond.engines.openai import OpenAIEngine, OpenAIOptions
    from captiond.engines.whisper import WhisperBackend
    from captiond.pipeline import Session, Stream

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{probe.getsockname()[1]}/v1/realtime"
    backend = WhisperBackend(None, threads=1)
    key = "sk-test-unreachable-000000000000"

    def decode(samples: object, offset_ms: int) -> object:
        return backend.decode(samples, offset_ms=offset_ms)

    engine = AutoEngine(
        lambda prefix: OpenAIEngine(key, OpenAIOptions(url=url), id_prefix=prefix),
        lambda prefix: LocalEngine(backend, Params(rate=16_000), partial_interval_s=0.0,
                                   id_prefix=prefix),
        decode=decode, grace_s=600.0, url=url, api_key=key, language="en",
    )
    clips = fleurs_en[3:5]
    audio = conversation(clips, pause_s=1.0)
    speed = 4.0
    # Stop in the middle of the second clip: the first is complete, the second cut off.
    first_s = 1.0 + len(conversation(clips[:1], pause_s=0.0)) / 16_000 + 1.0
    stop_after_s = (first_s + 1.5) / speed
    store = Store.open(db_url)

    async def main() -> int:
        session = Session(store, [Stream(ArraySource(audio, speed=speed), engine)], feed=Feed(),
                          queue_s=60.0)
        asyncio.get_running_loop().call_later(stop_after_s, session.stop)
        return await session.run()

    try:
        sid = asyncio.run(main())
        rows = store.lines(sid, statuses=())
        gaps = store.gaps(sid)
    finally:
        store.close()
    assert rows, "no line stored for the speech taken in"
    assert all(r.status == "final" and r.engine == "local" for r in rows), \
        [(r.status, r.engine, r.error) for r in rows]
    text = normalise(" ".join(r.text for r in rows))
    words = reference(clips[0]).split()
    assert sum(w in text.split() for w in words) >= 0.7 * len(words), text
    # The second clip's opening was taken in too: it is there as text or as a gap.
    assert max(r.audio_end_ms for r in rows) > first_s * 1000 or gaps


# -- damaged audio files -------------------------------------------------------------------------


def _damaged(tmp_path: Path, clip: Path, suffix: str) -> Path:
    """``clip`` re-encoded as ``suffix`` (or copied for .ogg) with 2,000 bytes flipped mid-file."""
    out = tmp_path / f"damaged{suffix}"
    if suffix == clip.suffix:
        out.write_bytes(clip.read_bytes())
    else:
        need_programs("ffmpeg", install="apt-get install ffmpeg")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), str(out)],
                       check=True, timeout=60)
    data = bytearray(out.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 2000):
        data[i] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("suffix", [".ogg", ".mp3"])
def test_damaged_file_warns_with_the_time_and_keeps_the_audio(
    fleurs_en: list[Path], tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Flipped bytes mid-file: a warning names the time of the damage, decoding goes on after
    it and the stream keeps the file's length (an .ogg used to stop silently at the damage,
    an .mp3 to fail the whole run)."""
    import logging
    import re

    from captiond.audio.sources import FileSource

    path = _damaged(tmp_path, fleurs_en[2], suffix)
    caplog.set_level(logging.WARNING, logger="captiond.audio")
    source = FileSource(path, realtime=False)

    async def read() -> float:
        end = 0
        async for block in source.blocks():
            end = block.end
        return end / source.rate

    length_s = asyncio.run(read())
    warnings = [r.getMessage() for r in caplog.records if "audio.file_damaged" in r.getMessage()]
    assert warnings, "no warning for a damaged file"
    at = re.search(r"at=(\d\d):(\d\d):(\d\d)\.\d", warnings[0])
    assert at is not None, warnings[0]
    seconds = int(at.group(2)) * 60 + int(at.group(3))
    assert 1 <= seconds < (source.duration_s or 0) - 1, warnings[0]
    assert length_s >= 0.95 * (source.duration_s or 0), (length_s, source.duration_s)


# -- the database file deleted while the daemon runs ---------------------------------------------


def _final(i: int) -> object:
    from captiond.events import Line, LineStatus, LineUpdate, UpdateKind

    line = Line(item_id=f"i{i}", previous_item_id=f"i{i - 1}" if i else None, seq=i,
                audio_start_ms=i * 1000, audio_end_ms=i * 1000 + 800, text=f"line {i}",
                status=LineStatus.FINAL)
    return LineUpdate(UpdateKind.UPDATED, line)


@pytest.mark.parametrize("from_memory", [False, True])
def test_deleted_database_is_noticed_and_written_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, from_memory: bool
) -> None:
    """`rm captiond.db*` while a session runs: an error is logged, counted as a store error,
    and the database is recreated with the session and every line (from the still-open file,
    or from the writer's memory when that copy fails); lines after it land in it too."""
    import logging

    from captiond.transcript.writer import StoreWriter

    caplog.set_level(logging.INFO, logger="captiond.store")
    path = tmp_path / "data" / "captiond.db"
    store = Store.open(f"sqlite:///{path}")
    earlier = store.begin_session(source="mic", engine="local", title="earlier")
    store.end_session(earlier)
    sid = store.begin_session(source="mic", engine="local", title="live")
    writer = StoreWriter(store, sid)
    try:
        writer.submit([_final(i) for i in range(5)])
        writer.flush().result(10)
        if from_memory:
            writer._keeper.close()  # the open copy is unusable: only memory is left
        for p in path.parent.glob("captiond.db*"):
            p.unlink()
        writer.submit([_final(i) for i in range(5, 8)])
        writer.flush().result(10)
        writer.submit([_final(8)])
        writer.flush().result(10)
        errors = writer.errors
    finally:
        writer.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("store.database_vanished") and "how=deleted" in m for m in messages)
    assert errors >= 1
    store.end_session(sid)
    store.close()
    reopened = Store.open(f"sqlite:///{path}")
    try:
        assert [r.text for r in reopened.lines(sid)] == [f"line {i}" for i in range(9)]
        row = reopened.resolve_session(sid)
        assert row.title == "live" and row.status == "completed"
        titles = [r.title for r, _ in reopened.list_sessions()]
        assert titles == (["live"] if from_memory else ["live", "earlier"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        reopened.close()


def test_replaced_database_is_moved_aside_and_ours_put_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A different file renamed over the database while running: it is moved aside (not
    written into, not lost) and the running database is put back at the path."""
    import logging

    from captiond.transcript.writer import StoreWriter

    caplog.set_level(logging.INFO, logger="captiond.store")
    path = tmp_path / "captiond.db"
    other = tmp_path / "other" / "captiond.db"
    foreign = Store.open(f"sqlite:///{other}")
    foreign.end_session(foreign.begin_session(source="x", engine="local", title="foreign"))
    foreign.close()
    store = Store.open(f"sqlite:///{path}")
    sid = store.begin_session(source="mic", engine="local", title="live")
    writer = StoreWriter(store, sid)
    try:
        writer.submit([_final(i) for i in range(3)])
        writer.flush().result(10)
        os.replace(other, path)
        writer.submit([_final(3)])
        writer.flush().result(10)
        writer.submit([_final(4)])
        writer.flush().result(10)
    finally:
        writer.close()
        store.close()
    assert any("how=replaced" in r.getMessage() for r in caplog.records)
    aside = [p for p in tmp_path.glob("captiond.db.replaced-*") if not p.name.endswith(("-wal",
                                                                                         "-shm"))]
    assert len(aside) == 1
    moved = Store(f"sqlite:///{aside[0]}")
    ours = Store(f"sqlite:///{path}")
    try:
        assert [r.title for r, _ in moved.list_sessions()] == ["foreign"]
        assert [r.title for r, _ in ours.list_sessions()] == ["live"]
        assert len(ours.lines(sid)) == 5
    finally:
        moved.close()
        ours.close()


def test_truncated_file_says_where_decoding_stopped(
    fleurs_en: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An MP3 cut off half-way (its header still states the whole length): audio.file_cut_off
    names the time where decoding stopped; what came before is kept."""
    import logging
    import re

    from captiond.audio.sources import FileSource

    need_programs("ffmpeg", install="apt-get install ffmpeg")
    full = tmp_path / "full.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(fleurs_en[2]), str(full)],
                   check=True, timeout=60)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, logger="captiond.audio")
    source = FileSource(cut, realtime=False)

    async def read() -> float:
        end = 0
        async for block in source.blocks():
            end = block.end
        return end / source.rate

    length_s = asyncio.run(read())
    assert 0.4 * (source.duration_s or 0) < length_s < 0.6 * (source.duration_s or 0)
    cut_off = [r.getMessage() for r in caplog.records if "audio.file_cut_off" in r.getMessage()]
    assert len(cut_off) == 1, cut_off
    at = re.search(r"stopped_at=00:00:(\d\d)\.\d", cut_off[0])
    assert at is not None and abs(int(at.group(1)) - length_s) <= 1, cut_off


def test_file_unreadable_from_some_point_keeps_the_lines_before_it(
    fleurs_en: list[Path], tmp_path: Path
) -> None:
    """Speech, then bytes no decoder reads: `transcribe` stores the lines of the speech before
    the damage, then exits 1 with one line naming the time where decoding stopped."""
    import numpy as np

    data = fleurs_en[0].read_bytes()
    bad = tmp_path / "torn.ogg"
    rng = np.random.default_rng(1)
    bad.write_bytes(data[:12_000] + rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    db = tmp_path / "c.db"
    result = subprocess.run(
        [sys.executable, "-m", "captiond", "transcribe", str(bad), "--no-progress",
         "--db", f"sqlite:///{db}"],
        env=daemon_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=180,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"captiond: cannot decode {bad} after 00:00:03."), last
    store = Store(f"sqlite:///{db}")
    try:
        (row, lines), = store.list_sessions()
        assert lines >= 1 and row.status == "completed"
    finally:
        store.close()
