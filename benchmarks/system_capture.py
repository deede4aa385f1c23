"""System-audio capture: latency from playing to captiond having the audio, and its CPU cost.

Usage: ``python benchmarks/system_capture.py [--rate 48000] [--bursts 5]``

Starts a private PulseAudio server (as the tests do) with a stereo null sink at ``--rate``,
records its monitor with :class:`captiond.audio.system.ServerSource`, and plays tone bursts
into the sink with ``paplay``. For each burst it prints the delay from starting ``paplay``
to the first block holding the tone, less the file's 0.5 s lead-in (``paplay`` start-up +
server + ``parec`` + pipe), then the CPU time ``parec`` and captiond's own downmix + soxr
resampling to 16 kHz used per minute of audio. A null sink mixes ahead of real time, so a
delay may be slightly negative; figures within one 32 ms block of zero mean capture adds no
buffering of its own. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
import numpy as np

from captiond.audio.resample import Resampler
from captiond.audio.system import ServerSource, open_system

#: Silence before each burst's tone in the played file, and the tone's length.
LEAD_S = 0.5
TONE_S = 0.5
#: A block holds the tone when its peak is above this (the tone's peak is 0.5).
DETECT_PEAK = 0.1
#: Quiet time between bursts, and the wait for a fresh null sink to deliver audio.
BETWEEN_S = 1.0
WAKE_S = 3.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(server: Any, tone: Path, bursts: int) -> dict[str, Any]:
    source = open_system("bench", block_ms=32)
    assert isinstance(source, ServerSource)
    resample = Resampler(16_000)
    delays: list[float] = []
    own_cpu = 0.0
    audio_s = 0.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    state = {"played_at": None, "player": None, "next_at": started + WAKE_S}
    parec_cpu = 0.0
    players: list = []
    async for block in source.blocks():
        t = time.process_time()
        resample(block)
        own_cpu += time.process_time() - t
        audio_s += block.duration_s
        now = loop.time()
        if state["played_at"] is None and now >= state["next_at"]:
            state["player"] = server.play(tone, "bench")
            state["played_at"] = now
        elif state["played_at"] is not None and float(np.abs(block.samples).max()) > DETECT_PEAK:
            delays.append(now - state["played_at"] - LEAD_S)
            players.append(state["player"])
            state["played_at"] = None
            state["next_at"] = now + BETWEEN_S
            if len(delays) == bursts:
                if source._proc is not None:
                    parec_cpu = cpu_seconds(source._proc.pid)
                break
    await source.close()
    for player in players:
        player.wait()
    print(f"server rate {source.rate} Hz, {source.channels} ch, block 32 ms")
    print("play-to-capture delay per burst (ms): " + ", ".join(f"{d * 1000:.0f}" for d in delays))
    print(f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    print(f"audio captured {audio_s:.1f} s")
    print(f"parec CPU {parec_cpu / audio_s * 60:.2f} s per audio minute")
    print(f"captiond downmix+resample CPU {own_cpu / audio_s * 60:.3f} s per audio minute")
    return {"server_rate": source.rate, "channels": source.channels,
            "delays_ms": [d * 1000 for d in delays],
            "median_ms": statistics.median(delays) * 1000, "max_ms": max(delays) * 1000,
            "audio_s": audio_s, "parec_cpu_s_per_min": parec_cpu / audio_s * 60,
            "captiond_cpu_s_per_min": own_cpu / audio_s * 60}


def main(args: argparse.Namespace) -> dict[str, Any]:
    pulse_support = kit.support("pulse_support")
    PulseServer, write_tone = pulse_support.PulseServer, pulse_support.write_tone
    with tempfile.TemporaryDirectory() as tmp:
        server = PulseServer(Path(tmp) / "pulse")
        server.start()
        try:
            os.environ["PULSE_SERVER"] = server.env["PULSE_SERVER"]
            server.null_sink("bench", rate=args.rate, channels=2)
            tone = Path(tmp) / "burst.wav"
            write_tone(tone, freq=1000.0, rate=args.rate, seconds=LEAD_S + TONE_S)
            # Silence first: zero the lead-in of the tone file.
            import wave

            with wave.open(str(tone), "rb") as r:
                frames = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2").copy()
            frames[: int(LEAD_S * args.rate) * 2] = 0
            with wave.open(str(tone), "wb") as w:
                w.setnchannels(2)
                w.setsampwidth(2)
                w.setframerate(args.rate)
                w.writeframes(frames.tobytes())
            return asyncio.run(measure(server, tone, args.bursts))
        finally:
            server.stop()


if __name__ == "__main__":
    ap = kit.parser(__doc__)
    ap.add_argument("--rate", type=int, default=48_000)
    ap.add_argument("--bursts", type=int, default=5)
    kit.run(main, ap.parse_args())
