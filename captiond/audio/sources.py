"""Audio sources: microphone (sounddevice), file (PyAV/FFmpeg), raw PCM16 on stdin.

A source yields :class:`~captiond.audio.block.AudioBlock` values (mono float32 at the
source's own rate) on the session's stream clock. Capture never blocks on the pipeline: the
sounddevice callback hands frames to the loop with ``call_soon_threadsafe`` into a bounded
queue; what does not fit is counted and shows up as a gap in the stream clock.

A source is *live* (:attr:`Source.live`) when its audio happens in real time and cannot wait:
the microphone, a system monitor, a file paced in real time, stdin declared live
(``audio.stdin_live``). Only a live source may lose audio when the engine falls behind; a
pipe on stdin or a file read ``--fast`` waits for the engine instead (back-pressure).

``--source`` grammar: ``mic``, ``mic:DEVICE`` (index or name substring), ``mic:pulse:SOURCE``
(a sound-server source), ``file:PATH``, ``stdin``, ``system[:SINK]`` (the monitor of a sink,
see :mod:`captiond.audio.system`). Other modules may add kinds through :data:`SOURCE_KINDS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from captiond.audio.block import AudioBlock, pcm16_to_float
from captiond.errors import AudioError, DeviceLost

log = logging.getLogger("captiond.audio")

#: Blocks queued between the capture thread and the loop before new audio is dropped.
CAPTURE_QUEUE_BLOCKS = 1_000
#: Device reopen back-off after it vanished: first wait, and the longest.
REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 10.0
#: File decoding reads ahead at most this much audio of a paced file.
FILE_READ_AHEAD_S = 2.0


class Source(Protocol):
    #: Shown in ``sessions`` and stored with the session.
    description: str
    #: Set by the source when it knows the recording ends (files).
    duration_s: float | None
    # Optional ``live: bool``: real-time audio that cannot wait (see the module docstring);
    # a source without it is live.

    def blocks(self) -> AsyncIterator[AudioBlock]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


SOURCE_KINDS: dict[str, Callable[..., Source]] = {}
#: How ``--source`` spells each kind, for error messages (a module adding a kind adds its form).
SOURCE_FORMS: dict[str, str] = {"mic": "mic[:DEVICE], mic:pulse:SOURCE", "file": "file:PATH", "stdin": "stdin",
                                "system": "system[:SINK]"}
#: The sources to try when no microphone can be opened.
OTHER_SOURCES_HINT = ("or caption something else: --source file:RECORDING, --source stdin "
                      "(raw PCM16 on standard input) or --source system (what the speakers "
                      "play)")
#: ``mic:pulse:SOURCE`` records a capture source of the PulseAudio/PipeWire server.
PULSE_MIC_PREFIX = "pulse:"


def _open_system(arg: str, **kwargs: Any) -> Source:
    """``system[:SINK]``: imported on use, it needs the sound-server tools."""
    from captiond.audio.system import open_system

    return open_system(arg, **kwargs)


SOURCE_KINDS["system"] = _open_system


def parse_source(text: str) -> SourceSpec:
    kind, _, arg = text.strip().partition(":")
    kind = kind.lower()
    if kind not in ("mic", "file", "stdin", *SOURCE_KINDS):
        raise AudioError(f"unknown audio source '{text}' (use one of: {source_forms()})")
    if kind == "file" and not arg:
        raise AudioError("file source needs a path: --source file:PATH")
    return SourceSpec(kind, arg)


def source_forms() -> str:
    """Every ``--source`` form, joined for an error message."""
    kinds = ["mic", "file", "stdin", *SOURCE_KINDS]
    forms = ", ".join(SOURCE_FORMS.get(kind, kind) for kind in dict.fromkeys(kinds))
    return f"{forms}, or two joined with +, e.g. mic+system for a two-sided call"


def open_source(
    spec: SourceSpec | str,
    *,
    realtime: bool = True,
    rate: int = 16_000,
    channels: int = 1,
    block_ms: int = 32,
    stdin_live: bool = False,
) -> Source:
    """``stdin_live``: raw PCM on stdin is a live capture (may drop audio when the engine
    falls behind) rather than a pipe that can wait."""
    if isinstance(spec, str):
        spec = parse_source(spec)
    if spec.kind == "file":
        return FileSource(Path(spec.arg), realtime=realtime, block_ms=block_ms)
    if spec.kind == "stdin":
        return StdinSource(rate=rate, channels=channels, block_ms=block_ms, live=stdin_live)
    if spec.kind == "mic" and spec.arg.startswith(PULSE_MIC_PREFIX):
        from captiond.audio.system import open_server_capture

        return open_server_capture(spec.arg[len(PULSE_MIC_PREFIX) :], block_ms=block_ms)
    if spec.kind == "mic":
        return MicSource(spec.arg or None, block_ms=block_ms)
    return SOURCE_KINDS[spec.kind](spec.arg, block_ms=block_ms)


# -- files -------------------------------------------------------------------------------


def probe_file(path: Path) -> tuple[int, float | None]:
    """(sample rate, duration in seconds) of the first audio stream, or a clear AudioError."""
    import av

    if not path.exists():
        raise AudioError(f"audio file {path} does not exist (check the path)")
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(
                    f"{path} has no audio stream (FFmpeg reads it as "
                    f"{container.format.long_name or container.format.name}: a video without "
                    f"sound, or not a recording at all?); {RECORDING_HINT}"
                )
            stream = streams[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            return int(stream.rate or stream.codec_context.sample_rate), duration
    except AudioError:
        raise
    except Exception as exc:  # av.error.* for undecodable input
        raise AudioError(_undecodable(path, exc)) from exc


def _undecodable(path: Path, exc: Exception) -> str:
    """The error for a file FFmpeg cannot open as audio: the file, FFmpeg's reason without
    its errno, and what to give instead."""
    reason = getattr(exc, "strerror", None) or str(exc)
    reason = reason[:1].lower() + reason[1:]
    return (f"cannot decode {path}: it is not audio FFmpeg (PyAV) can decode ({reason}); "
            f"{RECORDING_HINT}")


#: What to give instead of a file FFmpeg cannot decode as audio.
RECORDING_HINT = ("give a recording such as .wav, .flac, .mp3, .ogg, .opus, .m4a, .mp4 or .webm, "
                  "or check the path")
#: Damaged packets skipped in one file before decoding gives up on the rest of it.
MAX_BAD_PACKETS = 1_000
#: Decoded audio this much shorter than the file says it lasts counts as cut off (s), also
#: as a share of the duration (containers round their durations).
SHORT_DECODE_S = 0.5
SHORT_DECODE_SHARE = 0.02
#: A jump in frame timestamps longer than this is audio lost to damage (s).
HOLE_MIN_S = 0.1
#: Longest hole filled with silence to keep the stream clock on the file's (s).
HOLE_FILL_MAX_S = 600.0


def _frame_time(frame: Any) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{int(seconds * 10) % 10}"


def decode_file_chunks(path: Path, rate: int, duration_s: float | None = None) -> Any:
    """Mono float32 chunks at the file's own rate (channels averaged, no rate change).

    A damaged file is decoded as far as it can be: packets the decoder refuses are skipped and
    audio the demuxer lost is filled with silence, so the stream clock stays the file's
    (``audio.file_damaged`` names the time), and when the decoded audio ends well before the
    ``duration_s`` the container states, ``audio.file_cut_off`` names where decoding stopped.
    What was decoded is kept either way.
    """
    import av

    decoded = 0
    bad = 0
    origin: float | None = None  # time of the first frame: the file's clock starts there
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    bad += 1
                    if bad == 1:
                        log.warning(
                            "audio.file_damaged path=%s at=%s (a damaged part is skipped; "
                            "decoding goes on after it)", path, _clock(decoded / rate),
                        )
                    if bad >= MAX_BAD_PACKETS:
                        break
                    continue
                for frame in frames:
                    at = _frame_time(frame)
                    if at is not None:
                        if origin is None:
                            origin = at
                        missing = at - origin - decoded / rate
                        if missing > HOLE_MIN_S:
                            # Damaged pages were dropped by the demuxer: say where, and keep
                            # the stream clock on the file's by filling the hole with silence.
                            log.warning(
                                "audio.file_damaged path=%s at=%s missing_s=%.2f (a damaged "
                                "part could not be decoded; decoding goes on after it)",
                                path, _clock(decoded / rate), missing,
                            )
                            bad += 1
                            fill = int(min(missing, HOLE_FILL_MAX_S) * rate)
                            decoded += fill
                            yield np.zeros(fill, dtype=np.float32)
                    for out in resampler.resample(frame):
                        chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                        decoded += len(chunk)
                        yield chunk
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                decoded += len(chunk)
                yield chunk
    except Exception as exc:
        if not decoded:
            raise AudioError(_undecodable(path, exc)) from exc
        # The caller keeps what came before the damage; the error says where it stopped.
        log.warning("audio.file_cut_off path=%s stopped_at=%s error=%r (the rest of the file "
                    "cannot be decoded; what came before is kept)", path, _clock(decoded / rate),
                    str(exc))
        raise AudioError(
            f"cannot decode {path} after {_clock(decoded / rate)}: {exc} (the file is damaged "
            "from there on; the audio before it was captioned and stored)"
        ) from exc
    decoded_s = decoded / rate
    if duration_s is not None and duration_s - decoded_s > max(
        SHORT_DECODE_S, duration_s * SHORT_DECODE_SHARE
    ):
        log.warning(
            "audio.file_cut_off path=%s stopped_at=%s duration=%s damaged_parts=%d (the file "
            "is damaged or truncated: decoding stopped early; what came before is kept)",
            path, _clock(decoded_s), _clock(duration_s), bad,
        )
    elif bad:
        log.warning("audio.file_damaged path=%s damaged_parts=%d decoded=%s", path, bad,
                    _clock(decoded_s))


class FileSource:
    """A recording, paced in real time (as if it were live) or as fast as it is consumed."""

    def __init__(self, path: Path, *, realtime: bool = True, block_ms: int = 32) -> None:
        self.path = path
        self.rate, self.duration_s = probe_file(path)
        self.realtime = realtime
        self.live = realtime
        self.block = max(1, self.rate * block_ms // 1000)
        self.description = f"file:{path}"
        self._closed = False
        self.position = 0
        #: Monotonic time at which sample 0 "played" (paced mode): the stream's wall clock.
        self.started_at: float | None = None
        #: Why decoding stopped before the end of the file (set once the rest is unreadable).
        self.error: AudioError | None = None

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        loop = asyncio.get_running_loop()
        chunks = decode_file_chunks(self.path, self.rate, self.duration_s)
        pending = np.zeros(0, dtype=np.float32)
        t0 = self.started_at = loop.time()
        done = False
        while not self._closed:
            while len(pending) < self.block and not done:
                try:
                    chunk = await asyncio.to_thread(next, chunks, None)
                except AudioError as exc:
                    if not self.position and not len(pending):
                        raise
                    # Damaged from here on: what was decoded goes out first; the session
                    # raises the error once it is transcribed and stored.
                    self.error = exc
                    chunk = None
                if chunk is None:
                    done = True
                else:
                    pending = np.concatenate([pending, chunk])
            if not len(pending):
                return
            take = pending[: self.block]
            pending = pending[self.block :]
            block = AudioBlock(take, self.rate, self.position)
            self.position = block.end
            if self.realtime:
                delay = t0 + block.end / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield block

    async def close(self) -> None:
        self._closed = True


# -- stdin -------------------------------------------------------------------------------


class StdinSource:
    """Raw interleaved PCM16 little-endian on standard input, at ``rate``.

    Reads wait on the event loop (never in a worker thread), so a writer that keeps the pipe
    open but silent does not keep a stopping daemon alive: :meth:`close` ends the wait."""

    duration_s: float | None = None

    def __init__(self, *, rate: int, channels: int = 1, block_ms: int = 32,
                 live: bool = False, fd: int | None = None) -> None:
        self.rate = rate
        self.channels = channels
        self.bytes_per_block = max(1, rate * block_ms // 1000) * 2 * channels
        self.description = f"stdin:{rate}Hz"
        self.live = live
        self.position = 0
        self.fd = fd
        self._closed = False
        self._wake: asyncio.Future[bool] | None = None

    async def _read(self, loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
        """The next bytes (b"" at end of input or once closed)."""
        fut: asyncio.Future[bool] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(True)

        try:
            loop.add_reader(fd, ready)
        except (PermissionError, ValueError, NotImplementedError):
            # A regular file on stdin (`< talk.pcm`): reading it never waits for a writer.
            return await asyncio.to_thread(os.read, fd, self.bytes_per_block)
        self._wake = fut
        try:
            if not await fut:
                return b""
        finally:
            loop.remove_reader(fd)
            self._wake = None
        try:
            return os.read(fd, self.bytes_per_block)  # readable: returns without waiting
        except BlockingIOError:
            return await self._read(loop, fd)

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        loop = asyncio.get_running_loop()
        fd = self.fd if self.fd is not None else sys.stdin.fileno()
        leftover = b""
        frame = 2 * self.channels
        while not self._closed:
            data = await self._read(loop, fd)
            if not data:
                return
            data = leftover + data
            usable = len(data) - len(data) % frame
            leftover = data[usable:]
            if not usable:
                continue
            samples = pcm16_to_float(data[:usable], self.channels)
            block = AudioBlock(samples, self.rate, self.position)
            self.position = block.end
            yield block

    async def close(self) -> None:
        self._closed = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(False)


# -- microphone --------------------------------------------------------------------------


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:
        raise AudioError(
            "the PortAudio library is missing, so no microphone can be opened "
            f"(install it: apt-get install libportaudio2; {OTHER_SOURCES_HINT})"
        ) from exc
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """Input devices PortAudio sees: index, name, channels, default rate, default flag."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as exc:  # PortAudioError
        raise AudioError(f"cannot list audio devices: {exc}") from exc
    out = []
    for index, dev in enumerate(devices):
        if dev["max_input_channels"] > 0:
            out.append(
                {
                    "index": index,
                    "name": dev["name"],
                    "channels": dev["max_input_channels"],
                    "rate": int(dev["default_samplerate"]),
                    "default": index == default_in,
                }
            )
    return out


