"""`captiond speakers` against a fake Transcriptions endpoint on a real socket: AMI reference
turns as the meeting, labels that follow people across chunks, known speakers by name, and a
service that rate-limits, fails, stalls, refuses a size or returns nonsense segments."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from fakes.openai_transcribe import VOICES, FakeTranscriptions, Faults
from speakers_support import (
    ami_meeting,
    lines_from_words,
    mapping,
    right_share,
    store_meeting,
    synthesise,
    voices,
)

from captiond import cli
from captiond.audio.keep import KEEP_RATE
from captiond.speakers.attribute import Turn
from captiond.speakers.service import wav_bytes
from captiond.transcript.store import Store

#: Ten AMI excerpts, 30 s each.
MEETING_MS = 300_000


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch, db_url):
    """Isolated config and data (the test's database); the CLI of this branch's commands."""
    monkeypatch.setenv("CAPTIOND_DATABASE_URL", db_url)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("CAPTIOND_AUDIO_KEEP_DIR", str(tmp_path / "audio"))
    present = tuple(m for m in cli.COMMAND_MODULES if importlib.util.find_spec(m) is not None)
    monkeypatch.setattr(cli, "COMMAND_MODULES", present)


@pytest.fixture(scope="module")
def ami() -> tuple[list[Turn], np.ndarray, list]:
    turns, words = ami_meeting()
    return turns, synthesise(turns, MEETING_MS), words


@pytest.fixture
def meeting(ami, tmp_path, db_url):  # type: ignore[no-untyped-def]
    """The AMI meeting stored as one microphone's session, its audio kept."""
    turns, audio, words = ami
    sid = store_meeting(db_url, tmp_path / "audio", audio, lines_from_words(words))
    return db_url, sid, turns


def _fake(monkeypatch, faults: Faults | None = None, *, chunk_s: float = 1200,
          timeout_s: float = 30) -> FakeTranscriptions:
    fake = FakeTranscriptions(faults=faults or Faults())
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    monkeypatch.setenv("CAPTIOND_SPEAKERS_URL", fake.url)
    monkeypatch.setenv("CAPTIOND_SPEAKERS_CHUNK_S", str(chunk_s))
    monkeypatch.setenv("CAPTIOND_SPEAKERS_TIMEOUT_S", str(timeout_s))
    return fake


def _rows(db_url: str, sid: int) -> list[tuple]:
    store = Store(db_url)
    try:
        return [(r.id, r.item_id, r.audio_start_ms, r.audio_end_ms, r.text, r.speaker)
                for r in store.lines(sid)]
    finally:
        store.close()


def _score(db_url: str, sid: int, truth: list[Turn]) -> float:
    store = Store(db_url)
    try:
        found = [Turn(t.start_ms, t.end_ms, t.label) for t in store.speaker_turns(sid)]
        right, total = right_share(truth, store.lines(sid), mapping(truth, found))
    finally:
        store.close()
    return right / total


def test_ami_turns_give_the_right_speaker_for_95_percent_of_line_time(
        meeting, monkeypatch, capsys) -> None:
    """AMI reference turns as the service's answer: >= 95% of line time gets the right
    speaker; lines spanning a change are split; the cost is shown before and after; every
    request was valid for the model."""
    db_url, sid, truth = meeting
    before = _rows(db_url, sid)
    with _fake(monkeypatch) as fake:
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
    out = capsys.readouterr().out
    assert fake.violations == []
    [req] = fake.requests
    assert req.fields["model"] == "gpt-4o-transcribe-diarize"
    assert req.fields["response_format"] == "diarized_json"
    assert req.fields["chunking_strategy"] == "auto"
    assert "about $0.030" in out and "cost $0.030" in out
    after = _rows(db_url, sid)
    assert len(after) > len(before)  # some lines were split
    assert " ".join(r[4] for r in after).split() != []
    assert sorted(" ".join(r[4] for r in after).split()) == sorted(
        " ".join(r[4] for r in before).split())
    share = _score(db_url, sid, truth)
    print(f"AMI: share of line time with the right speaker {share:.3f}")
    assert share >= 0.95
    store = Store(db_url)
    assert store.resolve_session(sid).cost_usd == pytest.approx(0.03)
    store.close()


def test_a_person_keeps_one_label_across_chunks(meeting, monkeypatch, capsys) -> None:
    """30 s chunks (one AMI excerpt each): later chunks name earlier labels as known speakers
    with clips of 2-10 s, and the people of ES2003 (dev00, dev01) keep their labels into the
    second chunk; the share stays >= 95%."""
    db_url, sid, truth = meeting
    with _fake(monkeypatch, chunk_s=30) as fake:
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
    assert fake.violations == [] and len(fake.requests) == 10
    assert all(len(r.fields.get("known_speaker_names", [])) <= 4 for r in fake.requests)
    assert fake.requests[1].fields["known_speaker_names"]
    store = Store(db_url)
    turns = store.speaker_turns(sid)
    store.close()
    found = [Turn(t.start_ms, t.end_ms, t.label) for t in turns]
    names = mapping(truth, found)
    first = {names.get(t.label) for t in turns if t.chunk == 0} - {None}
    second_labels = {t.label for t in turns if t.chunk == 1}
    carried = {lab for lab in second_labels if names.get(lab) in first}
    assert carried and all(any(t.label == lab and t.chunk == 0 for t in turns)
                           for lab in carried)
    assert _score(db_url, sid, truth) >= 0.95


def test_rate_limits_server_errors_and_a_stall_are_retried(meeting, monkeypatch, capsys) -> None:
    """A stall past the timeout, a 429 with retry-after and a 500: retried, then labelled."""
    db_url, sid, truth = meeting
    faults = Faults(stall=1, stall_s=2.5, rate_limited=1, server_errors=1)
    with _fake(monkeypatch, faults, timeout_s=1.0) as fake:
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
    assert fake.received == 4 and fake.answered == 1
    assert _score(db_url, sid, truth) >= 0.95


def test_a_failing_service_changes_nothing_and_a_rerun_resumes(meeting, monkeypatch,
                                                              capsys) -> None:
    """The service goes down after two of ten chunks: the command fails naming the problem,
    every line is as it was, and the next run sends only the eight chunks left."""
    db_url, sid, truth = meeting
    before = _rows(db_url, sid)
    with _fake(monkeypatch, chunk_s=30) as fake:
        original = fake._handle

        def flaky(h):  # type: ignore[no-untyped-def]
            if fake.answered >= 2:
                fake.faults.always = 503
            original(h)

        fake._handle = flaky  # type: ignore[method-assign]
        assert cli.main(["speakers", str(sid), "--yes"]) != 0
        err = capsys.readouterr().err
        assert "HTTP 503" in err and "try again later" in err
        assert _rows(db_url, sid) == before
        store = Store(db_url)
        assert {t.chunk for t in store.speaker_turns(sid)} == {0, 1}
        store.close()
        fake.faults.always = None
        fake._handle = original  # type: ignore[method-assign]
        sent = len(fake.requests)
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
        assert len(fake.requests) - sent == 8
    assert _score(db_url, sid, truth) >= 0.95


def test_a_chunk_refused_for_size_names_the_setting(meeting, monkeypatch, capsys) -> None:
    """413 for a chunk: the error says to lower speakers.chunk_s; lines unchanged."""
    db_url, sid, _ = meeting
    before = _rows(db_url, sid)
    with _fake(monkeypatch, Faults(max_bytes=50_000)):
        assert cli.main(["speakers", str(sid), "--yes"]) != 0
    err = capsys.readouterr().err
    assert "413" in err and "speakers.chunk_s" in err
    assert _rows(db_url, sid) == before


def test_overlapping_and_out_of_range_segments_are_tamed(meeting, monkeypatch, capsys) -> None:
    """Segments that overlap, start before 0 or end after the audio: stored turns stay in
    their chunk and the labels are as good."""
    db_url, sid, truth = meeting
    with _fake(monkeypatch, Faults(junk_segments=True), chunk_s=100):
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
    store = Store(db_url)
    turns = store.speaker_turns(sid)
    store.close()
    assert all(t.chunk * 100_000 <= t.start_ms < t.end_ms <= (t.chunk + 1) * 100_000
               for t in turns)
    assert _score(db_url, sid, truth) >= 0.95


def test_the_key_never_reaches_logs_the_database_or_output(meeting, monkeypatch, capsys,
                                                          caplog, tmp_path) -> None:
    """A run that succeeds and one refused (wrong key): the key is in no log record, no
    output and no byte of the database."""
    db_url, sid, _ = meeting
    caplog.set_level(logging.DEBUG)
    with _fake(monkeypatch) as fake:
        assert cli.main(["speakers", str(sid), "--yes", "-v"]) == 0
        key = fake.key
        fake.key = "sk-another-key-entirely"
        assert cli.main(["speakers", str(sid), "--yes", "--fresh"]) != 0
    captured = capsys.readouterr()
    assert "401" in captured.err and "OPENAI_API_KEY" in captured.err
    text = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    assert key not in text
    for f in tmp_path.glob("captiond.db*"):
        assert key.encode() not in f.read_bytes()


def test_known_speakers_by_name_and_rename(meeting, monkeypatch, capsys, tmp_path) -> None:
    """`speakers add` refuses clips outside 2-10 s and keeps a good one; the service is told
    the name with its clip and the lines carry it; `speakers rename` names another label."""
    db_url, sid, truth = meeting
    who = max({t.speaker for t in truth},
              key=lambda p: sum(t.end_ms - t.start_ms for t in truth if t.speaker == p))
    freq = VOICES[voices(truth)[who]]
    n = np.arange(6 * KEEP_RATE)
    clip = tmp_path / "ann.wav"
    clip.write_bytes(wav_bytes((0.1 * np.sin(2 * np.pi * freq * n / KEEP_RATE)).astype(
        np.float32)))
    short = tmp_path / "short.wav"
    short.write_bytes(wav_bytes(np.full(KEEP_RATE, 0.1, np.float32)))
    assert cli.main(["speakers", "add", "Ann", str(short), "--db", db_url]) != 0
    assert "2 to 10 s" in capsys.readouterr().err
    assert cli.main(["speakers", "add", "Ann", str(clip), "--db", db_url]) == 0
    with _fake(monkeypatch) as fake:
        assert cli.main(["speakers", str(sid), "--yes", "--db", db_url]) == 0
    assert fake.requests[0].fields["known_speaker_names"] == ["Ann"]
    rows = Store(db_url).lines(sid)
    ann = [r for r in rows if r.speaker == "Ann"]
    assert ann and all(
        sum(t.end_ms - t.start_ms for t in truth if t.speaker == who
            and t.start_ms < r.audio_end_ms and t.end_ms > r.audio_start_ms) > 0 for r in ann)
    other = next(r.speaker for r in rows if r.speaker and r.speaker != "Ann")
    capsys.readouterr()
    assert cli.main(["speakers", "rename", str(sid), other, "Bob", "--db", db_url]) == 0
    assert "Bob" in {r.speaker for r in Store(db_url).lines(sid)}


def test_no_kept_audio_says_how_to_keep_it(db_url, monkeypatch, capsys) -> None:
    """A session without kept audio: the error names audio.keep, nothing is sent."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local")
    store.end_session(sid, audio_seconds=60)
    store.close()
    with _fake(monkeypatch) as fake:
        assert cli.main(["speakers", str(sid), "--yes", "--db", db_url]) != 0
    assert "audio.keep = true" in capsys.readouterr().err
    assert fake.requests == []


def test_paths_are_under_tests(tmp_path: Path) -> None:
    """The speaker tests read their AMI data from tests/data/speakers only."""
    from speakers_support import DATA

    assert DATA.parent.parent.name == "tests" and (DATA / "NOTE.md").is_file()


def test_speakers_auto_labels_a_transcribed_recording(fleurs_en, tmp_path, monkeypatch, db_url,
                                                      capsys) -> None:
    """speakers.auto with audio.keep: `transcribe` ends by labelling the session; with the
    service down it still succeeds, its lines unlabelled and the failure logged."""
    from speakers_support import write_wav

    from captiond.audio.sources import decode_file_chunks

    # The fake hears the speech's own harmonics as voices: enough to label every line.
    speech = np.concatenate(list(decode_file_chunks(fleurs_en[0], KEEP_RATE)))
    recording = tmp_path / "speech.wav"
    write_wav(recording, (0.9 * speech / np.abs(speech).max()).astype(np.float32))
    monkeypatch.setenv("CAPTIOND_AUDIO_KEEP", "true")
    monkeypatch.setenv("CAPTIOND_SPEAKERS_AUTO", "true")
    monkeypatch.setenv("CAPTIOND_ENGINE_NAME", "local")
    with _fake(monkeypatch) as fake:
        assert cli.main(["transcribe", str(recording), "--no-progress"]) == 0
        assert fake.answered == 1
        fake.faults.always = 500
        monkeypatch.setenv("CAPTIOND_SPEAKERS_TIMEOUT_S", "2")
        assert cli.main(["transcribe", str(recording), "--no-progress"]) == 0
    store = Store(db_url)
    (second, _), (first, _) = store.list_sessions()[:2]
    labelled = store.lines(first.id)
    assert labelled and all((r.speaker or "").startswith("Speaker ") for r in labelled)
    assert store.speaker_turns(first.id)
    assert {r.speaker for r in store.lines(second.id)} == {None}
    assert store.lines(second.id)
    store.close()
    assert "speakers.auto_failed" in capsys.readouterr().err


def test_a_new_chunk_size_starts_over(meeting, monkeypatch, capsys) -> None:
    """Turns stored for 30 s chunks are not mixed with 100 s chunks: a run with a new
    speakers.chunk_s sends every chunk again; the same size sends nothing."""
    db_url, sid, truth = meeting
    with _fake(monkeypatch, chunk_s=30) as fake:
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
        assert fake.answered == 10
        monkeypatch.setenv("CAPTIOND_SPEAKERS_CHUNK_S", "100")
        assert cli.main(["speakers", str(sid), "--yes"]) == 0
        assert fake.answered == 13
    store = Store(db_url)
    assert {t.chunk for t in store.speaker_turns(sid)} == {0, 1, 2}
    store.close()
    assert _score(db_url, sid, truth) >= 0.95


def test_a_two_sided_call_keeps_its_me_them_labels(db_url, monkeypatch, capsys) -> None:
    """A mic+system session is not sent: its lines are labelled by channel already, and
    `speakers rename` gives Them a name."""
    from captiond.events import Line, LineStatus

    store = Store.open(db_url)
    sid = store.begin_session(source="mic + system", engine="local",
                              meta={"channels": ["mic", "system"]})
    store.write_lines(sid, [Line(item_id="a", previous_item_id=None, seq=0, audio_start_ms=0,
                                 audio_end_ms=900, text="hello", status=LineStatus.FINAL,
                                 channel="system", speaker="Them")])
    store.end_session(sid, audio_seconds=1)
    store.close()
    with _fake(monkeypatch) as fake:
        assert cli.main(["speakers", str(sid), "--yes"]) != 0
    assert "already labelled by channel" in capsys.readouterr().err
    assert fake.received == 0
    assert cli.main(["speakers", "rename", str(sid), "Them", "Carol"]) == 0
    assert [r.speaker for r in Store(db_url).lines(sid)] == ["Carol"]
