"""What captiond itself adds on the OpenAI engine path: latency each way, and CPU.

The FLEURS en clips (48 kHz, as a device would deliver) are played in real time through the
real pipeline (resampler -> OpenAI engine with the silero VAD -> reconciler -> store writer ->
feed) against the fake realtime server, which runs in a child process so its CPU is not
counted (it answers "<ms> ms" with the service's timing: committed ~150 ms, completion
0.5-0.8 s after the commit).

Prints:
- added latency out: audio block received by the engine -> its append written to the socket
  (VAD, PCM16 + base64 + JSON, queue, websockets send), p50/p99/max over every block sent live;
- added latency in: server event read from the socket -> the line it changed delivered to a
  feed subscriber (protocol, reconciler, store writer hand-off, feed), p50/p99/max;
- CPU seconds of this process per second of audio (every thread: VAD, resampling, JSON,
  websockets, SQLite writer); one-time loading (imports, the VAD model, the database
  migration) is done before measuring and printed on its own.

Targets: p99 <= 30 ms each way, CPU <= 0.03 s per audio second.

    python benchmarks/openai_overhead.py [--speed 1.0] [--clips PATH ...]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
import numpy as np
from kit import EN_CLIPS

from captiond.engines.openai import OpenAIEngine, OpenAIOptions
from captiond.feed import Feed
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

KEY = "sk-bench-0123456789abcdef"
DEVICE_RATE = 48_000


def _serve(conn: Any) -> None:
    """Child process: the fake server until terminated."""
    kit.support("fakes")
    from fakes.openai_realtime import FakeRealtimeServer, length_transcriber

    async def main() -> None:
        async with FakeRealtimeServer(KEY, transcriber=length_transcriber) as server:
            conn.send(server.url)
            await asyncio.Event().wait()

    asyncio.run(main())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000 if values else float("nan")


def warm_up() -> float:
    """One-time loading a daemon does at start: CPU seconds it took."""
    cpu0 = time.process_time()
    from captiond.audio.vad import StreamingVad

    StreamingVad()(np.zeros(512, dtype=np.float32))
    return time.process_time() - cpu0


async def measure(url: str, clips: list[Path], speed: float) -> dict[str, Any]:
    kit.support("fakes")
    from fakes.speech import ArraySource, conversation

    audio = conversation(clips, rate=DEVICE_RATE)
    engine = OpenAIEngine(KEY, OpenAIOptions(url=url))
    received_at: dict[str, float] = {}
    inbound: list[float] = []

    receive = engine.protocol.receive

    def timed_receive(handle: int, data: Any, now: float) -> Any:
        out = receive(handle, data, now)
        for event in out.events:
            received_at[event.item_id] = engine.last_receive_t
        return out

    engine.protocol.receive = timed_receive  # type: ignore[method-assign]
    feed = Feed()
    subscription = feed.subscribe("bench")

    async def watch() -> None:
        async for message in subscription:
            if message.get("type") != "line":
                continue
            t = received_at.pop(message["item_id"], None)
            if t is not None:
                inbound.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        cpu_load = time.process_time()
        store = Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        cpu_load = time.process_time() - cpu_load + warm_up()
        source = ArraySource(audio, speed=speed, rate=DEVICE_RATE)
        session = Session(store, [Stream(source, engine)], feed=feed, queue_s=60.0)
        watcher = asyncio.ensure_future(watch())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await session.run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        watcher.cancel()
        store.close()
    outbound = list(engine.append_latency_s)
    audio_s = len(audio) / DEVICE_RATE
    return {
        "audio_s": audio_s,
        "wall_s": wall,
        "speech_s": engine.speech_samples / 24_000,
        "out": outbound,
        "in": inbound,
        "cpu_s": cpu,
        "cpu_load_s": cpu_load,
        "stats": engine.stats(),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    kit.require(args.clips)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        url = parent.recv()
        r = asyncio.run(measure(url, list(args.clips), args.speed))
    finally:
        server.terminate()
        server.join(5)
    print(f"audio {r['audio_s']:.1f} s ({r['speech_s']:.1f} s speech sent) in {r['wall_s']:.1f} s "
          f"at speed {args.speed}; items completed {r['stats']['completed']}, "
          f"cost ${r['stats']['cost_usd']:.4f}")
    print(f"added latency out (block -> append on the wire): p50 {pct(r['out'], 50):.2f} ms  "
          f"p99 {pct(r['out'], 99):.2f} ms  max {pct(r['out'], 100):.2f} ms  "
          f"({len(r['out'])} blocks)")
    print(f"added latency in  (server event -> line at a feed subscriber): "
          f"p50 {pct(r['in'], 50):.2f} ms  p99 {pct(r['in'], 99):.2f} ms  "
          f"max {pct(r['in'], 100):.2f} ms  ({len(r['in'])} events)")
    print(f"CPU {r['cpu_s']:.2f} s for {r['audio_s']:.1f} s of audio = "
          f"{r['cpu_s'] / r['audio_s']:.4f} s per audio second "
          f"(+ {r['cpu_load_s']:.2f} s one-time loading before the run)")
    print("targets: p99 <= 30 ms each way, CPU <= 0.03 s per audio second")
    return {
        "audio_s": r["audio_s"], "speech_s": r["speech_s"], "wall_s": r["wall_s"],
        "completed": r["stats"]["completed"], "cost_usd": r["stats"]["cost_usd"],
        "out_ms": {"p50": pct(r["out"], 50), "p99": pct(r["out"], 99), "max": pct(r["out"], 100),
                   "n": len(r["out"])},
        "in_ms": {"p50": pct(r["in"], 50), "p99": pct(r["in"], 99), "max": pct(r["in"], 100),
                  "n": len(r["in"])},
        "cpu_s": r["cpu_s"], "cpu_per_audio_s": r["cpu_s"] / r["audio_s"],
        "cpu_load_s": r["cpu_load_s"],
    }


if __name__ == "__main__":
    parser = kit.parser(__doc__)
    parser.add_argument("--clips", nargs="*", type=Path, default=EN_CLIPS)
    parser.add_argument("--speed", type=float, default=1.0,
                        help="playback speed (1.0 = real time, as from a device)")
    kit.run(main, parser.parse_args())
