"""The echo guard of a two-sided call in a real session: real model, real store."""

from __future__ import annotations

from captiond.config import parse
from captiond.daemon import Daemon
from captiond.transcript.echo import ECHO_REASON


def test_echo_guard_in_a_session_drops_the_mic_copy(fleurs_en, db_url) -> None:  # type: ignore[no-untyped-def]
    """A session whose mic hears exactly what the system plays (the same clip on both
    channels, real model, real store): with the guard on, every Me line is stored without
    text and with the reason (so no export shows it); the Them lines are kept."""
    import asyncio

    from captiond.audio.sources import FileSource
    from captiond.engines.factory import build_engine
    from captiond.pipeline import Session, Stream
    from captiond.transcript.store import Store

    cfg = parse("[call]\necho_guard = true\n", env={})
    clip = fleurs_en[0]
    streams = [
        Stream(FileSource(clip, realtime=False), build_engine(cfg, channel="mic", realtime=False), "mic", "Me"),
        Stream(FileSource(clip, realtime=False), build_engine(cfg, channel="system", realtime=False), "system", "Them"),
    ]
    guard = Daemon(cfg).echo_guard(streams)
    assert guard is not None
    store = Store.open(db_url)
    try:
        sid = asyncio.run(Session(store, streams, realtime=False, guard=guard).run())
        lines = store.lines(sid)
    finally:
        store.close()
    them = [ln for ln in lines if ln.speaker == "Them"]
    me = [ln for ln in lines if ln.speaker == "Me"]
    assert them and all(ln.text for ln in them)
    assert me and all(ln.text == "" and ln.error == ECHO_REASON for ln in me)
    assert guard.dropped == len(me)
