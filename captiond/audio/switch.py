"""A source that can be swapped for another while the session runs (live config reload).

:class:`SwitchableSource` wraps the stream's real source. :meth:`~SwitchableSource.switch`
hands it a new, already opened source: the old one keeps delivering until that moment, then
it is closed and the new one's blocks continue on the same stream clock (re-based to where
the old one stopped, in the new source's own sample rate; the pipeline's resampler follows a
rate change). The session, the engine and the open utterance are untouched, so at most the
audio between the old device's last block and the new device's first is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from captiond.audio.block import AudioBlock
from captiond.audio.sources import Source
from captiond.tasks import spawn

log = logging.getLogger("captiond.audio")


class SwitchableSource:
    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.description = inner.description
        self.duration_s = inner.duration_s
        self.switches = 0
        self._next: Source | None = None
        self._switch = asyncio.Event()
        self._closed = False

    def __getattr__(self, attr: str) -> Any:
        # Anything else (rate, reopen counts, stream clock) is the current source's.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def switch(self, new: Source) -> None:
        """Continue with ``new`` from its first block on (call on the event loop)."""
        old, self._next = self._next, new
        if old is not None:  # two switches in a row: the first one never ran
            spawn(old.close(), "source-close")
        self._switch.set()

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        offset_s = 0.0  # stream time at which the current source's sample 0 sits
        while not self._closed:
            source = self.inner
            rate_base: int | None = None
            it = source.blocks().__aiter__()
            ended = False
            while True:
                get = asyncio.ensure_future(it.__anext__())
                waiter = asyncio.ensure_future(self._switch.wait())
                try:
                    await asyncio.wait({get, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if get.done():
                    try:
                        block = get.result()
                    except StopAsyncIteration:
                        ended = True
                        if not self._switch.is_set():
                            break
                    else:
                        if rate_base is None:
                            rate_base = round(offset_s * block.rate)
                        rebased = AudioBlock(block.samples, block.rate, rate_base + block.start)
                        offset_s = rebased.end / block.rate
                        yield rebased
                        if not self._switch.is_set():
                            continue
                else:
                    get.cancel()
                    with contextlib.suppress(BaseException):
                        await get
                # Switch: the old source is done, the new one continues the stream clock.
                self._switch.clear()
                with contextlib.suppress(Exception):
                    await it.aclose()  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):
                    await source.close()
                new, self._next = self._next, None
                if new is not None:
                    self.inner = new
                    self.switches += 1
                    log.info("audio.source_switched source=%r at_s=%.2f", new.description, offset_s)
                ended = False
                break
            if ended:
                return

    async def close(self) -> None:
        self._closed = True
        await self.inner.close()
        if self._next is not None:
            await self._next.close()
