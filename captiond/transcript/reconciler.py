"""Orders out-of-order transcript events into one transcript.  [pure: no I/O, no clock]

The OpenAI service sends completions out of order and deltas before their ``committed``; the
local engine opens an item when speech starts and widens it as the utterance grows. The
reconciler accepts the shared :mod:`captiond.events` in ANY order, duplicates included, and
keeps one chain per reconciler (one per channel and track): an item is *placed* once its
``previous_item_id`` is placed (or it is the head, ``previous_item_id=None``). Placement gives
the item its ``seq``; content that arrived earlier is shown with it.

Resolution rules, chosen so the outcome does not depend on arrival order:

- the first placement of an item wins; later ``ItemCommitted`` events only widen its times
  (start = min, end = max);
- a completion beats a failure; the first completion wins over later ones;
- partial text is ignored once the item is final or failed; a failed item has no text;
- an item whose predecessor never comes (a commit the service refused) waits until the owner
  calls :meth:`Reconciler.settle_orphans`, which appends the waiting items in time order.

``apply`` returns the :class:`LineUpdate` values the change produced; folding every update by
item id gives the same lines as :meth:`Reconciler.lines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from captiond.events import (
    ItemCommitted,
    ItemCompleted,
    ItemFailed,
    ItemPartial,
    Line,
    LineStatus,
    LineUpdate,
    TranscriptEvent,
    UpdateKind,
    Word,
)

#: Items with content but no placement kept at most; the oldest are dropped past this.
MAX_UNPLACED_ITEMS = 10_000


@dataclass(slots=True)
class _Item:
    item_id: str
    placed_prev: str | None = None
    committed: bool = False
    audio_start_ms: int = 0
    audio_end_ms: int = 0
    partial: str = ""
    stable: int = 0
    final: str | None = None
    words: tuple[Word, ...] = ()
    language: str | None = None
    failed: str | None = None
    seq: int | None = None
    visible: bool = False  # an update announcing it has been emitted and not removed

    @property
    def status(self) -> LineStatus:
        if self.final is not None:
            return LineStatus.FINAL
        if self.failed is not None:
            return LineStatus.FAILED
        return LineStatus.PARTIAL

    @property
    def text(self) -> str:
        # A failed item shows no text: its partials were never confirmed.
        if self.final is not None:
            return self.final
        return "" if self.failed is not None else self.partial


@dataclass(slots=True)
class Reconciler:
    """One chain of items. ``channel``, ``track`` and ``engine`` are stamped on every line."""

    channel: str = ""
    speaker: str | None = None
    track: str = "original"
    engine: str = ""
    _items: dict[str, _Item] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)  # placed item ids by seq
    _waiting: dict[str | None, list[str]] = field(default_factory=dict)  # prev id -> items
    _head_placed: bool = False

    # -- queries -----------------------------------------------------------------------------

    def lines(self) -> list[Line]:
        """Placed lines in transcript order (including failed and empty ones)."""
        return [self._line(self._items[i]) for i in self._order]

    def pending(self) -> list[str]:
        """Items with content or a commit that are not placed yet."""
        return [i for i, it in self._items.items() if it.seq is None]

    def last_item_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def unsettled(self) -> list[str]:
        """Placed items still waiting for a completion or failure."""
        return [i for i in self._order if self._items[i].status is LineStatus.PARTIAL]

    # -- the one entry point -----------------------------------------------------------------

    def apply(self, event: TranscriptEvent) -> list[LineUpdate]:
        item = self._items.get(event.item_id)
        if item is None:
            if len(self._items) - len(self._order) >= MAX_UNPLACED_ITEMS:
                self._drop_oldest_unplaced()
            item = self._items[event.item_id] = _Item(event.item_id)
        if isinstance(event, ItemCommitted):
            return self._commit(item, event)
        if isinstance(event, ItemPartial):
            if item.final is not None or item.failed is not None:
                return []
            if event.text == item.partial and event.stable == item.stable:
                return []
            item.partial = event.text
            item.stable = min(event.stable, len(event.text))
            return self._changed(item)
        if isinstance(event, ItemCompleted):
            if item.final is not None:
                return []
            item.final = event.text.strip()
            item.words = event.words
            item.language = event.language
            item.failed = None
            return self._changed(item)
        if isinstance(event, ItemFailed):
            if item.final is not None or item.failed is not None:
                return []
            item.failed = event.reason
            return self._changed(item)
        raise TypeError(f"not a transcript event: {event!r}")

    def settle_orphans(self) -> list[LineUpdate]:
        """Place every committed item whose predecessor never came, in time order."""
        updates: list[LineUpdate] = []
        while True:
            orphans = sorted(
                (it for it in self._items.values() if it.seq is None and it.committed),
                key=lambda it: (it.audio_start_ms, it.item_id),
            )
            if not orphans:
                return updates
            first = orphans[0]
            prev = first.placed_prev
            if prev in self._waiting and first.item_id in self._waiting[prev]:
                self._waiting[prev].remove(first.item_id)
                if not self._waiting[prev]:
                    del self._waiting[prev]
            updates.extend(self._place(first))

    # -- internals ---------------------------------------------------------------------------

    def _commit(self, item: _Item, event: ItemCommitted) -> list[LineUpdate]:
        if item.committed:
            start = min(item.audio_start_ms, event.audio_start_ms)
            end = max(item.audio_end_ms, event.audio_end_ms)
            if (start, end) == (item.audio_start_ms, item.audio_end_ms):
                return []
            item.audio_start_ms, item.audio_end_ms = start, end
            return self._changed(item)
        item.committed = True
        item.placed_prev = event.previous_item_id
        item.audio_start_ms = event.audio_start_ms
        item.audio_end_ms = max(event.audio_start_ms, event.audio_end_ms)
        prev = event.previous_item_id
        if prev is None:
            if not self._head_placed:
                return self._place(item)
            # A second head: a new chain that follows everything placed so far.
            return self._place(item)
        predecessor = self._items.get(prev)
        if predecessor is not None and predecessor.seq is not None:
            return self._place(item)
        self._waiting.setdefault(prev, []).append(item.item_id)
        return []

    def _place(self, item: _Item) -> list[LineUpdate]:
        updates: list[LineUpdate] = []
        stack = [item]
        while stack:
            current = stack.pop()
            current.seq = len(self._order)
            self._order.append(current.item_id)
            if current.placed_prev is None:
                self._head_placed = True
            updates.extend(self._changed(current))
            followers = self._waiting.pop(current.item_id, [])
            # Deterministic order when (unusually) several items claim the same predecessor.
            followers.sort(key=lambda i: (self._items[i].audio_start_ms, i), reverse=True)
            stack.extend(self._items[i] for i in followers)
        return updates

    def _changed(self, item: _Item) -> list[LineUpdate]:
        """The update that shows the item's current state, if it is placed."""
        if item.seq is None:
            return []
        line = self._line(item)
        empty_final = item.status is LineStatus.FINAL and not item.final
        if empty_final or (item.status is LineStatus.PARTIAL and not item.partial):
            if item.visible:
                item.visible = False
                return [LineUpdate(UpdateKind.REMOVED, line)]
            return []
        if not item.visible:
            item.visible = True
            return [LineUpdate(UpdateKind.ADDED, line)]
        if item.status is LineStatus.PARTIAL:
            return [LineUpdate(UpdateKind.UPDATED, line)]
        return [LineUpdate(UpdateKind.FINALISED, line)]

    def _line(self, item: _Item) -> Line:
        assert item.seq is not None
        return Line(
            item_id=item.item_id,
            previous_item_id=item.placed_prev,
            seq=item.seq,
            audio_start_ms=item.audio_start_ms,
            audio_end_ms=item.audio_end_ms,
            text=item.text,
            status=item.status,
            stable=len(item.text) if item.status is not LineStatus.PARTIAL else item.stable,
            words=item.words,
            language=item.language,
            error=item.failed,
            channel=self.channel,
            speaker=self.speaker,
            track=self.track,
            engine=self.engine,
        )

    def _drop_oldest_unplaced(self) -> None:
        for item_id, it in self._items.items():
            if it.seq is None:
                del self._items[item_id]
                for followers in self._waiting.values():
                    if item_id in followers:
                        followers.remove(item_id)
                return


def fold(lines: dict[str, Line], updates: list[LineUpdate]) -> dict[str, Line]:
    """What a consumer holds after applying updates: visible lines by item id."""
    for update in updates:
        if update.kind is UpdateKind.REMOVED:
            lines.pop(update.line.item_id, None)
        else:
            lines[update.line.item_id] = replace(update.line)
    return lines
