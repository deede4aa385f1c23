"""Offline minutes on real talk: topic sections, central summaries, fillers kept out, cites."""

from __future__ import annotations

import json
import re

import pytest
from markdown_it import MarkdownIt
from minutes_support import MEETINGS, export, rows

from captiond.exports import digest
from captiond.exports.actions import Utterance, extract
from captiond.exports.minutes import environment, render_minutes
from captiond.exports.topics import FILLERS, TextLine, is_backchannel, sections, tokens


def _minutes(name: str) -> tuple[digest.Minutes, list[TextLine]]:
    doc = export(name)
    lines = digest.text_lines(doc.original)
    return digest.offline(lines, doc.findings(), duration_ms=doc.duration_ms), lines


@pytest.mark.parametrize("name", MEETINGS)
def test_no_filler_keyword_or_summary(name: str) -> None:
    """No keyword is a filler or back-channel, and no summary is a back-channel line."""
    m, lines = _minutes(name)
    assert m.topics
    for t in m.topics:
        assert not [k for k in t.keywords if k.lower() in FILLERS], t.keywords
        assert t.summary and not is_backchannel(t.summary)
        assert not re.match(r"(?i)(um|uh|mm-hmm|yeah|okay|so|right)\b", t.summary), t.summary


@pytest.mark.parametrize("name", MEETINGS)
def test_summaries_are_not_the_first_line(name: str) -> None:
    """A section with more than one content line is summed up by another than its first."""
    m, lines = _minutes(name)
    by_id = {ln.id: ln for ln in lines}
    checked = 0
    for t in m.topics:
        section = [ln for ln in lines if t.start_ms <= ln.start_ms and ln.end_ms <= t.end_ms]
        content = [ln for ln in section if not is_backchannel(ln.text)]
        if len(content) > 1:
            checked += 1
            assert t.cites[0].line != section[0].id, (t.summary, by_id[section[0].id].text)
    assert checked >= 2


@pytest.mark.parametrize("name", MEETINGS)
def test_sections_follow_content_not_the_clock(name: str) -> None:
    """Several sections, cut where the words change: most of AMI's cuts are at the first
    content line (within 2 s) of one of its joined excerpts (every 30 s), and sections differ in length."""
    m, _ = _minutes(name)
    assert len(m.topics) >= 3
    starts = [t.start_ms for t in m.topics[1:]]
    if name == "ami_meeting":
        lines = digest.text_lines(rows(name))
        content = [ln.start_ms for ln in lines if not is_backchannel(ln.text)]
        joins = {min(s for s in content if s >= k * 30_000) for k in range(1, 10)}
        near = [s for s in starts if any(0 <= s - j <= 2_000 for j in joins)]
        assert len(near) >= 0.75 * len(starts), (starts, sorted(joins))
    lengths = {b - a for a, b in zip([0, *starts], starts)}
    assert len(lengths) > 1  # not a fixed clock


@pytest.mark.parametrize("name", MEETINGS)
def test_every_cited_time_is_a_transcript_line(name: str) -> None:
    """Each [time] the Markdown minutes cite is printed before exactly one transcript line,
    and the JSON export's cites name existing lines with the same times."""
    doc = export(name)
    text = render_minutes(doc, env=environment(None))
    body, transcript = text.split("## Transcript", 1)
    printed = re.findall(r"^\[([0-9:.\-]+)\] ", transcript, re.M)
    assert len(printed) == len(set(printed)) == len(doc.original)
    cited = re.findall(r"\[(\d\d:\d\d:\d\d[0-9.\-]*)\]", body)
    assert cited and set(cited) <= set(printed)
    html = MarkdownIt("commonmark").render(text)
    assert "<a " not in html and "href" not in html  # plain stamps, no anchor clutter
    m, lines = _minutes(name)
    data = json.loads(json.dumps(digest.to_json(m, lines)))
    at = digest.stamps(lines)
    for item in [*data["topics"], *data["decisions"], *data["actions"]]:
        for c in item["cites"]:
            assert lines[c["line"]].start_ms == c["start_ms"] and at[c["line"]] == c["at"]
    assert digest.from_json(data) == m


def test_keywords_are_content_words() -> None:
    """AMI keywords are words the section repeats, none of them a filler ("mm-hmm")."""
    m, _ = _minutes("ami_meeting")
    words = [k.lower() for t in m.topics for k in t.keywords]
    assert "mm-hmm" not in words and "username" in words


def test_tokens_leave_fillers_out() -> None:
    """Back-channels and hesitations give no content words."""
    assert tokens("Mm-hmm. Yeah, okay, um, right, so... uh-huh mhm") == []
    assert is_backchannel("Yeah yeah okay") and not is_backchannel("the remote needs buttons")


def test_meeting_phrasings_give_decisions_and_owned_actions() -> None:
    """Decisions and actions as people say them, the owner being the line's speaker."""
    said = [
        ("Ann", "Okay so we'll go with the rubber buttons then."),
        ("Ben", "Um let's see what the others think."),
        ("Ann", "Yeah I'll send the drawings round by Friday."),
        ("Ben", "Sarah can you check the price of the chip?"),
        ("Cat", "We agreed the remote is yellow."),
        ("Ann", "The decision is to drop the LCD screen."),
        ("Ben", "Let's use the kinetic battery."),
        ("Cat", "we'll talk about that later"),
    ]
    found = extract(Utterance(i * 1000, t, s, i) for i, (s, t) in enumerate(said))
    decisions = [f.text for f in found if f.kind == "decision"]
    actions = [(f.owner, f.text, f.due) for f in found if f.kind == "action"]
    assert decisions == ["We'll go with the rubber buttons", "We agreed the remote is yellow",
                         "The decision is to drop the LCD screen",
                         "Let's use the kinetic battery"]
    assert actions == [("Ann", "send the drawings round", "by Friday"),
                       ("Sarah", "check the price of the chip", None)]


def test_unknown_speaker_shows_no_placeholder() -> None:
    """An "I'll ..." with no speaker on the line names no owner, and no "(speaker)"."""
    lines = rows("fleurs_meeting")[:3]
    lines[1].text = "I'll send the notes to everyone tomorrow."
    text = render_minutes(export("fleurs_meeting", lines), env=environment(None))
    assert "- [ ] send the notes to everyone (due: _tomorrow_) [" in text
    assert "(speaker)" not in text and "(unassigned)" not in text


def test_sections_cover_every_line_once() -> None:
    """Sections are consecutive and hold every line exactly once."""
    lines = digest.text_lines(rows("ami_meeting"))
    secs = sections(lines)
    assert secs[0].first == 0 and secs[-1].last == lines[-1].id
    assert all(b.first == a.last + 1 for a, b in zip(secs, secs[1:]))
