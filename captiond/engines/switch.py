"""An engine that can be replaced while the session runs (live config reload of engine settings).

:class:`SwitchableEngine` runs the stream's engine on the session's audio. :meth:`switch`
hands it a new engine, already built (model loaded): the old engine's audio ends at the next
block, so it commits the utterance in flight and finishes its last decodes in the background,
while the new engine receives every following block. No block is dropped or given to both.

Both generations emit into the stream's one reconciler, which keeps ONE chain: the wrapper
renames the items of generation ``g > 0`` (``r{g}-`` prefix, so ids never collide) and links
the new generation's first item to the last item the old one opened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from captiond.audio.block import AudioBlock
from captiond.engines.base import Emit, Engine
from captiond.events import ItemCommitted, TranscriptEvent

log = logging.getLogger("captiond.engine")


class SwitchableEngine:
    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.generation = 0
        self._next: Engine | None = None
        self._gap_sink: Any = None
        self._drop_sink: Any = None
        self._switch = asyncio.Event()
        #: The last item opened (ItemCommitted) by any generation, under its emitted id.
        self._tail: str | None = None

    @property  # type: ignore[override]
    def name(self) -> str:
        """The running engine's name (an ``auto`` engine may change it as it falls back)."""
        return self.inner.name

    @name.setter
    def name(self, value: str) -> None:
        self.inner.name = value

    def __getattr__(self, attr: str) -> Any:
        # Anything else (figures, settings) is the running engine's.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def switch(self, new: Engine) -> None:
        """Continue with ``new`` from the next audio block on (call on the event loop)."""
        if new.sample_rate != self.sample_rate:
            raise ValueError(
                f"the new engine wants {new.sample_rate} Hz audio, the stream gives "
                f"{self.sample_rate} Hz (restart the daemon for this change)"
            )
        self._next = new
        self._switch.set()

    def stats(self) -> dict[str, Any]:
        return {**self.inner.stats(), "restarts": self.generation}

    def update_settings(self, params: Any, partial_interval_s: float,
                        word_timestamps: bool) -> None:
        self.inner.update_settings(params, partial_interval_s, word_timestamps)
        if self._next is not None:
            self._next.update_settings(params, partial_interval_s, word_timestamps)

    def set_gap_sink(self, fn: Any) -> None:
        self._gap_sink = fn
        self.inner.set_gap_sink(fn)

    def set_drop_sink(self, fn: Any) -> None:
        self._drop_sink = fn
        self.inner.set_drop_sink(fn)

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        source = audio.__aiter__()
        exhausted = False
        running: list[asyncio.Task[None]] = []
        while True:
            handed_over = asyncio.Event()

            async def segment(handed_over: asyncio.Event = handed_over) -> AsyncIterator[AudioBlock]:
                nonlocal exhausted
                try:
                    while not self._switch.is_set():
                        try:
                            block = await source.__anext__()
                        except StopAsyncIteration:
                            exhausted = True
                            return
                        yield block
                finally:
                    handed_over.set()

            engine = self.inner
            task = asyncio.create_task(
                engine.run(segment(), self._emitter(emit, self.generation)),
                name=f"engine-{self.generation}",
            )
            running.append(task)
            waiter = asyncio.create_task(handed_over.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if task.done() and not handed_over.is_set():
                break  # the engine ended on its own (or failed): nothing to hand over
            if exhausted or self._next is None:
                break
            # The old engine drains in the background; the new one takes the next block.
            self._switch.clear()
            self.inner, self._next = self._next, None
            if self._gap_sink is not None:
                self.inner.set_gap_sink(self._gap_sink)
            if self._drop_sink is not None:
                self.inner.set_drop_sink(self._drop_sink)
            self.generation += 1
            log.info("engine.restarted name=%s generation=%d", self.inner.name, self.generation)
        results = await asyncio.gather(*running, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _emitter(self, emit: Emit, generation: int) -> Emit:
        if generation == 0:

            def first(event: TranscriptEvent) -> None:
                if isinstance(event, ItemCommitted):
                    self._remember(event.item_id, 0)
                emit(event)

            return first
        prefix = f"r{generation}-"
        link: dict[str, str | None] = {}  # this generation's head item -> the chain's tail

        def renamed(event: TranscriptEvent) -> None:
            item = prefix + event.item_id
            changes: dict[str, Any] = {"item_id": item}
            if isinstance(event, ItemCommitted):
                if event.previous_item_id is None:
                    previous = link.setdefault(item, self._tail)
                else:
                    previous = prefix + event.previous_item_id
                changes["previous_item_id"] = previous
                self._remember(item, generation)
            emit(dataclasses.replace(event, **changes))  # type: ignore[type-var]

        return renamed

    def _remember(self, item: str, generation: int) -> None:
        # Only the current generation opens items (the old one got its last block before the
        # new one its first); a draining one's late extent updates must not move the tail.
        if generation == self.generation:
            self._tail = item
