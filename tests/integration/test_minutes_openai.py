"""Minutes with a key, against a fake Responses API on a real socket: good answers are used
with every cite checked; every failed answer gives offline minutes, never invented ones."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from fakes.openai_responses import FakeResponses
from minutes_support import KEY, meeting, three_hours

from captiond.exports import digest, produce
from captiond.exports.responses import plan
from captiond.timefmt import clock


def _opts(fake: FakeResponses, **kw: Any) -> produce.Options:
    base = {"engine": "openai", "url": fake.url, "timeout_s": 5.0, "backoff_s": (0.01,)}
    return produce.Options(**{**base, **kw})


def _all_cites_exist(m: digest.Minutes, doc: Any) -> int:
    lines = {ln.id: ln for ln in digest.text_lines(doc.original)}
    n = 0
    for item in [*m.summary, *m.topics, *m.decisions, *m.actions, *m.questions]:
        for c in item.cites:
            assert c.line in lines and lines[c.line].start_ms == c.start_ms
            n += 1
    return n


def test_valid_answer_becomes_minutes_with_cost() -> None:
    """A schema-valid answer gives the model's minutes: cites exist, owners as said, the
    request passed the openai package's own types, the cost is the tokens used."""
    doc = meeting()
    with FakeResponses(KEY) as fake:
        m = produce.write_minutes(doc, _opts(fake), KEY)
    assert fake.problems == [] and fake.answered == ["valid"]
    assert m.source == "openai" and m.model == "gpt-5-mini"
    assert _all_cites_exist(m, doc) >= 4
    assert [d.text for d in m.decisions] == ["Fine, we'll go with the rubber buttons then."]
    assert [(a.owner, a.due) for a in m.actions] == [("Ann", "Friday"), ("Cat", None)]
    assert m.input_tokens > 0 and m.cost_usd == pytest.approx(
        (m.input_tokens * 0.25 + m.output_tokens * 2.0) / 1e6)
    body = fake.requests[0]
    assert body["text"]["format"]["strict"] is True and body["store"] is False
    assert "L4 [00:00:20] Ann: I'll send the drawings round by Friday." in \
        body["input"][0]["content"][0]["text"]


def test_cites_that_do_not_exist_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """An item citing only lines that do not exist is dropped, a stray cite is removed, and
    the log and the minutes' note say so."""
    doc = meeting()
    caplog.set_level(logging.INFO, "captiond.minutes")
    with FakeResponses(KEY, ["bad_cites"]) as fake:
        m = produce.write_minutes(doc, _opts(fake), KEY)
    assert m.source == "openai"
    assert "yacht" not in json.dumps(digest.to_json(m))
    assert all(len(a.cites) == 1 for a in m.actions) and len(m.actions) == 2
    _all_cites_exist(m, doc)
    assert any("did not match the transcript" in n for n in m.notes)
    assert "cite of line 999999 dropped" in caplog.text


