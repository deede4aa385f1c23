"""The figures of issue 28: offline minutes on real talk, and minutes with a key (fake).

Usage: ``python benchmarks/minutes_quality.py``

Offline, on the AMI excerpts joined into one meeting and the FLEURS sentences joined
(``tests/data/minutes``): sections and where they are cut (AMI: how many cuts fall within 2 s
of the first content line of a joined excerpt), keywords that are fillers, summaries that are
a section's first line (of sections with more than one content line), cited stamps that name
no transcript line, decisions and actions found. With a key, against the tests' fake
Responses API on 127.0.0.1: a 3-hour synthetic session (2,160 lines) in parts, its estimated
and counted cost beside the cap, cites checked, and each failure kind falling back offline.
Also the time offline minutes take for the 3-hour session.
"""

from __future__ import annotations

import re
import time

import kit

kit.support("fakes")
support = kit.support("minutes_support")
from fakes.openai_responses import FakeResponses  # noqa: E402

from captiond.exports import digest, produce  # noqa: E402
from captiond.exports.minutes import environment, render_minutes  # noqa: E402
from captiond.exports.responses import plan  # noqa: E402
from captiond.exports.topics import FILLERS, is_backchannel  # noqa: E402

KEY, MEETINGS, export = support.KEY, support.MEETINGS, support.export
_meeting, _three_hours = support.meeting, support.three_hours


def offline_figures() -> None:
    print("offline minutes")
    print(f"{'meeting':16} {'lines':>5} {'sections':>8} {'cuts@joins':>10} {'filler kw':>9} "
          f"{'1st-line sums':>13} {'bad stamps':>10} {'decisions':>9} {'actions':>7}")
    for name in MEETINGS:
        doc = export(name)
        lines = digest.text_lines(doc.original)
        m = digest.offline(lines, doc.findings(), duration_ms=doc.duration_ms)
        starts = [t.start_ms for t in m.topics[1:]]
        joins = "-"
        if name == "ami_meeting":
            content = [ln.start_ms for ln in lines if not is_backchannel(ln.text)]
            firsts = {min(s for s in content if s >= k * 30_000) for k in range(1, 10)}
            near = sum(any(0 <= s - j <= 2_000 for j in firsts) for s in starts)
            joins = f"{near}/{len(starts)}"
        fillers = sum(k.lower() in FILLERS for t in m.topics for k in t.keywords)
        first, multi = 0, 0
        for t in m.topics:
            sec = [ln for ln in lines if t.start_ms <= ln.start_ms and ln.end_ms <= t.end_ms]
            if sum(not is_backchannel(ln.text) for ln in sec) > 1:
                multi += 1
                first += t.cites[0].line == sec[0].id
        text = render_minutes(doc, minutes=m, env=environment(None))
        body, transcript = text.split("## Transcript", 1)
        printed = set(re.findall(r"^\[([0-9:.\-]+)\] ", transcript, re.M))
        cited = re.findall(r"\[(\d\d:\d\d:\d\d[0-9.\-]*)\]", body)
        bad = sum(c not in printed for c in cited)
        print(f"{name:16} {len(lines):5d} {len(m.topics):8d} {joins:>10} {fillers:9d} "
              f"{first:>6d} of {multi:<4d} {bad:>5d} of {len(cited):<3d} "
              f"{len(m.decisions):9d} {len(m.actions):7d}")


def with_a_key() -> None:
    doc = _three_hours()
    lines = digest.text_lines(doc.original)
    t0 = time.perf_counter()
    digest.offline(lines, doc.findings(), duration_ms=doc.duration_ms)
    print(f"\noffline minutes of the 3-hour session: {time.perf_counter() - t0:.2f} s")
    with FakeResponses(KEY) as fake:
        opts = produce.Options(engine="openai", url=fake.url, backoff_s=(0.01,))
        m = produce.write_minutes(doc, opts, KEY)
    p = plan(lines, opts.part_tokens, opts.price_in, opts.price_out)
    sent = [int(i) for b in fake.requests[:-1]
            for i in re.findall(r"^L(\d+) ", b["input"][0]["content"][0]["text"], re.M)]
    cites = [c for it in [*m.summary, *m.topics, *m.decisions, *m.actions, *m.questions]
             for c in it.cites]
    ok = sum(0 <= c.line < len(lines) and lines[c.line].start_ms == c.start_ms for c in cites)
    print(f"3-hour session with a key ({opts.model}, fake): {len(lines)} lines in "
          f"{len(p.parts)} parts + 1 merge request; lines sent {len(sent)} "
          f"(each once: {sent == [ln.id for ln in lines]}); estimated ${p.estimated_usd:.4f}, "
          f"counted ${m.cost_usd:.4f}, cap ${opts.max_cost_usd:.2f}; cites {ok}/{len(cites)} "
          f"on existing lines; {len(m.decisions)} decisions, {len(m.actions)} actions")
    print("\nfailure kind            -> minutes   nothing lost (same as offline)")
    small = _meeting()
    expected = digest.offline(digest.text_lines(small.original), small.findings(),
                              duration_ms=small.duration_ms)
    for script in (["invalid"], ["incomplete"], ["refusal"], ["429"] * 3, ["timeout"] * 3,
                   ["401"], ["bad_cites"]):
        with FakeResponses(KEY, script, hang_s=1.0) as fake:
            opts = produce.Options(engine="openai", url=fake.url, timeout_s=0.3,
                                   backoff_s=(0.01,))
            got = produce.write_minutes(small, opts, KEY)
        same = (got.topics, got.decisions, got.actions) == (expected.topics,
                                                           expected.decisions,
                                                           expected.actions)
        print(f"{'+'.join(script):23} -> {got.source:8}  {same if got.source == 'offline' else '-'}"
              f"  {(got.notes or ('',))[0][:70]}")


def main(args: object) -> None:
    offline_figures()
    with_a_key()


if __name__ == "__main__":
    kit.run(main, kit.parser(__doc__).parse_args())
