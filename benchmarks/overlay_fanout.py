"""Overlay fan-out: latency from Feed.publish to arrival at each viewer, with stalled viewers.

The daemon side (this process) runs the real Feed and OverlayServer on 127.0.0.1. Viewers run
in a separate process (as OBS would), so the figures include the real socket path:

- readers: WebSocket clients that read and parse every message and stamp its arrival;
- stalled: clients that complete the WebSocket handshake and then never read. Before the
  measurement, a burst of large lines fills their socket buffers, so during the measurement
  their sends are blocked and their queues coalesce, as with a frozen OBS instance.

The measurement is a caption stream: partial updates at PUBLISH_HZ, every PARTIALS_PER_LINE-th
update finalises the line. Each message carries its publish time (CLOCK_MONOTONIC, shared by
both processes). Prints p50/p99/max latency over all readers' samples, the cost of
Feed.publish (what the pipeline pays), how many stalled viewers were still connected, and the
daemon's RSS.

    python benchmarks/overlay_fanout.py [--seconds 6] [--scenarios 1:0,50:10,200:10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import kit

#: Caption updates per second during the measurement (a fast talker's partials).
PUBLISH_HZ = 20
#: Partial updates per line before it is finalised.
PARTIALS_PER_LINE = 8
#: Lines in the burst that fills stalled viewers' buffers, and each line's size (bytes).
PRIME_LINES = 300
PRIME_LINE_BYTES = 2_000
#: Time allowed for readers to drain the priming burst before measuring (s).
PRIME_SETTLE_S = 2.0
#: Processes the reading viewers are spread over.
VIEWER_PROCESSES = 2
#: Marker that starts every measured message's text.
MARK = "m"


# -- viewer process -------------------------------------------------------------------------

def _stalled(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window, set before connecting so the window scale honours it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    return sock


async def viewers_main(port: int, readers: int, stalled: int) -> None:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws"
    latencies: list[int] = []
    done = asyncio.Event()

    async def read(ws: object) -> None:
        async for raw in ws:  # type: ignore[attr-defined]
            arrived = time.monotonic_ns()
            message = json.loads(raw)
            text = message.get("text", "")
            if text == "END":
                done.set()
                return
            if message.get("type") == "line" and text.startswith(MARK):
                latencies.append(arrived - int(text[1:].split(" ", 1)[0]))

    stuck = [_stalled(port) for _ in range(stalled)]
    sockets = [await connect(url, max_size=None, compression=None) for _ in range(readers)]
    tasks = [asyncio.create_task(read(ws)) for ws in sockets]
    print("READY", flush=True)
    await asyncio.wait(tasks, timeout=600)
    print(json.dumps({"latencies_ns": latencies}), flush=True)
    for ws in sockets:
        await ws.close()
    for s in stuck:
        s.close()


# -- daemon side ----------------------------------------------------------------------------

def _line(item: int, seq: int, text: str, final: bool) -> dict[str, object]:
    return {
        "type": "line", "event": "finalised" if final else "updated", "session": 1,
        "item_id": f"bench-{item}", "seq": seq, "track": "original", "channel": "",
        "speaker": None, "status": "final" if final else "partial", "text": text,
        "stable": 0, "start_ms": seq * 1000, "end_ms": seq * 1000 + 900, "engine": "bench",
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def scenario(readers: int, stalled: int, seconds: float) -> dict[str, object]:
    import psutil

    from captiond import config
    from captiond.feed import Feed
    from captiond.overlay.server import OverlayServer

    process = psutil.Process()
    cfg = config.parse("", env={}, overrides={"overlay.port": "0", "overlay.max_viewers": "1000"})
    feed = Feed()
    server = OverlayServer(cfg, feed, dict)
    await server.start()
    rss_start = process.memory_info().rss
    # Readers spread over VIEWER_PROCESSES processes (stalled ones go with the first), so the
    # viewers' own parsing does not dominate what is measured.
    children = []
    for k in range(VIEWER_PROCESSES):
        share = readers // VIEWER_PROCESSES + (1 if k < readers % VIEWER_PROCESSES else 0)
        if share == 0 and k > 0:
            continue
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--viewer-process", str(server.port), str(share),
            str(stalled if k == 0 else 0), stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        ready = await asyncio.wait_for(child.stdout.readline(), 60)
        if ready.strip() != b"READY":
            raise SystemExit(f"viewer process failed to start: {ready!r}")
        children.append(child)
    while server.viewers() < readers + stalled:
        await asyncio.sleep(0.05)

    if stalled:
        filler = "x" * PRIME_LINE_BYTES
        for i in range(PRIME_LINES):
            feed.publish(_line(10_000 + i, i, f"prime {filler}", True))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(PRIME_SETTLE_S)
    stalled_before = sum(1 for b in server.backlogs() if b > 0)

    publish_costs: list[float] = []
    cpu_start = process.cpu_times()
    rss_peak = process.memory_info().rss
    interval = 1 / PUBLISH_HZ
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        item, step = divmod(n, PARTIALS_PER_LINE)
        final = step == PARTIALS_PER_LINE - 1
        words = " ".join(["caption"] * (step + 1))
        message = _line(item, item, f"{MARK}{time.monotonic_ns()} {words}", final)
        t0 = time.perf_counter()
        feed.publish(message)
        publish_costs.append(time.perf_counter() - t0)
        n += 1
        if n % PUBLISH_HZ == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
    cpu_end = process.cpu_times()
    cpu_s = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    stalled_after = sum(1 for b in server.backlogs() if b > 0)
    feed.publish(_line(999_999, 0, "END", True))
    latencies_ms: list[float] = []
    for child in children:
        out, _ = await asyncio.wait_for(child.communicate(), 120)
        result = json.loads(out.decode().strip().splitlines()[-1])
        latencies_ms += [ns / 1e6 for ns in result["latencies_ns"]]
    await server.close()
    return {
        "viewers": readers + stalled, "readers": readers, "stalled": stalled,
        "published": n, "samples": len(latencies_ms),
        "expected": n * readers,
        "p50_ms": statistics.median(latencies_ms), "p99_ms": _pct(latencies_ms, 99),
        "max_ms": max(latencies_ms),
        "publish_p99_us": _pct(publish_costs, 99) * 1e6,
        "cpu_ms_per_update": cpu_s * 1000 / max(1, n),
        "stalled_blocked_start": stalled_before, "stalled_blocked_end": stalled_after,
        "rss_start_mib": rss_start / 2**20, "rss_peak_mib": rss_peak / 2**20,
    }


async def fan_out(scenarios: list[tuple[int, int]], seconds: float) -> list[dict[str, Any]]:
    print(f"overlay fan-out: {PUBLISH_HZ} updates/s for {seconds:g} s per scenario; "
          f"stalled viewers never read (buffers pre-filled with {PRIME_LINES} x "
          f"{PRIME_LINE_BYTES} B lines)")
    print(f"{'viewers':>7} {'stalled':>7} {'samples':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'publish p99 us':>14} {'CPU ms/update':>13} {'stalled held':>12} "
          f"{'RSS MiB':>13}")
    results = []
    for total, stalled in scenarios:
        r = await scenario(total - stalled, stalled, seconds)
        results.append(r)
        held = f"{r['stalled_blocked_start']}->{r['stalled_blocked_end']}"
        print(f"{r['viewers']:>7} {r['stalled']:>7} {r['samples']:>8} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['max_ms']:>7.2f} {r['publish_p99_us']:>14.1f} "
              f"{r['cpu_ms_per_update']:>13.2f} "
              f"{held:>12} {r['rss_start_mib']:>6.1f}->{r['rss_peak_mib']:.1f}", flush=True)
        if r["samples"] < r["expected"]:
            print(f"        note: {r['expected'] - r['samples']} updates were coalesced "
                  "(a reader was behind and got the newer state instead)")
    print("samples: updates received by all reading viewers; publish: time Feed.publish takes "
          "(what the pipeline pays); CPU ms/update: daemon CPU per update fanned out; "
          "stalled held: stalled viewers with a backlog at the start -> end of the measurement "
          "(dropped after SEND_STALL_S or when MAX_PENDING_KEYS lines behind); "
          f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return results


def main(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [tuple(int(x) for x in s.split(":")) for s in args.scenarios.split(",")]
    results = asyncio.run(fan_out([(a, b) for a, b in pairs], args.seconds))
    return {"publish_hz": PUBLISH_HZ, "seconds": args.seconds, "scenarios": results,
            "load": os.getloadavg()[0]}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--viewer-process":
        asyncio.run(viewers_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = kit.parser(__doc__, raw=True)
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement per scenario")
    parser.add_argument("--scenarios", default="1:0,50:10,200:10",
                        help="VIEWERS:STALLED,... (stalled are part of the viewers)")
    kit.run(main, parser.parse_args())
