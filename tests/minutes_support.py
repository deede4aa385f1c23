"""Meetings for the minutes tests: the AMI and FLEURS fixtures as stored-session exports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from captiond.exports.document import SessionExport

DATA = Path(__file__).parent / "data" / "minutes"
MEETINGS = ("ami_meeting", "fleurs_meeting")

#: A key the fakes accept; it must never reach a log, the database or a page.
KEY = "sk-test-minutes-0123456789abcdefghijklmnop"
SAID = [
    ("Ann", "Okay so today is the remote control design, the buttons and the case."),
    ("Ben", "Mm-hmm."),
    ("Ben", "I think rubber buttons feel better than plastic ones in the hand."),
    ("Cat", "Fine, we'll go with the rubber buttons then."),
    ("Ann", "I'll send the drawings round by Friday."),
    ("Ben", "Who checks the price of the chip?"),
    ("Cat", "Yeah."),
    ("Cat", "I'll ask the supplier about the kinetic battery."),
]


def rows(name: str) -> list[Any]:
    """The fixture's lines as the store's rows (start, end, speaker or None, text)."""
    out = []
    for i, raw in enumerate((DATA / f"{name}.tsv").read_text(encoding="utf-8").splitlines()):
        start, end, speaker, text = raw.split("\t")
        out.append(SimpleNamespace(
            item_id=f"it-{i}", audio_start_ms=int(start), audio_end_ms=int(end),
            speaker=speaker or None, channel="", text=text, engine="local", language="en",
            words=None, track="original"))
    return out


def export(name: str, lines: list[Any] | None = None) -> SessionExport:
    """A finished session holding the fixture's lines."""
    lines = rows(name) if lines is None else lines
    start = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
    return SessionExport(id=1, title=name, status="completed", source="file:x.wav",
                         started_at=start, ended_at=start + dt.timedelta(minutes=6),
                         language="en", engine="local", tracks={"original": lines})


def meeting(said: list[tuple[str, str]] = SAID, step_ms: int = 5_000) -> Any:
    lines = [SimpleNamespace(item_id=f"it-{i}", audio_start_ms=i * step_ms,
                             audio_end_ms=i * step_ms + step_ms - 500, speaker=who, channel="",
                             text=text, engine="openai", language="en", words=None,
                             track="original") for i, (who, text) in enumerate(said)]
    return export("synthetic", lines)


def three_hours() -> Any:
    """A 3-hour meeting: a line every 5 s, 2160 lines of real AMI turns repeated (speakers
    kept), every 40th line a decision or an action."""
    base = [r for r in rows("ami_meeting") if len(r.text.split()) >= 4]
    said = []
    for i in range(2160):
        r = base[i % len(base)]
        text = r.text
        if i % 40 == 7:
            text = f"I'll check item {i} with the supplier by Friday."
        elif i % 40 == 27:
            text = f"Okay we'll go with option {i} for the case."
        said.append((r.speaker, text))
    return meeting(said, step_ms=5_000)
