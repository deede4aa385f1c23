"""Speech streams for engine tests: FLEURS clips at 24 kHz with silence between, paced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np

from captiond.audio.block import AudioBlock
from captiond.audio.sources import decode_file_chunks

RATE = 24_000


def load(path: Path, rate: int = RATE) -> np.ndarray:
    return np.concatenate(list(decode_file_chunks(path, rate))).astype(np.float32)


def conversation(clips: Sequence[Path], *, pause_s: float = 1.5, rate: int = RATE) -> np.ndarray:
    """The clips one after another, ``pause_s`` of silence before, between and after."""
    gap = np.zeros(int(pause_s * rate), dtype=np.float32)
    parts = [gap]
    for clip in clips:
        parts += [load(clip, rate), gap]
    return np.concatenate(parts)


async def stream(samples: np.ndarray, *, speed: float = 1.0, block_ms: int = 32,
                 rate: int = RATE, counter: list[int] | None = None) -> AsyncIterator[AudioBlock]:
    """Blocks of ``block_ms`` paced at ``speed`` x real time (0: as fast as consumed).
    ``counter[0]`` counts the samples handed out."""
    loop = asyncio.get_running_loop()
    step = rate * block_ms // 1000
    t0 = loop.time()
    for pos in range(0, len(samples), step):
        block = AudioBlock(samples[pos : pos + step], rate, pos)
        if speed > 0:
            delay = t0 + block.end / rate / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        if counter is not None:
            counter[0] += len(block.samples)
        yield block


class ArraySource:
    """A pipeline source (``captiond.audio.sources.Source``) over samples, paced like a device."""

    def __init__(self, samples: np.ndarray, *, speed: float = 1.0, rate: int = RATE) -> None:
        self.samples = samples
        self.speed = speed
        self.rate = rate
        self.description = "test:array"
        self.handed_out = [0]
        self._closed = False

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        async for block in stream(self.samples, speed=self.speed, rate=self.rate,
                                  counter=self.handed_out):
            if self._closed:
                return
            yield block

    async def close(self) -> None:
        self._closed = True
