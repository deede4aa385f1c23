"""The reconciler orders out-of-order events into one transcript, whatever the arrival order."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.events import (
    ItemCommitted,
    ItemCompleted,
    ItemFailed,
    ItemPartial,
    LineStatus,
    UpdateKind,
)
from captiond.transcript.reconciler import Reconciler, fold


@st.composite
def chains(draw):  # type: ignore[no-untyped-def]
    """A valid chain of items with every event the services send, in a random order.

    Each item is committed (once or twice: duplicates), may get partials, and ends completed
    (possibly with empty text: silence) or failed (sometimes also completed: text wins).
    """
    n = draw(st.integers(min_value=1, max_value=12))
    ids = [f"item_{i:03d}" for i in range(n)]
    events = []
    t = 0
    for i, item in enumerate(ids):
        start = t
        t += draw(st.integers(min_value=100, max_value=5000))
        prev = ids[i - 1] if i else None
        commit = ItemCommitted(item, prev, start, t)
        events.append(commit)
        if draw(st.booleans()):
            events.append(commit)  # duplicate delivery
        for k in range(draw(st.integers(min_value=0, max_value=3))):
            events.append(ItemPartial(item, f"partial {k} of {item}", stable=k))
        outcome = draw(st.sampled_from(["text", "text", "empty", "failed", "failed+text"]))
        if outcome in ("text", "failed+text"):
            events.append(ItemCompleted(item, f"final text of {item}"))
        if outcome == "empty":
            events.append(ItemCompleted(item, ""))
        if outcome in ("failed", "failed+text"):
            events.append(ItemFailed(item, "transcription_error"))
    order = draw(st.permutations(events))
    return ids, list(events), list(order)


def run(events):  # type: ignore[no-untyped-def]
    rec = Reconciler(channel="mic", engine="test")
    updates = []
    for e in events:
        updates.extend(rec.apply(e))
    return rec, updates


@settings(max_examples=400, deadline=None)
@given(chains())
def test_any_arrival_order_gives_the_same_transcript(case) -> None:  # type: ignore[no-untyped-def]
    """Every permutation of the events yields the transcript of the in-order delivery."""
    ids, in_order, shuffled = case
    expected, _ = run(in_order)
    got, _ = run(shuffled)
    assert [line.item_id for line in got.lines()] == ids
    assert got.lines() == expected.lines()


@settings(max_examples=400, deadline=None)
@given(chains())
def test_updates_fold_to_the_visible_transcript(case) -> None:  # type: ignore[no-untyped-def]
    """A consumer applying the updates ends with exactly the visible lines, finals final."""
    _ids, _in_order, shuffled = case
    rec, updates = run(shuffled)
    viewer = fold({}, updates)
    visible = {
        line.item_id: line
        for line in rec.lines()
        if line.text or line.status is LineStatus.FAILED
    }
    # A failed item is announced (so its partial is withdrawn) but shows no text.
    assert all(not line.text for line in visible.values() if line.status is LineStatus.FAILED)
    assert viewer == visible
    for line in viewer.values():
        assert line.status is not LineStatus.PARTIAL, "every item was settled"


@settings(max_examples=200, deadline=None)
@given(chains())
def test_seq_follows_the_chain_and_failures_never_block(case) -> None:  # type: ignore[no-untyped-def]
    """Lines get seq 0..n-1 in chain order; a failed item still lets later lines through."""
    ids, _in_order, shuffled = case
    rec, _ = run(shuffled)
    assert [line.seq for line in rec.lines()] == list(range(len(ids)))
    assert rec.pending() == []
    assert rec.unsettled() == []


def test_completion_before_commit_is_held_then_placed() -> None:
    """A completion that arrives before its commit shows up once the commit places it."""
    rec = Reconciler()
    assert rec.apply(ItemCompleted("b", "second")) == []
    assert rec.apply(ItemCommitted("b", "a", 1000, 2000)) == []  # waits for "a"
    updates = rec.apply(ItemCommitted("a", None, 0, 1000))
    # "a" has no text yet, so only "b" becomes visible, already final.
    assert [(u.kind, u.line.item_id, u.line.text, u.line.status) for u in updates] == [
        (UpdateKind.ADDED, "b", "second", LineStatus.FINAL),
    ]
    assert [line.item_id for line in rec.lines()] == ["a", "b"]
    first = rec.apply(ItemCompleted("a", "first"))
    assert [(u.kind, u.line.text) for u in first] == [(UpdateKind.ADDED, "first")]


def test_partial_then_final_then_late_partial() -> None:
    """Partial text updates in place; once final, a late partial changes nothing."""
    rec = Reconciler()
    rec.apply(ItemCommitted("a", None, 0, 0))
    (added,) = rec.apply(ItemPartial("a", "hel", 0))
    assert added.kind is UpdateKind.ADDED and added.line.status is LineStatus.PARTIAL
    (upd,) = rec.apply(ItemPartial("a", "hello wor", 5))
    assert upd.kind is UpdateKind.UPDATED and upd.line.stable == 5
    (fin,) = rec.apply(ItemCompleted("a", "hello world"))
    assert fin.kind is UpdateKind.FINALISED and fin.line.stable == len("hello world")
    assert rec.apply(ItemPartial("a", "junk")) == []
    assert rec.lines()[0].text == "hello world"


def test_empty_final_removes_the_partial() -> None:
    """An utterance that turns out to be silence removes the partial that was shown."""
    rec = Reconciler()
    rec.apply(ItemCommitted("a", None, 0, 500))
    rec.apply(ItemPartial("a", "Thank you."))
    (removed,) = rec.apply(ItemCompleted("a", ""))
    assert removed.kind is UpdateKind.REMOVED


def test_widening_commit_updates_times_not_position() -> None:
    """A second commit for an item only widens its times (the local engine's open item)."""
    rec = Reconciler()
    rec.apply(ItemCommitted("a", None, 100, 100))
    rec.apply(ItemPartial("a", "one"))
    (upd,) = rec.apply(ItemCommitted("a", None, 0, 2400))
    assert (upd.line.audio_start_ms, upd.line.audio_end_ms, upd.line.seq) == (0, 2400, 0)


def test_orphans_are_settled_in_time_order() -> None:
    """Items whose predecessor never comes are placed by settle_orphans, by start time."""
    rec = Reconciler()
    rec.apply(ItemCommitted("a", None, 0, 1000))
    rec.apply(ItemCommitted("d", "c", 3000, 4000))  # "c" was refused: never committed
    rec.apply(ItemCommitted("e", "d", 4000, 5000))
    rec.apply(ItemCompleted("d", "four"))
    assert [line.item_id for line in rec.lines()] == ["a"]
    rec.settle_orphans()
    assert [line.item_id for line in rec.lines()] == ["a", "d", "e"]


def test_channel_and_engine_are_stamped() -> None:
    """Lines carry the channel, speaker, track and engine of their reconciler."""
    rec = Reconciler(channel="system", speaker="Them", track="es", engine="openai")
    rec.apply(ItemCommitted("x", None, 0, 10))
    (u,) = rec.apply(ItemCompleted("x", "hola"))
    assert (u.line.channel, u.line.speaker, u.line.track, u.line.engine) == (
        "system",
        "Them",
        "es",
        "openai",
    )
    assert replace(u.line, text="x").text == "x"
