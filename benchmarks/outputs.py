"""Caption outputs: delay from a line's final to its delivery, and the CPU each output costs.

The far ends run in a separate process (the stand-ins from tests/fakes: obs-websocket v5,
YouTube and Zoom caption URLs, a webhook receiver, all on 127.0.0.1), so this process's CPU
time is captiond's side only. For each output kind alone:

- paced: ``--lines`` finals of ~10 words published ``--every`` seconds apart (3 s: speech at
  ~3.5 words/s), all outputs on one feed as in the daemon. Delay = final published -> far end
  answered (the planner's own stamps), p50/p99; it includes each output's rate limit
  (min_interval_s: OBS 0.5 s, YouTube/Zoom 1.0 s, webhook 0).
- burst: ``--burst`` finals at once (a backlog after an outage), each output alone: CPU ms per
  line and how long the backlog takes to drain (OBS keeps at most 64 caption states and skips
  states older than 15 s: by design, since old captions in a live stream help nobody).

CPU figures are process CPU time (stable on a busy machine); delays are wall time: report
``uptime`` with them.

    python benchmarks/outputs.py [--lines 20] [--every 3] [--burst 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kit

OBS_PASSWORD = "bench-password"
WORDS = "the quick brown fox jumps over the lazy dog again and".split()
#: Longest a phase waits for the far end to have everything.
DRAIN_TIMEOUT_S = 120.0

_SERVERS = r"""
import asyncio, json, sys, threading
sys.path.insert(0, sys.argv[1])
import kit
kit.support("fakes")
from fakes.captions import FakeWebhook, FakeYouTube, FakeZoom
from fakes.obs_websocket import FakeObs

async def main():
    obs = await FakeObs(password=sys.argv[2]).start()
    yt, zoom, hook = FakeYouTube(clock_offset_s=30.0), FakeZoom(), FakeWebhook(key="k")
    print(json.dumps({"obs": obs.url, "youtube": yt.ingestion_url, "zoom": zoom.api_token_url,
                      "webhook": hook.url}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def line(i: int) -> dict:
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(10)) + f" {i}"
    return {"type": "line", "event": "finalised", "session": 1, "item_id": f"b{i}", "seq": i,
            "track": "original", "channel": "", "speaker": None, "status": "final",
            "text": text, "stable": len(text), "start_ms": i * 3000, "end_ms": i * 3000 + 2500,
            "engine": "bench"}


def make_output(kind: str, url: str, feed: object) -> object:
    from captiond import config
    from captiond.outputs.drivers import Output
    from captiond.outputs.spec import Secrets

    spec = config.parse(f'[[outputs]]\nkind = "{kind}"\n'
                        + ('url = "http://x"\n' if kind != "obs" else "")).outputs[0]
    secret = OBS_PASSWORD if kind == "obs" else ("k" if kind == "webhook" else "")
    output = Output(spec, Secrets(url, secret), feed)  # type: ignore[arg-type]
    output.subscribe()
    return output


async def drained(outputs: list, n: int) -> None:
    """Until every output has delivered or dropped ``n`` lines and holds nothing."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(not o.planner.pending and o.planner.sent_lines + lines_dropped(o) >= n
               for o in outputs):
            return
        await asyncio.sleep(0.1)  # polling costs CPU too: not too often


def lines_dropped(output: object) -> int:
    planner = output.planner  # type: ignore[attr-defined]
    # OBS drops caption states, not lines: count what it will never send as delivered-or-lost.
    return planner.dropped if planner.kind != "obs" else (10**9 if planner.dropped else 0)


async def paced(urls: dict[str, str], kinds: list[str], lines: int, every: float) -> dict:
    """All outputs on one feed, as in the daemon; the delays of each."""
    from captiond.feed import Feed

    feed = Feed()
    outputs = [make_output(k, urls[k], feed) for k in kinds]
    tasks = [asyncio.create_task(o.run()) for o in outputs]  # type: ignore[attr-defined]
    cpu0 = time.process_time()
    for i in range(lines):
        feed.publish(line(i))
        await asyncio.sleep(every)
    await drained(outputs, lines)
    cpu = time.process_time() - cpu0
    out = {"cpu_ms_per_line": cpu / lines * 1000}
    for kind, o in zip(kinds, outputs, strict=True):
        delays = list(o.planner.delays)  # type: ignore[attr-defined]
        out[kind] = {"p50_ms": percentile(delays, 0.5) * 1000,
                     "p99_ms": percentile(delays, 0.99) * 1000,
                     "delivered": o.planner.sent_lines}  # type: ignore[attr-defined]
        o.close()  # type: ignore[attr-defined]
    await asyncio.gather(*tasks)
    return out


async def burst(kind: str, url: str, n: int) -> dict:
    """One output alone: a backlog of ``n`` finals at once; its CPU per line, its drain time."""
    from captiond.feed import Feed

    feed = Feed()
    output = make_output(kind, url, feed)
    task = asyncio.create_task(output.run())  # type: ignore[attr-defined]
    await asyncio.sleep(1.5)  # connected, clock/seq known
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i in range(n):
        feed.publish(line(100_000 + i))
        if i % 200 == 0:
            await asyncio.sleep(0)
    await drained([output], n)
    result = {"cpu_ms_per_line": (time.process_time() - cpu0) / n * 1000,
              "drain_s": time.monotonic() - wall0,
              "delivered": output.planner.sent_lines,  # type: ignore[attr-defined]
              "requests": output.planner.sent_requests,  # type: ignore[attr-defined]
              "dropped": output.planner.dropped}  # type: ignore[attr-defined]
    output.close()  # type: ignore[attr-defined]
    await asyncio.wait_for(task, 10)
    return result



def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"burst": {}}
    servers = subprocess.Popen([sys.executable, "-c", _SERVERS, str(Path(__file__).parent),
                                OBS_PASSWORD],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert servers.stdout is not None
        urls = json.loads(servers.stdout.readline())
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
        kinds = args.kinds.split(",")
        p = asyncio.run(paced(urls, kinds, args.lines, args.every))
        figures["paced"] = p
        print(f"paced: {args.lines} finals of ~10 words, {args.every} s apart, all outputs on one "
              f"feed; CPU {p['cpu_ms_per_line']:.2f} ms per line for all of them")
        print(f"{'output':<8} {'p50 ms':>8} {'p99 ms':>8} {'delivered':>10}")
        for kind in kinds:
            r = p[kind]
            print(f"{kind:<8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['delivered']:>10}")
        print(f"burst: a backlog of {args.burst} finals at once, each output alone")
        print(f"{'output':<8} {'cpu ms/line':>12} {'drain s':>8} {'requests':>9} "
              f"{'delivered':>10} {'dropped':>8}")
        for kind in kinds:
            r = figures["burst"][kind] = asyncio.run(burst(kind, urls[kind], args.burst))
            print(f"{kind:<8} {r['cpu_ms_per_line']:>12.3f} {r['drain_s']:>8.2f} "
                  f"{r['requests']:>9} {r['delivered']:>10} {r['dropped']:>8}")
    finally:
        if servers.stdin is not None:
            servers.stdin.close()
        servers.wait(10)
    return figures


if __name__ == "__main__":
    parser = kit.parser(__doc__)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--kinds", default="obs,youtube,zoom,webhook")
    kit.run(main, parser.parse_args())
