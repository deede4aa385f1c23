"""An engine that can be replaced while the session runs (live config reload of engine settings).

:class:`SwitchableEngine` runs the stream's engine on the session's audio. :meth:`switch`
hands it a new engine, already built (model loaded): the old engine's audio ends at the next
block, so it commits the utterance in flight and finishes its last decodes in the background,
while the new engine receives every following block. No block is dropped or given to both.

Both generations emit into the stream's one reconciler, which keeps ONE chain: the wrapper
renames the items of generation ``g > 0`` (``r{g}-`` prefix, so ids never collide) and links
the new generation's first item to the last item the old one opened. The hand-over and the
re-linking are :mod:`captiond.engines.handover`'s, shared with ``--engine auto``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from captiond.audio.block import AudioBlock
from captiond.engines.base import Emit, Engine
from captiond.engines.handover import Chain, Relay

log = logging.getLogger("captiond.engine")


class SwitchableEngine:
    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self._chain = Chain()
        self._next: Engine | None = None
        self._gap_sink: Any = None
        self._drop_sink: Any = None
        self._switch = asyncio.Event()

    @property
    def generation(self) -> int:
        """Engines switched to so far (0: the one the stream started with)."""
        return self._chain.generation

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
        relay = Relay(audio)
        running: list[asyncio.Task[None]] = []
        while True:
            generation = self._chain.generation
            task, handed_over = await relay.start(
                self.inner,
                self._chain.emitter(emit, prefix=f"r{generation}-" if generation else ""),
                self._switch.is_set,
                name=f"engine-{generation}",
            )
            running.append(task)
            if not handed_over:
                break  # the engine ended on its own (or failed): nothing to hand over
            if relay.exhausted or self._next is None:
                break
            # The old engine drains in the background; the new one takes the next block.
            self._switch.clear()
            self.inner, self._next = self._next, None
            if self._gap_sink is not None:
                self.inner.set_gap_sink(self._gap_sink)
            if self._drop_sink is not None:
                self.inner.set_drop_sink(self._drop_sink)
            self._chain.next_generation()
            log.info("engine.restarted name=%s generation=%d", self.inner.name, self.generation)
        results = await asyncio.gather(*running, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
