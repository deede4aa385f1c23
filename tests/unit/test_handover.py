"""Handing a stream from engine to engine (live reload, ``--engine auto``): every block goes to
exactly one engine, nothing is queued on the way, and the lines stay one chain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from captiond.audio.block import AudioBlock
from captiond.engines.auto import AutoEngine
from captiond.engines.base import Emit
from captiond.engines.handover import Chain, Relay
from captiond.engines.localcore import Final
from captiond.events import ItemCommitted, ItemCompleted, TranscriptEvent

pytestmark = pytest.mark.timeout(60)
RATE = 24_000
BLOCK = 768  # 32 ms


class Upstream:
    """The pipeline's side: blocks handed out on demand, counting how far ahead it was read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.produced = 0

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        for i in range(self.n):
            self.produced += 1
            yield AudioBlock(np.full(BLOCK, i / self.n, np.float32), RATE, i * BLOCK)


class Recording:
    """An engine that keeps the blocks it got (slowly, when asked) and opens one item per run."""

    name = "fake"
    sample_rate = RATE

    def __init__(self, upstream: Upstream | None = None, delay_s: float = 0.0) -> None:
        self.got: list[int] = []
        self.upstream = upstream
        self.delay_s = delay_s
        self.lead = 0  # how many blocks the upstream had produced beyond what this engine took

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        emit(ItemCommitted("a", None, 0, 0))
        async for block in audio:
            self.got.append(block.start // BLOCK)
            if self.upstream is not None:
                taken = block.start // BLOCK + 1
                self.lead = max(self.lead, self.upstream.produced - taken)
            await asyncio.sleep(self.delay_s)
        emit(ItemCompleted("a", "text"))

    def stats(self) -> dict[str, Any]:
        return {"engine": self.name}

    def update_settings(self, params: Any, partial_interval_s: float,
                        word_timestamps: bool) -> None:
        pass

    def set_gap_sink(self, fn: Any) -> None:
        pass

    def set_drop_sink(self, fn: Any) -> None:
        pass


@pytest.mark.asyncio
async def test_each_block_goes_to_exactly_one_engine_in_order() -> None:
    """The first engine reads until it is told to stop, the second continues with the next
    block: together they got every block once, in order."""
    upstream = Upstream(40)
    relay = Relay(upstream.blocks())
    first, second = Recording(), Recording()
    task1, handed = await relay.start(first, lambda e: None, lambda: len(first.got) >= 15)
    assert handed and not relay.exhausted
    task2, handed = await relay.start(second, lambda e: None, lambda: False)
    await asyncio.gather(task1, task2)
    assert relay.exhausted
    assert first.got == list(range(15)) and second.got == list(range(15, 40))


@pytest.mark.asyncio
async def test_an_engine_at_another_rate_gets_one_resample_from_the_capture() -> None:
    """A 16 kHz engine fed 24 kHz blocks that were resampled from 16 kHz capture gets the
    capture audio itself (no 16 -> 24 -> 16 kHz round trip)."""
    from captiond.audio.resample import Resampler

    capture = [AudioBlock(np.sin(np.arange(512) / 7 + i).astype(np.float32), 16_000, i * 512)
               for i in range(10)]
    up = Resampler(RATE)

    async def upstream() -> AsyncIterator[AudioBlock]:
        for block in capture:
            yield up(block)
        tail = up.flush()
        if tail is not None:
            yield tail

    got: list[AudioBlock] = []

    class Local(Recording):
        sample_rate = 16_000

        async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
            async for block in audio:
                got.append(block)

    relay = Relay(upstream())
    task, _ = await relay.start(Local(), lambda e: None, lambda: False, rate=16_000)
    await task
    assert [b.start for b in got] == [b.start for b in capture]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(got, capture, strict=True))


@pytest.mark.asyncio
async def test_auto_engine_reads_no_further_than_its_engine() -> None:
    """``--engine auto`` has no queue of its own: a slow engine is at most one block behind
    what the stream gave out, so the pipeline's bounded queue (dropping for live sources,
    waiting for a pipe or --fast) is the only place audio waits."""
    upstream = Upstream(30)
    engine = Recording(upstream, delay_s=0.005)
    auto = AutoEngine(lambda prefix: engine, lambda prefix: engine,  # type: ignore[arg-type, return-value]
                      decode=lambda s, o: Final("", ()), probe_s=3600.0, url="ws://127.0.0.1:9/")
    events: list[TranscriptEvent] = []
    await auto.run(upstream.blocks(), events.append)
    assert engine.got == list(range(30))
    assert engine.lead <= 1


def test_the_next_generation_joins_the_chain_at_the_tail() -> None:
    """Generation 1's first item (no predecessor of its own) is linked to the last item
    generation 0 opened, under a prefix; a late extent update of generation 0 does not move
    the tail."""
    chain = Chain()
    out: list[TranscriptEvent] = []
    old = chain.emitter(out.append)
    old(ItemCommitted("1", None, 0, 0))
    old(ItemCommitted("2", "1", 10, 10))
    chain.next_generation()
    new = chain.emitter(out.append, prefix="r1-")
    old(ItemCommitted("2", "1", 10, 20))  # the old engine's last extent, after the switch
    new(ItemCommitted("1", None, 30, 30))
    new(ItemCommitted("2", "1", 40, 40))
    commits = [(e.item_id, e.previous_item_id) for e in out if isinstance(e, ItemCommitted)]
    assert commits == [("1", None), ("2", "1"), ("2", "1"), ("r1-1", "2"), ("r1-2", "r1-1")]
    assert chain.tail == "r1-2"
