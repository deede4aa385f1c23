"""Streaming sample-rate conversion with a proper anti-aliasing filter (libsoxr, via soxr).

One :class:`Resampler` per consumer and stream: it keeps filter state across blocks, so block
boundaries leave no clicks, and it keeps the output on the stream clock at the new rate.
"""

from __future__ import annotations

import numpy as np
import soxr

from captiond.audio.block import AudioBlock


class Resampler:
    def __init__(self, out_rate: int, quality: str = "HQ") -> None:
        self.out_rate = out_rate
        self.quality = quality
        self._in_rate: int | None = None
        self._stream: soxr.ResampleStream | None = None
        self._next_in: int | None = None  # input sample expected next (to spot gaps)
        self._out_pos = 0

    def __call__(self, block: AudioBlock) -> AudioBlock:
        """The block at ``out_rate``; after a gap the output clock jumps with the input."""
        if block.rate == self.out_rate:
            self._next_in = block.end
            return block
        if self._in_rate != block.rate or self._stream is None:
            self._in_rate = block.rate
            self._stream = soxr.ResampleStream(
                block.rate, self.out_rate, 1, dtype="float32", quality=self.quality
            )
            self._out_pos = block.start * self.out_rate // block.rate
        elif self._next_in is not None and block.start != self._next_in:
            # A gap: restart the filter and the output clock at the new place.
            self._stream = soxr.ResampleStream(
                block.rate, self.out_rate, 1, dtype="float32", quality=self.quality
            )
            self._out_pos = block.start * self.out_rate // block.rate
        self._next_in = block.end
        out = self._stream.resample_chunk(np.ascontiguousarray(block.samples, dtype=np.float32))
        result = AudioBlock(out, self.out_rate, self._out_pos,
                            block.origin if block.origin is not None else block)
        self._out_pos += len(out)
        return result

    def flush(self) -> AudioBlock | None:
        """What the filter still holds, at the end of the stream."""
        if self._stream is None:
            return None
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream = None
        if not len(out):
            return None
        # Its capture block is the (empty) end of the input: a consumer that resamples from
        # the capture sees the stream go on without a jump.
        end = AudioBlock(np.zeros(0, np.float32), self._in_rate or self.out_rate, self._next_in or 0)
        result = AudioBlock(out, self.out_rate, self._out_pos, end)
        self._out_pos += len(out)
        return result
