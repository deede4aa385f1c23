"""System audio: the monitor of a sound-server sink (what the computer plays), and any other
source of a PulseAudio-protocol server (PulseAudio itself, or PipeWire's ``pipewire-pulse``).

Mechanism (why): discovery runs ``pactl --format=json`` and capture runs ``parec`` (both from
``pulseaudio-utils``), reading raw float32 PCM from its stdout. Both speak the native
PulseAudio protocol, which ``pipewire-pulse`` implements, so one code path serves both
servers; it needs no Python binding to libpulse, no ALSA ``pulse`` plugin (PortAudio 19.7 has
no PulseAudio host API, so sounddevice cannot name a monitor), and a server that goes away
shows up as the child process ending, which is easy to retry. ``parec`` records at the
source's own sample spec (for example 48 kHz stereo), so the server does no conversion: we
downmix to mono here and the pipeline's soxr resampler converts the rate.

``--source`` grammar added here: ``system`` (monitor of the default sink), ``system:SINK``
(a sink's name, or a unique substring of its name or description), and ``mic:pulse:SOURCE``
(a capture source of the sound server, e.g. a microphone or a virtual source).

The parsing helpers (:func:`parse_sample_spec`, :func:`choose_sink`, :func:`choose_source`,
:func:`server_failure`) are pure; :class:`ServerSource` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from captiond.audio.block import AudioBlock
from captiond.errors import AudioError

log = logging.getLogger("captiond.audio.system")

#: How long a ``pactl`` query may take before the server counts as unresponsive.
PACTL_TIMEOUT_S = 5.0
#: Reopen back-off after the server or the source went away: first wait, and the longest.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
#: How long closing waits for ``parec`` to exit after SIGTERM before it is killed.
PAREC_STOP_TIMEOUT_S = 2.0
#: Channels captured at most; more (5.1, 7.1) are asked of the server as stereo.
MAX_CAPTURE_CHANNELS = 2
#: Bytes per sample of the float32 stream ``parec`` writes.
SAMPLE_BYTES = 4

NO_SERVER_FIX = (
    "start it: `systemctl --user start pipewire-pulse` (PipeWire) or `pulseaudio --start`; "
    "a daemon under another user needs PULSE_SERVER=unix:/run/user/UID/pulse/native"
)
NO_TOOLS_FIX = "install them: apt-get install pulseaudio-utils (works with PipeWire too)"


@dataclass(frozen=True)
class SampleSpec:
    channels: int
    rate: int


@dataclass(frozen=True)
class ServerDevice:
    """A sink (with the name of its monitor) or a capture source of the sound server."""

    name: str
    description: str
    spec: SampleSpec
    monitor: str = ""  # sinks: the monitor source to record from
    is_monitor: bool = False  # sources: the monitor of a sink


# -- pure helpers ------------------------------------------------------------------------

_SPEC_RE = re.compile(r"(\S+)\s+(\d+)ch\s+(\d+)Hz")


def parse_sample_spec(text: str) -> SampleSpec:
    """``"s16le 2ch 44100Hz"`` (as ``pactl`` prints it) -> SampleSpec(2, 44100)."""
    m = _SPEC_RE.search(text or "")
    if not m:
        raise AudioError(f"the sound server reported an unreadable sample spec {text!r}")
    return SampleSpec(channels=int(m.group(2)), rate=int(m.group(3)))


def server_failure(stderr: str) -> str:
    """The message (problem and fix) for a failed ``pactl``/``parec`` run, from its stderr."""
    low = stderr.lower()
    if "access denied" in low:
        return (
            "the sound server refused the connection: access denied (run captiond as the "
            "desktop user, or share the server's cookie/socket with PULSE_SERVER)"
        )
    if "connection refused" in low or "connection failure" in low or "no such file" in low:
        return f"no PulseAudio/PipeWire sound server is running ({NO_SERVER_FIX})"
    detail = " ".join(stderr.split())[:200] or "no message"
    return f"the sound server failed: {detail} ({NO_SERVER_FIX})"


def _parse_devices(text: str, kind: str) -> list[ServerDevice]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AudioError(
            f"pactl printed no JSON for its {kind} list (pactl from PulseAudio 15 or newer "
            f"is needed: {NO_TOOLS_FIX})"
        ) from exc
    out = []
    for row in rows:
        props = row.get("properties") or {}
        spec = parse_sample_spec(str(row.get("sample_specification", "")))
        if kind == "sinks":
            out.append(
                ServerDevice(
                    name=row["name"],
                    description=row.get("description") or row["name"],
                    spec=spec,
                    monitor=row.get("monitor_source") or f"{row['name']}.monitor",
                )
            )
        else:
            out.append(
                ServerDevice(
                    name=row["name"],
                    description=row.get("description") or row["name"],
                    spec=spec,
                    is_monitor=props.get("device.class") == "monitor",
                )
            )
    return out


def _choose(devices: list[ServerDevice], wanted: str, what: str, listing: str) -> ServerDevice:
    """The device named ``wanted`` exactly, else the one whose name/description contains it."""
    for dev in devices:
        if dev.name == wanted:
            return dev
    low = wanted.lower()
    matches = [d for d in devices if low in d.name.lower() or low in d.description.lower()]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(d.name for d in (matches or devices)) or "none"
    if matches:
        raise AudioError(f"'{wanted}' matches several {what}s ({names}); give the full name")
    raise AudioError(f"no {what} '{wanted}' on the sound server (available: {names}; {listing})")


def choose_sink(sinks: list[ServerDevice], default: str, wanted: str | None) -> ServerDevice:
    """The sink to monitor: ``wanted`` (see :func:`_choose`) or the server's default sink."""
    if wanted:
        return _choose(sinks, wanted, "sound output (sink)", "`captiond devices` lists them")
    if not sinks:
        raise AudioError(
            "the sound server has no output (sink) to monitor (is an audio device present? "
            "`pactl list sinks short` shows them)"
        )
    for sink in sinks:
        if sink.name == default:
            return sink
    return sinks[0]


