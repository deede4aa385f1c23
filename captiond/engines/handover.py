"""Handing one stream from engine to engine, with the lines of all of them in one chain.

Two wrappers run a succession of engines on one stream: :class:`~captiond.engines.switch.
SwitchableEngine` (a live reload builds a new engine) and :class:`~captiond.engines.auto.
AutoEngine` (OpenAI while the service answers, the local engine while not). Both swap and
re-link the same way, here:

- :class:`Relay` hands the stream's blocks to one engine at a time. Each engine reads a
  *segment* of the stream that ends when the wrapper asks (checked before every block), so
  the next engine starts with the next block: no block is lost or given to two engines. The
  engine pulls from the stream itself: there is no queue here, the pipeline's bounded queue
  (``audio.queue_s``, dropping for live sources, back-pressure otherwise) is the only one.
  An engine at another rate than the stream gets one resample, from the capture block.
- :class:`Chain` keeps ONE chain of items in the stream's reconciler: the first item of each
  later engine is linked to the last item opened before it (and item ids may be given a
  prefix so that generations never collide).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from captiond.audio.block import AudioBlock
from captiond.audio.resample import Resampler
from captiond.engines.base import Emit, Engine
from captiond.events import ItemCommitted, TranscriptEvent


class Relay:
    """One stream of blocks, handed to one engine after another."""

    def __init__(self, audio: AsyncIterator[AudioBlock]) -> None:
        self._source = audio.__aiter__()
        #: The stream has ended (no more engines will get audio).
        self.exhausted = False

    async def start(
        self, engine: Engine, emit: Emit, stop: Callable[[], bool], *, rate: int | None = None,
        name: str = "engine",
    ) -> tuple[asyncio.Task[None], bool]:
        """Run ``engine`` on the stream until ``stop()`` says so (asked before each block) or
        the stream ends. Returns its task (still finishing its last results) once it has been
        handed its last block -- or once it ended on its own (a failure): then ``False``."""
        handed_over = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            engine.run(self._segment(stop, handed_over, rate), emit), name=name)
        waiter = asyncio.ensure_future(handed_over.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return task, handed_over.is_set()

    async def _segment(self, stop: Callable[[], bool], handed_over: asyncio.Event,
                       rate: int | None) -> AsyncIterator[AudioBlock]:
        resample = Resampler(rate) if rate is not None else None
        try:
            while not stop():
                try:
                    block = await self._source.__anext__()
                except StopAsyncIteration:
                    self.exhausted = True
                    break
                if resample is None or block.rate == rate:
                    yield block
                else:
                    # From the capture block when the pipeline kept it: one resample, not two.
                    out = resample(block.origin if block.origin is not None else block)
                    if len(out.samples):
                        yield out
            tail = resample.flush() if resample is not None else None
            if tail is not None:
                yield tail
        finally:
            handed_over.set()


class Chain:
    """Keeps the items of successive engines (generations) in one chain."""

    def __init__(self) -> None:
        self.generation = 0
        #: The last item opened by the current generation, under its emitted id.
        self.tail: str | None = None

    def next_generation(self) -> int:
        """From now on only the new generation's items move the tail."""
        self.generation += 1
        return self.generation

    def emitter(self, emit: Emit, *, prefix: str = "") -> Emit:
        """``emit`` for the current generation: ids get ``prefix``; its first item's missing
        predecessor becomes the chain's tail at the moment it opens."""
        generation = self.generation
        link: dict[str, str | None] = {}  # this generation's head item -> the tail it joins
        opened: set[str] = set()

        def chained(event: TranscriptEvent) -> None:
            item = prefix + event.item_id
            changes: dict[str, Any] = {"item_id": item} if prefix else {}
            if isinstance(event, ItemCommitted):
                if event.previous_item_id is None:
                    previous = link.setdefault(item, self.tail)
                else:
                    previous = prefix + event.previous_item_id
                if previous != event.previous_item_id:
                    changes["previous_item_id"] = previous
                # Only the current generation opens items (the old one got its last block
                # before the new one its first): a draining one's late extent updates must
                # not move the tail.
                if generation == self.generation and item not in opened:
                    opened.add(item)
                    self.tail = item
            emit(dataclasses.replace(event, **changes) if changes else event)  # type: ignore[type-var]

        return chained