def find_input_device(wanted: str | None) -> dict[str, Any]:
    devices = input_devices()
    if not devices:
        raise AudioError(
            "no audio input device found (plug in a microphone, or check that PulseAudio/"
            f"PipeWire is running; `captiond devices` lists what is there; {OTHER_SOURCES_HINT})"
        )
    if wanted is None or wanted == "":
        for dev in devices:
            if dev["default"]:
                return dev
        return devices[0]
    if wanted.isdigit():
        for dev in devices:
            if dev["index"] == int(wanted):
                return dev
    else:
        matches = [d for d in devices if wanted.lower() in d["name"].lower()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = "; ".join(f"{d['index']}: {d['name']}" for d in matches)
            raise AudioError(f"'{wanted}' matches several input devices ({names}); use its number")
    names = "; ".join(f"{d['index']}: {d['name']}" for d in devices)
    raise AudioError(f"no input device '{wanted}' (available: {names})")


class MicSource:
    """A capture device. If it vanishes, capture is reopened with back-off and the time it
    was away becomes a gap in the stream clock (blocks resume at the right place)."""

    duration_s: float | None = None
    live = True

    def __init__(self, device: str | None, *, block_ms: int = 32) -> None:
        self.wanted = device
        dev = find_input_device(device)
        self.device = dev
        self.rate = dev["rate"]
        self.block = max(1, self.rate * block_ms // 1000)
        self.description = f"mic:{dev['name']}"
        self.position = 0
        self.dropped_blocks = 0
        self.reopens = 0
        self._closed = False
        self._stream: Any = None
        self._lost = 0

    def _open(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        sd = _sounddevice()

        def put(item: Any) -> None:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                # The loop fell behind: the lost audio becomes a gap on the stream clock.
                self.dropped_blocks += 1
                if isinstance(item, tuple):
                    self._lost += len(item[1])

        def callback(indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
            # PortAudio's thread: copy and hand over, nothing else.
            loop.call_soon_threadsafe(put, (time.monotonic(), indata.mean(axis=1).copy()))

        def finished() -> None:
            if not self._closed:
                loop.call_soon_threadsafe(put, DeviceLost(f"input device {self.device['name']} stopped"))

        dev = find_input_device(self.wanted)
        self.device = dev
        try:
            self._stream = sd.InputStream(
                device=dev["index"],
                channels=min(2, dev["channels"]),
                samplerate=self.rate,
                blocksize=self.block,
                dtype="float32",
                callback=callback,
                finished_callback=finished,
            )
            self._stream.start()
        except Exception as exc:
            raise DeviceLost(f"cannot open input device {dev['name']}: {exc}") from exc

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(CAPTURE_QUEUE_BLOCKS)
        self._open(loop, queue)
        started = time.monotonic()
        backoff = REOPEN_FIRST_S
        while not self._closed:
            item = await queue.get()
            if isinstance(item, DeviceLost):
                log.warning("audio.device_lost device=%r", self.device["name"])
                await self._close_stream()
                while not self._closed:
                    await asyncio.sleep(backoff)
                    try:
                        self._open(loop, queue)
                        self.reopens += 1
                        log.info("audio.device_back device=%r", self.device["name"])
                        backoff = REOPEN_FIRST_S
                        break
                    except (DeviceLost, AudioError) as exc:
                        log.warning("audio.reopen_failed error=%r retry_s=%.1f", str(exc), backoff)
                        backoff = min(backoff * 2, REOPEN_MAX_S)
                # The stream clock follows the wall clock across the outage.
                self.position = max(self.position, int((time.monotonic() - started) * self.rate))
                continue
            _when, samples = item
            self.position += self._lost
            self._lost = 0
            block = AudioBlock(samples, self.rate, self.position)
            self.position = block.end
            yield block

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await asyncio.to_thread(stream.close)
            except Exception:  # noqa: BLE001 - a vanished device may fail to close
                pass

    async def close(self) -> None:
        self._closed = True
        await self._close_stream()