def choose_source(sources: list[ServerDevice], wanted: str) -> ServerDevice:
    """A capture source of the sound server by name (or unique substring)."""
    return _choose(sources, wanted, "capture source", "`captiond devices` lists them")


def downmix(raw: bytes, channels: int) -> np.ndarray:
    """Interleaved float32 little-endian frames -> mono float32 (channels averaged)."""
    x = np.frombuffer(raw, dtype="<f4")
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32, copy=False)


# -- talking to the server ---------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AudioError(f"{name} is not installed, so system audio cannot be captured ({NO_TOOLS_FIX})")
    return path


def pactl_json(*args: str) -> Any:
    """Runs ``pactl --format=json ARGS`` and returns the decoded answer, or a clear AudioError."""
    cmd = [_tool("pactl"), "--format=json", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PACTL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AudioError(
            f"the sound server did not answer within {PACTL_TIMEOUT_S:.0f} s (is it hung? "
            "restart it: systemctl --user restart pipewire-pulse, or pulseaudio -k)"
        ) from exc
    if done.returncode != 0:
        raise AudioError(server_failure(done.stderr))
    return done.stdout


def server_info() -> dict[str, Any]:
    text = pactl_json("info")
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise AudioError(
            f"pactl printed no JSON (pactl from PulseAudio 15 or newer is needed: {NO_TOOLS_FIX})"
        ) from exc


def server_sinks() -> list[ServerDevice]:
    return _parse_devices(pactl_json("list", "sinks"), "sinks")


def server_sources() -> list[ServerDevice]:
    return _parse_devices(pactl_json("list", "sources"), "sources")


def resolve_monitor(sink: str | None) -> tuple[str, SampleSpec, str]:
    """(monitor source name, its sample spec, description) of the sink to capture."""
    default = server_info().get("default_sink_name", "")
    chosen = choose_sink(server_sinks(), default, sink)
    return chosen.monitor, chosen.spec, f"system:{chosen.name}"


def resolve_capture(source: str) -> tuple[str, SampleSpec, str]:
    chosen = choose_source(server_sources(), source)
    return chosen.name, chosen.spec, f"mic:pulse:{chosen.name}"


class ServerSource:
    """Records a sound-server source with ``parec`` at its own rate and channels; yields mono
    blocks at that rate. The first connection is checked at construction (so a missing server
    or sink is a clear error at start-up); later, when the server or the device goes away,
    capture reconnects with back-off and the time away becomes a gap on the stream clock."""

    def __init__(
        self, resolve: Callable[[], tuple[str, SampleSpec, str]], *, block_ms: int = 32
    ) -> None:
        self._resolve = resolve
        self.source_name, spec, self.description = resolve()
        self.channels = min(MAX_CAPTURE_CHANNELS, spec.channels)
        self.rate = spec.rate
        self.block_ms = block_ms
        self.block = max(1, self.rate * block_ms // 1000)
        self.duration_s: float | None = None
        self.position = 0
        self.reconnects = 0
        self._closed = False
        self._proc: asyncio.subprocess.Process | None = None

    async def _start(self) -> asyncio.subprocess.Process:
        cmd = [
            _tool("parec"),
            "--raw",
            f"--device={self.source_name}",
            "--format=float32le",
            f"--rate={self.rate}",
            f"--channels={self.channels}",
            f"--latency-msec={self.block_ms}",
            "--client-name=captiond",
            "--stream-name=captiond capture",
        ]
        return await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def _stopped_reason(self, proc: asyncio.subprocess.Process) -> str:
        """Why ``parec`` ended (its stderr, made readable)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), PAREC_STOP_TIMEOUT_S)
        err = b""
        if proc.stderr is not None:
            with contextlib.suppress(Exception):
                err = await asyncio.wait_for(proc.stderr.read(), PAREC_STOP_TIMEOUT_S)
        return server_failure(err.decode(errors="replace")) if err.strip() else "parec ended"

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        """Mono blocks on the stream clock. Its origin is the moment capture starts, so
        streams started together (``mic+system``) share one time line: the first block after
        each (re)connect is placed by the wall clock (a server may take a while to deliver its
        first audio, e.g. an idle null sink), later blocks follow on by sample count."""
        frame = SAMPLE_BYTES * self.channels
        want = self.block * frame
        started = time.monotonic()
        align = True
        proc = await self._start()
        if self._closed:
            await _stop(proc)
            return
        self._proc = proc
        while not self._closed:
            proc = self._proc
            assert proc is not None and proc.stdout is not None
            try:
                raw = await proc.stdout.readexactly(want)
            except asyncio.IncompleteReadError as exc:
                raw = exc.partial[: len(exc.partial) - len(exc.partial) % frame]
                if raw and not align:
                    yield self._block(raw)
                if self._closed:
                    return
                reason = await self._stopped_reason(proc)
                log.warning("audio.server_lost source=%r reason=%r", self.source_name, reason)
                await self._reconnect()
                align = True
                continue
            if align:
                # Where this audio sits on the wall clock since capture began; the time the
                # source was away (or slow to start) becomes a gap.
                arrived = int((time.monotonic() - started) * self.rate) - len(raw) // frame
                self.position = max(self.position, arrived)
                align = False
            yield self._block(raw)

    def _block(self, raw: bytes) -> AudioBlock:
        block = AudioBlock(downmix(raw, self.channels), self.rate, self.position)
        self.position = block.end
        return block

    async def _reconnect(self) -> None:
        """Waits with back-off until the source can be recorded again (or close())."""
        backoff = RECONNECT_FIRST_S
        while not self._closed:
            await asyncio.sleep(backoff)
            try:
                name, spec, description = await asyncio.to_thread(self._resolve)
            except AudioError as exc:
                log.warning("audio.reconnect_failed error=%r retry_s=%.1f", str(exc), backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            if spec.rate != self.rate or min(MAX_CAPTURE_CHANNELS, spec.channels) != self.channels:
                # Keep recording at the rate the stream clock runs at: the server converts.
                log.info("audio.server_spec_changed rate=%d channels=%d", spec.rate, spec.channels)
            if self._closed:
                return
            self.source_name, self.description = name, description
            proc = await self._start()
            if self._closed:  # close() ran while parec was starting: it owns no process
                await _stop(proc)
                return
            self._proc = proc
            self.reconnects += 1
            log.info("audio.server_back source=%r", name)
            return

    async def close(self) -> None:
        """Stops capture (idempotent): ``parec`` is terminated, then killed if it lingers."""
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is not None:
            await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Terminates a ``parec``, then kills it if it lingers."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), PAREC_STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def open_system(sink: str, *, block_ms: int = 32, **_: Any) -> ServerSource:
    """``--source system[:SINK]``: the monitor of the default sink or of ``SINK``."""
    return ServerSource(lambda: resolve_monitor(sink or None), block_ms=block_ms)


def open_server_capture(source: str, *, block_ms: int = 32) -> ServerSource:
    """``--source mic:pulse:SOURCE``: a capture source of the sound server."""
    if not source:
        raise AudioError("mic:pulse: needs a source name: --source mic:pulse:SOURCE")
    return ServerSource(lambda: resolve_capture(source), block_ms=block_ms)
