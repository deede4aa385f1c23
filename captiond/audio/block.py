"""Audio as it moves through captiond: mono float32 blocks placed on the session's stream clock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """``samples`` (mono float32 in [-1, 1]) at ``rate``; ``start`` is the index of the first
    sample on the session stream, so ``start_ms`` is where this audio sits in the recording.
    A block whose ``start`` is past the previous block's end follows a gap (device lost).
    ``origin`` is the capture block this one was resampled from (None: it is the capture),
    so a consumer at a third rate resamples from the source once, not from a copy."""

    samples: np.ndarray
    rate: int
    start: int
    origin: AudioBlock | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.samples)

    @property
    def start_ms(self) -> int:
        return self.start * 1000 // self.rate

    @property
    def end_ms(self) -> int:
        return self.end * 1000 // self.rate

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate


def pcm16_to_float(data: bytes, channels: int = 1) -> np.ndarray:
    """Interleaved little-endian PCM16 to mono float32 (channels averaged)."""
    pcm = np.frombuffer(data, dtype="<i2")
    usable = len(pcm) - len(pcm) % channels
    x = pcm[:usable].astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x


def float_to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()
