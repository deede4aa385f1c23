"""System audio's stream clock against the wall clock across a sound-server outage.

Usage: ``python benchmarks/system_audio_clock.py [--rounds 3] [--away 1.5]``

Starts a private PulseAudio server (as the tests do: tests/pulse_support.py) with a 48 kHz null
sink, records its monitor with captiond's ``ServerSource``, removes the sink after 0.5 s of
audio for ``--away`` seconds, puts it back and records on until 0.5 s after capture resumed.
Per round it prints the gap on the stream clock, the outage the wall clock saw, and how far the
stream clock's end is from the wall time since capture began (the drift: 0 means later audio
is not shifted). The test (tests/system/test_system_audio.py) checks the behaviour (one
reconnect, one jump, a gap at least as long as the outage); this prints the figures, which
depend on the machine's load. Needs pulseaudio and pulseaudio-utils.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import kit

from captiond.audio.sources import open_source  # noqa: E402
from captiond.audio.system import ServerSource  # noqa: E402

RATE = 48_000
#: Audio recorded before the sink is removed, and after capture resumes.
BEFORE_S = 0.5
AFTER_S = 0.5
#: Longest one round may take.
ROUND_TIMEOUT_S = 30.0


async def one_round(pulse: Any, away_s: float) -> dict[str, float]:
    """One outage; the stream clock's gap and end beside the wall clock's view of them."""
    module = pulse.null_sink("speakers", rate=RATE)
    source = open_source("system:speakers")
    assert isinstance(source, ServerSource)
    t0 = time.monotonic()
    ends: list[int] = []
    gap = (0, 0)
    lost_at = back_at = resumed = float("inf")
    async for block in source.blocks():
        if ends and block.start != ends[-1]:
            gap, resumed = (ends[-1], block.start), time.monotonic() - t0
        ends.append(block.end)
        if block.end / RATE >= BEFORE_S and source.reconnects == 0 and module >= 0:
            lost_at = time.monotonic() - t0
            await asyncio.to_thread(pulse.unload, module)
            await asyncio.sleep(away_s)
            module = await asyncio.to_thread(pulse.null_sink, "speakers", rate=RATE)
            back_at = time.monotonic() - t0
        if source.reconnects and time.monotonic() - t0 >= resumed + AFTER_S:
            break
    await source.close()
    wall_s = time.monotonic() - t0
    await asyncio.to_thread(pulse.unload, module)
    return {"gap_s": (gap[1] - gap[0]) / RATE, "outage_s": back_at - lost_at,
            "resumed_s": resumed, "drift_s": ends[-1] / RATE - wall_s}


def main(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    pulse_server = kit.support("pulse_support").PulseServer
    with tempfile.TemporaryDirectory() as tmp:
        pulse = pulse_server(Path(tmp) / "pulse")
        pulse.start()
        os.environ["PULSE_SERVER"] = pulse.env["PULSE_SERVER"]
        try:
            print(f"{'round':>5} {'gap s':>7} {'outage s':>9} {'drift s':>8}")
            for n in range(1, args.rounds + 1):
                r = asyncio.run(asyncio.wait_for(one_round(pulse, args.away), ROUND_TIMEOUT_S))
                rounds.append(r)
                print(f"{n:>5} {r['gap_s']:>7.3f} {r['outage_s']:>9.3f} {r['drift_s']:>+8.3f}")
        finally:
            pulse.stop()
    return {"rounds": rounds}


if __name__ == "__main__":
    ap = kit.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="outages to measure (default 3)")
    ap.add_argument("--away", type=float, default=1.5, help="seconds the sink is gone")
    kit.run(main, ap.parse_args())
