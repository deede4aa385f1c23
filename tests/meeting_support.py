"""The scripted meeting (``fixtures/meeting.txt``) as utterances, for the export tests.

Import into a test module: ``from meeting_support import MEETING, load_meeting``.
"""

from __future__ import annotations

import re
from pathlib import Path

from captiond.exports.actions import Utterance

MEETING = Path(__file__).resolve().parent / "fixtures" / "meeting.txt"


def load_meeting(path: Path = MEETING) -> list[Utterance]:
    """``MM:SS Speaker: text`` lines of the fixture as utterances."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(\d+):(\d+) (\w+): (.+)$", line)
        if m:
            ms = (int(m[1]) * 60 + int(m[2])) * 1000
            out.append(Utterance(ms, m[4], m[3], len(out)))
    return out
