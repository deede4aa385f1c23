"""The speaker of every stored line, everywhere a line goes: labels and splits written in one
transaction, rename, show, search --speaker, the JSON API, SRT, WebVTT, Markdown minutes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from captiond import cli
from captiond.api import handle_api
from captiond.events import Line, LineStatus, Word
from captiond.speakers.attribute import LineIn, Turn, attribute
from captiond.speakers.attribute import Word as AWord
from captiond.transcript.store import Store


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    """An isolated config/data home, and the CLI of the command modules on this branch."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    present = tuple(m for m in cli.COMMAND_MODULES if importlib.util.find_spec(m) is not None)
    monkeypatch.setattr(cli, "COMMAND_MODULES", present)


def _words(text: str, start: int, end: int) -> tuple[Word, ...]:
    tokens = text.split()
    step = (end - start) // len(tokens)
    return tuple(Word(f" {t}", start + k * step, start + (k + 1) * step - 10)
                 for k, t in enumerate(tokens))


def _line(i: int, start: int, end: int, text: str, words: bool = True) -> Line:
    return Line(item_id=f"it-{i}", previous_item_id=f"it-{i - 1}" if i else None, seq=i,
                audio_start_ms=start, audio_end_ms=end, text=text, status=LineStatus.FINAL,
                words=_words(text, start, end) if words else (), engine="local",
                language="en")


@pytest.fixture
def labelled(db_url: str) -> tuple[str, int]:
    """One microphone in a room: Ann, then a line where Ann hands over to Bob, then Bob."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local", language="en", title="Room")
    store.write_lines(sid, [
        _line(0, 0, 4_000, "we decided to ship on friday"),
        _line(1, 4_200, 10_000, "ann agrees with that plan and the budget is approved now"),
        _line(2, 10_500, 14_000, "bob will send the notes", words=False),
    ])
    turns = [Turn(0, 7_000, "Ann"), Turn(7_100, 15_000, "Bob")]
    rows = store.lines(sid)
    ins = [LineIn(r.id, r.audio_start_ms, r.audio_end_ms, r.text,
                  tuple(AWord(w["start_ms"], w["end_ms"], w["text"]) for w in (r.words or [])))
           for r in rows]
    changes = [(lab.key, lab.pieces) for lab in attribute(turns, ins)]
    assert store.apply_speakers(sid, changes) == 1  # the handover line was split
    store.end_session(sid)
    store.close()
    return db_url, sid


def test_labels_and_split_are_stored(labelled) -> None:
    """Each line has the speaker covering most of it; the handover line is two lines, cut at
    the change by word times, its words kept with each part; search still finds both parts."""
    db_url, sid = labelled
    store = Store(db_url)
    rows = store.lines(sid)
    assert [(r.speaker, r.text.split()[0]) for r in rows] == [
        ("Ann", "we"), ("Ann", "ann"), ("Bob", "the"), ("Bob", "bob")]
    first, second = rows[1], rows[2]
    assert first.audio_end_ms == second.audio_start_ms
    assert " ".join([first.text, second.text]) == (
        "ann agrees with that plan and the budget is approved now")
    # Each word goes to the side of the change (7.1 s) that holds its middle.
    assert all((w["start_ms"] + w["end_ms"]) / 2 < 7_100 for w in first.words)
    assert all((w["start_ms"] + w["end_ms"]) / 2 >= 7_100 for w in second.words)
    assert second.item_id == "it-1~2" and second.previous_item_id == "it-1"
    from captiond.transcript.search import search

    assert [h.speaker for h in search(store, "budget")] == ["Bob"]
    store.close()


def test_rename_changes_every_line_of_a_label(labelled, capsys) -> None:
    """`speakers rename SESSION Bob Robert` relabels Bob's lines only."""
    db_url, sid = labelled
    store = Store(db_url)
    assert store.rename_speaker(sid, "Bob", "Robert") == 2
    assert [r.speaker for r in store.lines(sid)] == ["Ann", "Ann", "Robert", "Robert"]
    store.close()


def test_speaker_goes_everywhere_a_line_goes(labelled, tmp_path, capsys) -> None:
    """show prefixes the name; search --speaker filters; the API, JSON, SRT (`Ann: `), WebVTT
    (`<v Ann>`) and the minutes (who said what) all carry it, in a one-microphone session."""
    db_url, sid = labelled
    assert cli.main(["show", str(sid), "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "Ann: we decided" in out and "Bob: bob will send" in out
    assert cli.main(["search", "notes", "--speaker", "ann", "--db", db_url]) == 1
    assert "no lines match" in capsys.readouterr().out
    assert cli.main(["search", "notes", "--speaker", "Bob", "--db", db_url]) == 0
    assert "notes" in capsys.readouterr().out

    store = Store(db_url)
    code, body = handle_api(store, f"/api/sessions/{sid}/lines", "")
    store.close()
    assert code == 200 and [ln["speaker"] for ln in body["lines"]] == ["Ann", "Ann", "Bob", "Bob"]

    assert cli.main(["export", str(sid), "--db", db_url, "--format", "srt"]) == 0
    srt = capsys.readouterr().out
    assert "Ann: we decided" in srt and "Bob: bob will" in srt
    assert cli.main(["export", str(sid), "--db", db_url, "--format", "vtt"]) == 0
    vtt = capsys.readouterr().out
    assert "<v Ann>we decided" in vtt and "<v Bob>" in vtt
    assert cli.main(["export", str(sid), "--db", db_url, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "**Ann:** we decided" in md and "| Speakers | Ann, Bob |" in md
    assert cli.main(["export", str(sid), "--db", db_url, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [ln["speaker"] for ln in doc["tracks"]["original"]] == ["Ann", "Ann", "Bob", "Bob"]


def test_unlabelled_session_exports_no_names(db_url, capsys) -> None:
    """Lines without speakers give plain SRT cues (no empty `: ` prefix)."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local")
    store.write_lines(sid, [_line(0, 0, 2_000, "hello there")])
    store.close()
    assert cli.main(["export", str(sid), "--db", db_url, "--format", "srt"]) == 0
    assert "\nhello there\n" in capsys.readouterr().out
