"""What an engine is: audio blocks in, :mod:`captiond.events` out.

The pipeline resamples the source to ``engine.sample_rate`` and hands the engine an async
iterator of :class:`~captiond.audio.block.AudioBlock` on the session's stream clock. The engine
emits transcript events through ``emit`` (called on the event loop) with item audio times in
stream milliseconds. When the iterator ends (end of file, shutdown) the engine commits what it
holds, waits (bounded) for the last results and returns.

Every engine emits items of ONE chain per ``run`` call: each item's ``previous_item_id`` is the
item committed before it (None for the first). An engine that talks to a service with its own
ids across several service sessions keeps that chain continuous itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from captiond.audio.block import AudioBlock
from captiond.events import DroppedUtterance, Gap, TranscriptEvent

if TYPE_CHECKING:
    from captiond.audio.segmenter import Params

Emit = Callable[[TranscriptEvent], None]
#: Where an engine reports speech it could not transcribe (stored as a gap).
GapSink = Callable[[Gap], None]
#: Where an engine reports an utterance it cut and then gave no text (or trimmed), and why.
DropSink = Callable[[DroppedUtterance], None]


class Engine(Protocol):
    #: Stored with every line ("local", "openai").
    name: str
    #: Rate of the audio blocks the engine wants.
    sample_rate: int

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None: ...

    def stats(self) -> dict[str, Any]:
        """Figures for the status line and ``captiond status``: lag_s, state, cost_usd, ..."""
        ...

    def update_settings(self, params: Params, partial_interval_s: float,
                        word_timestamps: bool) -> None:
        """Live reload of the ``vad.*`` and ``local.*`` settings every engine can take while it
        runs (from the next utterance). ``params`` are at the engine's ``sample_rate``. An
        engine without a VAD (translation) takes them and has nothing to change."""
        ...

    def set_gap_sink(self, fn: GapSink) -> None:
        """Where to report speech the engine lost itself (an outage buffer overflowing).
        Engines that never lose audio keep it and never call it."""
        ...

    def set_drop_sink(self, fn: DropSink) -> None:
        """Where to report utterances the engine discarded or trimmed (noise, hallucination
        guards), with the reason and the text dropped. Engines that never discard keep it."""
        ...
