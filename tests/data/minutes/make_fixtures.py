"""Rebuild the minutes fixtures from ../shared/audio (run from the repository root).

``ami_meeting.tsv``: the ten AMI excerpts that have word transcripts, joined in name order
30 s apart into one meeting, one line per speaker turn (``NAME.turns.txt``).
``fleurs_meeting.tsv``: the FLEURS reference sentences joined, one line each, 1.5 s apart,
each lasting 0.4 s per word. Columns: start_ms, end_ms, speaker (may be empty), text.
"""

from __future__ import annotations

import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[4] / "shared" / "audio"
HERE = Path(__file__).resolve().parent
EXCERPT_MS = 30_000


def ami() -> list[tuple[int, int, str, str]]:
    rows = []
    names = sorted(p.name.split(".")[0] for p in (SHARED / "ami").glob("*.turns.txt"))
    for k, name in enumerate(names):
        for raw in (SHARED / "ami" / f"{name}.turns.txt").read_text().splitlines():
            start, end, rest = raw.split(None, 2)
            speaker, text = rest.split(": ", 1)
            rows.append((k * EXCERPT_MS + round(float(start) * 1000),
                         k * EXCERPT_MS + round(float(end) * 1000), speaker, text.strip()))
    return sorted(rows)


def fleurs() -> list[tuple[int, int, str, str]]:
    rows, t = [], 0
    for p in sorted((SHARED / "fleurs").glob("*.txt")):
        text = p.read_text().strip()
        end = t + 400 * len(text.split())
        rows.append((t, end, "", text))
        t = end + 1500
    return rows


def write(name: str, rows: list[tuple[int, int, str, str]]) -> None:
    with open(HERE / name, "w", encoding="utf-8") as fh:
        for start, end, speaker, text in rows:
            fh.write(f"{start}\t{end}\t{speaker}\t{text}\n")


if __name__ == "__main__":
    write("ami_meeting.tsv", ami())
    write("fleurs_meeting.tsv", fleurs())
    sys.exit(0)
