"""Connections opened and audio sent by the OpenAI engines in a faulty run.

The FLEURS en clips (a ~50 s meeting with pauses) are streamed through the real pipeline
(resampler -> transcription engine with the silero VAD, and one translation engine) against the
fake realtime and translation servers, with faults: every open connection dropped every
``--drop-every`` seconds, sessions capped (and advertised) at ``--cap`` seconds, optionally a
client clock ``--skew`` seconds off the servers'. Prints, per engine: connections opened
(handshakes), drops, rotations, and the audio sent on the wire (first time + again) against
the meeting's length and its speech; for transcription also what was sent again and why (the
utterances whose completion had not arrived when their connection died).

    python benchmarks/openai_faults.py [--drop-every 12] [--cap 25] [--speed 1.0] [--skew 0]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
from kit import EN_CLIPS

from captiond.engines.openai import OpenAIEngine, OpenAIOptions
from captiond.engines.translate import TranslateOptions, TranslationEngine
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

KEY = "sk-bench-0123456789abcdef"
RATE = 24_000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kit.support("fakes")
    from fakes.openai_realtime import FakeRealtimeServer, Faults
    from fakes.openai_translate import FakeTranslateServer
    from fakes.openai_translate import Faults as TFaults
    from fakes.speech import ArraySource, conversation

    kit.require(EN_CLIPS)
    audio = conversation(EN_CLIPS, pause_s=1.5)
    faults = Faults(drop_every_s=args.drop_every or None, session_cap_s=args.cap,
                    clock_skew_s=args.skew)
    t_faults = TFaults(session_cap_s=args.cap, clock_skew_s=args.skew)
    async with FakeRealtimeServer(KEY, faults=faults) as src, \
            FakeTranslateServer(KEY, script=["uno dos tres"] * 200, faults=t_faults) as tr:
        engine = OpenAIEngine(KEY, OpenAIOptions(url=src.url))
        translator = TranslationEngine(KEY, "es", TranslateOptions(url=tr.url))
        drops = 0

        async def drop_translation() -> None:
            nonlocal drops
            while args.drop_every:
                await asyncio.sleep(args.drop_every)
                drops += tr.drop_all()

        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
            session = Session(store, [Stream(ArraySource(audio, speed=args.speed), engine,
                                             translators=[translator])], queue_s=60.0)
            dropper = asyncio.ensure_future(drop_translation())
            wall0 = time.perf_counter()
            try:
                await session.run()
            finally:
                dropper.cancel()
            wall = time.perf_counter() - wall0
            store.close()
        return {"audio_s": len(audio) / RATE, "wall_s": wall, "engine": engine, "src": src,
                "translator": translator, "tr": tr, "t_drops": drops}


def main(args: argparse.Namespace) -> dict[str, Any]:
    r = asyncio.run(run(args))
    e, src = r["engine"], r["src"]
    c = e.protocol.counters
    meeting = r["audio_s"]
    speech = e.speech_samples / RATE
    first, again = c["samples_sent"] / RATE, c["samples_resent"] / RATE
    received = sum(s.appended_samples for s in src.sessions) / RATE
    print(f"faults: drop every {args.drop_every:g} s, session cap {args.cap:g} s, "
          f"clock skew {args.skew:g} s; meeting {meeting:.1f} s ({speech:.1f} s speech) "
          f"in {r['wall_s']:.1f} s wall at speed {args.speed:g}")
    print(f"transcription: connections {len(src.handshakes)} (reconnects {e.reconnects}, "
          f"rotations {e.rotations}); lines {c['completed']} completed, "
          f"{c['failed'] + c['timed_out']} failed")
    unanswered = c.get("samples_resent_unanswered", 0) / RATE
    in_progress = c.get("samples_resent_in_progress", 0) / RATE
    print(f"  audio sent {first + again:.1f} s = {first:.1f} s first time + {again:.1f} s again: "
          f"{unanswered:.1f} s of utterances committed whose completion had not arrived when "
          f"their session died, {in_progress:.1f} s of utterances in progress then "
          f"({c['resent_items']} utterances resent whole, nothing else resent); "
          f"{(first + again) / meeting:.2f}x the meeting, {(first + again) / speech:.2f}x its "
          f"speech; the server received {received:.1f} s")
    t, tr = r["translator"], r["tr"]
    tc = t.protocol.counters
    t_sent = tc["samples_sent"] / RATE
    print(f"translation:   connections {len(tr.handshakes)} (drops {tc['drops']}, rotations "
          f"{tc['rotations']}); audio sent {t_sent:.1f} s of which {tc['samples_resent'] / RATE:.1f} "
          f"s again = {t_sent / meeting:.2f}x the meeting")
    return {
        "meeting_s": meeting, "speech_s": speech, "wall_s": r["wall_s"],
        "transcription": {"connections": len(src.handshakes), "reconnects": e.reconnects,
                          "rotations": e.rotations, "completed": c["completed"],
                          "failed": c["failed"] + c["timed_out"], "sent_first_s": first,
                          "sent_again_s": again, "resent_unanswered_s": unanswered,
                          "resent_in_progress_s": in_progress,
                          "resent_items": c["resent_items"], "server_received_s": received},
        "translation": {"connections": len(tr.handshakes), "drops": tc["drops"],
                        "rotations": tc["rotations"], "sent_s": t_sent,
                        "sent_again_s": tc["samples_resent"] / RATE},
    }


if __name__ == "__main__":
    parser = kit.parser(__doc__)
    parser.add_argument("--drop-every", type=float, default=12.0, help="seconds; 0: no drops")
    parser.add_argument("--cap", type=float, default=25.0, help="session cap, seconds")
    parser.add_argument("--skew", type=float, default=0.0,
                        help="server clock minus client clock, seconds (-7200: client 2 h fast)")
    parser.add_argument("--speed", type=float, default=1.0)
    kit.run(main, parser.parse_args())
