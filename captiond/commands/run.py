"""``captiond run`` (the daemon), ``captiond transcribe FILE`` and ``captiond devices``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from captiond.cli import add_setting_flags
from captiond.config import Config
from captiond.daemon import Daemon
from captiond.events import LineStatus, LineUpdate
from captiond.view import format_clock

ENGINE_FLAGS = {
    "--engine": "engine.name",
    "--language": "engine.language",
    "--model": "local.model",
    "--threads": "local.threads",
}

#: Live translation: ``--translate es,de``, ``--play-translation es[:DEVICE]``.
TRANSLATE_FLAGS = {
    "--translate": "translate.targets",
    "--play-translation": "translate.play",
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="caption live audio (the daemon)",
        description="Capture audio, caption it live and store every line.",
    )
    add_setting_flags(
        p, {"--source": "audio.source", "--rate": "audio.rate", "--channels": "audio.channels",
            "--stdin-live": "audio.stdin_live"}
    )
    add_setting_flags(p, {"--live": "export.live"})
    add_setting_flags(p, ENGINE_FLAGS)
    add_setting_flags(p, TRANSLATE_FLAGS)
    p.add_argument("--fast", action="store_true", help="file sources: as fast as the engine allows")
    p.add_argument("--title", help="session title")
    p.add_argument(
        "--output", action="append", dest="setting__outputs", metavar="KIND[,KEY=VALUE...]",
        help="send captions to an output as well (repeatable): obs, youtube, zoom or webhook "
        "with the keys of an [[outputs]] table, e.g. kind=youtube,url_env=YT_CAPTION_URL",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "transcribe",
        parents=[common],
        help="transcribe a recording as fast as possible",
        description="Run the captioning pipeline on a recording, print and store the transcript.",
    )
    p.add_argument("file", help="audio or video file (anything FFmpeg decodes); - reads it "
                   "from stdin")
    p.add_argument("--title", help="session title (default: the file name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--timestamps", action="store_true", help="print [HH:MM:SS] before each line")
    add_setting_flags(p, ENGINE_FLAGS)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser(
        "devices", parents=[common], help="list microphones and system-audio monitors"
    )
    p.set_defaults(func=cmd_devices)


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    daemon = Daemon(cfg, realtime=not args.fast, title=args.title)
    session_id = asyncio.run(daemon.run())
    auto_speakers(cfg, session_id)
    if sys.stderr.isatty():
        print(f"session {session_id} saved (captiond show {session_id})", file=sys.stderr)
    else:
        # A service's stderr is a log (journald, --log-format json): one event, not prose.
        logging.getLogger("captiond.daemon").info("daemon.exited session=%d", session_id)
    return 0


class _Progress:
    """A progress bar on stderr driven by how much audio has been captured."""

    def __init__(self, total_s: float | None, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=round(total_s, 1) if total_s else None,
                unit="s",
                unit_scale=False,
                desc="transcribing",
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
                "[{elapsed}<{remaining}]"
                if total_s
                else None,
            )

    def update(self, position_s: float) -> None:
        if self.bar is not None:
            self.bar.n = min(position_s, self.bar.total or position_s)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_transcribe(args: argparse.Namespace, cfg: Config) -> int:
    if args.file == "-":
        # A recording on stdin (`curl … | captiond transcribe -`): spooled to a private
        # temporary file first, since many formats need to seek while decoding.
        import shutil
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="captiond-stdin-") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.flush()
            args.title = args.title or "stdin"
            args.file = spool.name
            return cmd_transcribe(args, cfg)
    cfg = cfg.replace(audio__source=f"file:{args.file}")
    finals: list[LineUpdate] = []

    def collect(update: LineUpdate) -> None:
        if update.line.status is LineStatus.FINAL:
            finals.append(update)

    daemon = Daemon(cfg, realtime=False, title=args.title or args.file, view=collect, services=[])

    async def main() -> int:
        task = asyncio.create_task(daemon.run())
        progress: _Progress | None = None
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.2)
                session = daemon.session
                if session is None:
                    continue
                if progress is None:
                    progress = _Progress(
                        session.streams[0].source.duration_s,
                        enabled=not args.no_progress and sys.stderr.isatty(),
                    )
                progress.update(session.streams[0].captured_s)
        finally:
            if progress is not None:
                progress.close()
        return task.result()

    try:
        session_id = asyncio.run(main())
    except BaseException:
        _drop_if_empty(cfg, daemon)
        raise
    assert daemon.store is not None
    # The stored transcript is the truth: ordered, with late corrections applied.
    from captiond.transcript.store import Store

    store = Store(cfg.database_url())
    try:
        for row in store.lines(session_id):
            if row.text:
                prefix = f"[{format_clock(row.audio_start_ms)}] " if args.timestamps else ""
                print(prefix + row.text)
    finally:
        store.close()
    auto_speakers(cfg, session_id)
    print(f"session {session_id} saved (captiond show {session_id})", file=sys.stderr)
    return 0


def auto_speakers(cfg: Config, session_id: int) -> bool:
    """``speakers.auto``: label the session that just ended. A failure is reported and the
    session stays as it is (its captions are done); ``captiond speakers N`` resumes it."""
    if not cfg["speakers.auto"]:
        return False
    log = logging.getLogger("captiond.speakers")
    if not cfg["audio.keep"]:
        log.warning("speakers.auto_skipped session=%d (speakers.auto needs audio.keep = true)",
                    session_id)
        return False
    from captiond.commands.speakers import label
    from captiond.errors import CaptiondError

    try:
        label(cfg, str(session_id), yes=True, out=sys.stderr)
    except CaptiondError as exc:
        log.error("speakers.auto_failed session=%d error=%r (the lines are unchanged; run "
                  "`captiond speakers %d` to retry)", session_id, str(exc), session_id)
        return False
    return True


def _drop_if_empty(cfg: Config, daemon: Daemon) -> None:
    """A transcription that failed before any line or gap was stored leaves no session (an
    empty ``interrupted`` row would only clutter ``sessions``)."""
    session = daemon.session
    if session is None or session.session_id is None:
        return
    from captiond.transcript.store import Store

    store = Store(cfg.database_url())
    try:
        sid = session.session_id
        if not store.lines(sid, track=None, statuses=("final", "partial", "failed")) \
                and not store.gaps(sid):
            store.delete_session(sid)
            from captiond.audio import keep

            keep.remove(keep.audio_dir(cfg), sid)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass
    finally:
        store.close()


def cmd_devices(args: argparse.Namespace, cfg: Config) -> int:
    """Microphones PortAudio sees, then the sound server's monitors and capture sources. A
    part that cannot be listed says why in one line; the other part is still shown."""
    from captiond.audio.sources import input_devices
    from captiond.audio.system import server_info, server_sinks, server_sources
    from captiond.errors import AudioError

    try:
        devices = input_devices()
    except AudioError as exc:
        print(f"input devices: {exc}")
        devices = None
    if devices == []:
        print("no audio input devices found")
    elif devices:
        print("input devices (use --source mic:NUMBER or mic:NAME):")
        for d in devices:
            mark = "*" if d["default"] else " "
            print(f" {mark} {d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['rate']} Hz)")
    try:
        default = server_info().get("default_sink_name", "")
        sinks = server_sinks()
        sources = [s for s in server_sources() if not s.is_monitor]
    except AudioError as exc:
        print(f"system audio: {exc}")
        return 0
    print("system audio monitors (use --source system for the default, or --source system:NAME):")
    if not sinks:
        print("   (none: the sound server has no outputs)")
    for sink in sinks:
        mark = "*" if sink.name == default else " "
        print(f" {mark} {sink.name}  ({sink.description}; {sink.spec.channels} ch, {sink.spec.rate} Hz)")
    if sources:
        print("sound-server capture sources (use --source mic:pulse:NAME):")
        for src in sources:
            print(f"   mic:pulse:{src.name}  ({src.description}; {src.spec.channels} ch, {src.spec.rate} Hz)")
    return 0
