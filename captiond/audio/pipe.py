"""``--source pipe:PATH``: raw PCM16 mono from a named pipe that writers may leave and rejoin.

For audio produced by another program (``parec --raw --format=s16le --rate=16000
--channels=1 > /run/user/1000/captiond.pcm``, a recorder that restarts, a test). The pipe is
treated like a capture device: when its writer goes away the device has *vanished*; the
source retries with back-off (:data:`RETRY_FIRST_S` doubling to :data:`RETRY_MAX_S`) and,
when a writer is back, resumes with the stream clock moved on by the time it was away, so
the pipeline records a gap and timestamps stay true to the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

from captiond.audio.block import AudioBlock, pcm16_to_float
from captiond.audio.sources import SOURCE_FORMS, SOURCE_KINDS
from captiond.errors import AudioError

log = logging.getLogger("captiond.audio")

#: Sample rate of the PCM on the pipe (what the engines want; no resampling needed).
PIPE_RATE = 16_000
#: Back-off while no writer is connected: first wait and the longest.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
#: How long to wait for data before polling again while a writer is connected.
POLL_S = 0.01


class PipeSource:
    """Blocks from a FIFO; a writer leaving is a lost device, a new writer brings it back."""

    def __init__(self, path: str, *, block_ms: int = 32) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise AudioError(f"{self.path} does not exist (create it with: mkfifo {self.path})")
        if not stat.S_ISFIFO(self.path.stat().st_mode):
            raise AudioError(f"{self.path} is not a named pipe (use --source file:PATH for files)")
        self.rate = PIPE_RATE
        self.bytes_per_block = max(1, self.rate * block_ms // 1000) * 2
        self.description = f"pipe:{self.path}"
        self.duration_s: float | None = None
        self.live = True  # its stream clock follows the wall clock
        self.position = 0
        self.reopens = 0
        self._closed = False

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        started = time.monotonic()
        backoff = RETRY_FIRST_S
        connected = False
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        leftover = b""
        try:
            while not self._closed:
                try:
                    data = os.read(fd, self.bytes_per_block)
                except BlockingIOError:
                    await asyncio.sleep(POLL_S)  # a writer is there, nothing written yet
                    continue
                except OSError as exc:
                    if exc.errno != errno.EINTR:
                        raise AudioError(f"cannot read {self.path}: {exc.strerror}") from exc
                    continue
                if not data:
                    # No writer: the "device" is gone (or not there yet).
                    if connected:
                        log.warning("audio.device_lost device=%r", str(self.path))
                        connected = False
                        backoff = RETRY_FIRST_S
                        leftover = b""
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    # Reopen: a FIFO at EOF stays at EOF for this descriptor's view of writers.
                    os.close(fd)
                    fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    continue
                if not connected:
                    connected = True
                    if self.position:
                        self.reopens += 1
                        log.info("audio.device_back device=%r", str(self.path))
                    # The stream clock follows the wall clock across the outage.
                    self.position = max(self.position, int((time.monotonic() - started) * self.rate))
                data = leftover + data
                usable = len(data) - len(data) % 2
                leftover = data[usable:]
                if not usable:
                    continue
                block = AudioBlock(pcm16_to_float(data[:usable], 1), self.rate, self.position)
                self.position = block.end
                yield block
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def close(self) -> None:
        self._closed = True


def _pipe_source(arg: str, *, block_ms: int = 32) -> PipeSource:
    if not arg:
        raise AudioError("pipe source needs a path: --source pipe:PATH (make it with mkfifo)")
    return PipeSource(arg, block_ms=block_ms)


SOURCE_KINDS.setdefault("pipe", _pipe_source)
SOURCE_FORMS.setdefault("pipe", "pipe:PATH")
