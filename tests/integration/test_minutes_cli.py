"""`captiond minutes` and the minutes exports on a real store: stored with the session,
regenerated only when asked, the key never in the logs, the database or a page."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from fakes.openai_responses import FakeResponses
from minutes_support import KEY, SAID

from captiond import cli
from captiond.api import handle_api
from captiond.events import Line, LineStatus
from captiond.transcript.store import Store


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The command modules present on this branch; an isolated config and data home."""
    present = tuple(m for m in cli.COMMAND_MODULES if importlib.util.find_spec(m) is not None)
    assert "captiond.commands.minutes" in present
    monkeypatch.setattr(cli, "COMMAND_MODULES", present)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


@pytest.fixture
def db(db_url: str) -> str:
    """A completed session of the scripted meeting, speakers named."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="openai", language="en", title="Design")
    store.write_lines(sid, [
        Line(item_id=f"it-{i}", previous_item_id=None, seq=i, audio_start_ms=i * 5000,
             audio_end_ms=i * 5000 + 4500, text=text, status=LineStatus.FINAL, speaker=who)
        for i, (who, text) in enumerate(SAID)])
    store.end_session(sid)
    store.close()
    return db_url


def _no_key_anywhere(db_url: str, *texts: str) -> None:
    raw = Path(db_url.removeprefix("sqlite:///")).read_bytes()
    assert KEY.encode() not in raw
    for text in texts:
        assert KEY not in text


def test_minutes_stored_and_regenerated_only_when_asked(
        db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The first `captiond minutes` asks the model and stores the result with its cost; the
    next shows the stored minutes without asking; --regenerate asks again; the exports and
    the API serve the stored minutes."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("CAPTIOND_MINUTES_ENGINE", "openai")
    with FakeResponses(KEY) as fake:
        monkeypatch.setenv("CAPTIOND_MINUTES_URL", fake.url)
        assert cli.main(["minutes", "last", "--db", db]) == 0
        first = capsys.readouterr()
        assert "minutes of session 1 written (openai, gpt-5-mini, $0.0" in first.err
        assert "## Decisions" in first.out and "[00:00:15]" in first.out
        assert cli.main(["minutes", "last", "--db", db]) == 0
        again = capsys.readouterr()
        assert "stored (openai" in again.err and len(fake.requests) == 1
        assert cli.main(["minutes", "1", "--regenerate", "--db", db]) == 0
        assert "written again" in capsys.readouterr().err and len(fake.requests) == 2
    assert cli.main(["export", "last", "--db", db, "--format", "minutes"]) == 0
    md = capsys.readouterr().out
    assert "_Minutes written by gpt-5-mini in en" in md and "cost $0.0" in md
    assert "- [ ] **Ann**: send the drawings round by Friday. (due: _Friday_) [00:00:20]" in md
    assert cli.main(["export", "last", "--db", db, "--format", "minutes-json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "captiond-minutes" and data["source"] == "openai"
    assert data["actions"][0]["cites"] == [{"line": 4, "start_ms": 20000, "at": "00:00:20"}]
    store = Store.open(db)
    try:
        code, body = handle_api(store, "/api/sessions/last/minutes")
    finally:
        store.close()
    assert code == 200 and body["stored"] and body["minutes"]["source"] == "openai"
    _no_key_anywhere(db, first.out, first.err, again.err, md, json.dumps(body))


def test_failed_model_stores_offline_minutes_without_the_key(
        db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A rejected key whose error repeats it: offline minutes are stored, and the key is in
    no log line, no stored note and no exported page."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("CAPTIOND_MINUTES_ENGINE", "openai")
    with FakeResponses(KEY, ["401"]) as fake:
        monkeypatch.setenv("CAPTIOND_MINUTES_URL", fake.url)
        assert cli.main(["minutes", "last", "--db", db]) == 0
    out = capsys.readouterr()
    assert "written (offline)" in out.err and "HTTP 401" in out.err
    assert "<redacted>" in out.err
    assert cli.main(["export", "last", "--db", db, "--format", "minutes"]) == 0
    md = capsys.readouterr().out
    assert "Offline minutes: gpt-5-mini gave no usable minutes: HTTP 401" in md
    assert "we'll go with the rubber buttons" in md  # the rules' decision, nothing lost
    _no_key_anywhere(db, out.out, out.err, md)


def test_export_without_stored_minutes_is_offline(db: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`export --format minutes-json` of a session with no stored minutes makes offline ones
    (and stores nothing)."""
    assert cli.main(["export", "last", "--db", db, "--format", "minutes-json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "offline"
    assert [a["task"] for a in data["actions"]] == ["send the drawings round",
                                                    "ask the supplier about the kinetic battery"]
    assert [a["owner"] for a in data["actions"]] == ["Ann", "Cat"]
    store = Store.open(db)
    try:
        assert store.minutes(1) is None
    finally:
        store.close()


def test_minutes_written_when_a_session_ends(fleurs_en: list[Path], db_url: str,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`captiond transcribe` of a real clip: when its session completes, the model's minutes
    are stored with it (minutes.on_session_end), citing its lines."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("CAPTIOND_MINUTES_ENGINE", "openai")
    with FakeResponses(KEY) as fake:
        monkeypatch.setenv("CAPTIOND_MINUTES_URL", fake.url)
        assert cli.main(["transcribe", str(fleurs_en[3]), "--db", db_url,
                         "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert fake.problems == [] and len(fake.requests) == 1
    store = Store.open(db_url)
    try:
        row = store.minutes(1)
    finally:
        store.close()
    assert row is not None and row.source == "openai" and row.cost_usd > 0
    assert row.content["topics"][0]["cites"][0]["line"] == 0
    assert KEY not in err


def test_minutes_settings_apply_on_reload() -> None:
    """minutes.* edited on a running daemon apply at once (read when a session ends)."""
    from captiond.reload import Running, decide

    for name in ("minutes.engine", "minutes.model", "minutes.max_cost_usd"):
        assert decide(name, Running(session=True)) == "live"