@pytest.mark.parametrize(("script", "reason"), [
    (["invalid"], "does not follow the schema"),
    (["incomplete"], "incomplete (max_output_tokens)"),
    (["refusal"], "refused"),
    (["429", "429", "429"], "HTTP 429"),
    (["timeout", "timeout", "timeout"], "no answer within"),
    (["401"], "HTTP 401"),
])
def test_failed_answers_give_offline_minutes(script: list[str], reason: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A schema-invalid, truncated or refused answer, 429s or timeouts throughout, or a
    rejected key: the offline minutes are written instead (nothing of the failed answer
    kept, nothing of the transcript lost) and the log says why."""
    doc = meeting()
    caplog.set_level(logging.INFO, "captiond.minutes")
    with FakeResponses(KEY, script, hang_s=1.5) as fake:
        m = produce.write_minutes(doc, _opts(fake, timeout_s=0.3), KEY)
    assert fake.problems == []
    assert len(fake.answered) == len(script)  # retried only what may be retried
    assert m.source == "offline" and any(reason in n for n in m.notes), m.notes
    assert "remote control design" not in json.dumps(digest.to_json(m)).lower()
    expected = digest.offline(digest.text_lines(doc.original), doc.findings(),
                              duration_ms=doc.duration_ms)
    assert (m.topics, m.decisions, m.actions) == (expected.topics, expected.decisions,
                                                  expected.actions)
    assert m.decisions and m.actions  # the rules found them: nothing lost
    assert re.search(r"minutes\.offline session=1 reason=.*" + re.escape(reason), caplog.text)
    assert KEY not in caplog.text and KEY not in json.dumps(digest.to_json(m))


def test_429_then_answer_is_retried() -> None:
    """A 429 with retry-after is waited out and asked again; the answer is used."""
    doc = meeting()
    with FakeResponses(KEY, ["429", "valid"]) as fake:
        m = produce.write_minutes(doc, _opts(fake), KEY)
    assert fake.answered == ["429", "valid"] and m.source == "openai"


def test_three_hour_session_in_parts_within_the_cap() -> None:
    """A 3-hour session is sent in parts (every line in exactly one part, none cut), merged
    in time order, and costs less than the cap, estimated before and counted after."""
    doc = three_hours()
    opts_ = None
    with FakeResponses(KEY) as fake:
        opts_ = _opts(fake)
        m = produce.write_minutes(doc, opts_, KEY)
    lines = digest.text_lines(doc.original)
    p = plan(lines, opts_.part_tokens, opts_.price_in, opts_.price_out)
    assert len(p.parts) >= 2 and len(fake.requests) == len(p.parts) + 1  # parts, then merge
    sent = [int(i) for b in fake.requests[:-1]
            for i in re.findall(r"^L(\d+) ", b["input"][0]["content"][0]["text"], re.M)]
    assert sent == [ln.id for ln in lines]  # nothing truncated, nothing twice
    assert m.source == "openai" and len(m.topics) == len(p.parts)
    assert any(f"summarised in {len(p.parts)} parts" in n for n in m.notes)
    assert p.estimated_usd <= opts_.max_cost_usd and m.cost_usd <= p.estimated_usd
    assert len(m.decisions) == 54 and len(m.actions) == 54
    assert [s.text for s in m.summary] == [
        f"Overall, Part {i + 1} {clock(a)}–{clock(b)} went over the design."
        for i, (a, b) in enumerate((t.start_ms, t.end_ms) for t in m.topics)]
    assert all(s.cites for s in m.summary)
    _all_cites_exist(m, doc)
    print(f"3-hour session: {len(lines)} lines, {len(p.parts)} parts, estimated "
          f"${p.estimated_usd:.4f}, counted ${m.cost_usd:.4f} (cap ${opts_.max_cost_usd})")


def test_failed_merge_keeps_the_parts_summaries(caplog: pytest.LogCaptureFixture) -> None:
    """When the summary of the whole meeting is refused, the parts' own summary points
    stay (each from a good answer), the note and the log say so."""
    doc = three_hours()
    caplog.set_level(logging.INFO, "captiond.minutes")
    with FakeResponses(KEY, ["valid", "valid", "refusal"]) as fake:
        m = produce.write_minutes(doc, _opts(fake), KEY)
    assert fake.answered == ["valid", "valid", "refusal"]
    assert m.source == "openai"
    assert [s.text for s in m.summary] == ["The team reviewed the remote control design."]
    assert any("summary of the whole meeting failed (the model refused" in n for n in m.notes)
    assert "minutes.merge_failed" in caplog.text


def test_over_the_cap_nothing_is_sent() -> None:
    """An estimate above minutes.max_cost_usd sends nothing and gives offline minutes that
    say how to raise the cap."""
    doc = three_hours()
    with FakeResponses(KEY) as fake:
        m = produce.write_minutes(doc, _opts(fake, max_cost_usd=0.01), KEY)
    assert fake.requests == [] and m.source == "offline"
    assert any("minutes.max_cost_usd" in n for n in m.notes)


def test_without_a_key_auto_is_offline() -> None:
    """minutes.engine = auto without a key: offline minutes, no note, no request."""
    m = produce.write_minutes(meeting(), produce.Options(engine="auto"), None)
    assert m.source == "offline" and m.notes == ()


def test_runaway_answer_is_cut_and_said() -> None:
    """An answer listing more items than the bound keeps the first MAX_ITEMS, and says so."""
    from captiond.exports.responses import MAX_ITEMS, Part, to_minutes

    lines = digest.text_lines(meeting().original)
    data = FakeResponses.minutes_for("".join(
        f"L{ln.id} [00:00:00] {ln.speaker}: {ln.text}\n" for ln in lines))
    data["questions"] = [{"text": f"Question {i}?", "lines": [5]} for i in range(MAX_ITEMS + 7)]
    m = to_minutes(data, Part(tuple(lines), "", 0))
    assert len(m.questions) == MAX_ITEMS
    assert m.notes == (f"The model listed {MAX_ITEMS + 7} questions; the first {MAX_ITEMS} "
                       "of each are kept.",)
