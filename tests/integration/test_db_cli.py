"""The database commands through the real CLI entry point: search, rename, delete, prune."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path

import pytest

from captiond import cli
from captiond.events import Line, LineStatus
from captiond.transcript.store import Store


@pytest.fixture(autouse=True)
def only_database_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The CLI as users get it, limited to the commands under test (the others load engines).
    monkeypatch.setattr(
        cli, "COMMAND_MODULES", ("captiond.commands.browse", "captiond.commands.db")
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _fill(url: str) -> tuple[int, int]:
    store = Store.open(url)
    old = store.begin_session(source="mic", engine="test", title="Budget sync")
    new = store.begin_session(source="mic", engine="test", title="Standup")
    for sid, texts in (
        (old, ["hello all", "the budget review is late"]),
        (new, ["no budget talk"]),
    ):
        store.write_lines(
            sid,
            [
                Line(
                    item_id=f"i{n}",
                    previous_item_id=None,
                    seq=n,
                    audio_start_ms=n * 10_000,
                    audio_end_ms=n * 10_000 + 3_000,
                    text=t,
                    status=LineStatus.FINAL,
                )
                for n, t in enumerate(texts)
            ],
        )
        store.end_session(sid)
    store.update_session(old, started_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=100))
    store.close()
    return old, new


def run(url: str, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main([*argv[:1], "--db", url, *argv[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_search_prints_ranked_hits_and_a_working_show_hint(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hits show session title, time, highlighted snippet and a show command that works."""
    old, _ = _fill(db_url)
    code, out, _ = run(db_url, "search", "budget review", capsys=capsys)
    assert code == 0
    assert "1 hit for 'budget review'" in out
    assert f"#{old} Budget sync" in out
    assert "the **budget** **review** is late" in out
    hint = next(line for line in out.splitlines() if "captiond show" in line)
    assert hint.strip() == f"→ captiond show {old} --at 00:00:10"
    code, out, _ = run(db_url, *hint.split()[2:], capsys=capsys)
    assert code == 0
    assert out.splitlines()[1] == "[00:00:10] the budget review is late"


def test_search_json_filters_and_no_hits(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives the hits as data; filters apply; no hits exits 1."""
    old, new = _fill(db_url)
    code, out, _ = run(db_url, "search", "budget", "--json", capsys=capsys)
    data = json.loads(out)
    assert code == 0 and {h["session"] for h in data["hits"]} == {old, new}
    assert data["hits"][0]["show"].startswith("captiond show ")
    today = dt.date.today().isoformat()
    code, out, _ = run(db_url, "search", "budget", "--json", "--since", today, capsys=capsys)
    assert [h["session"] for h in json.loads(out)["hits"]] == [new]
    code, out, _ = run(db_url, "search", "budget", "--session", str(old), capsys=capsys)
    assert f"#{new} " not in out and f"#{old} " in out
    code, out, _ = run(db_url, "search", "nothing-like-this", capsys=capsys)
    assert code == 1 and "no lines match" in out


def test_search_syntax_error_is_one_clear_line(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad query prints a one-line message with the fix, no traceback."""
    _fill(db_url)
    code, _, err = run(db_url, "search", '"budget review', capsys=capsys)
    assert code == 1
    assert err.startswith("captiond: a closing quote is missing")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_search_on_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The same command works against PostgreSQL."""
    old, _ = _fill(pg_url)
    code, out, _ = run(pg_url, "search", '"budget review"', capsys=capsys)
    assert code == 0 and f"#{old} Budget sync" in out and "**budget** **review**" in out


def test_rename(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """rename sets the title sessions and search show; a too long title is refused."""
    old, _ = _fill(db_url)
    assert run(db_url, "rename", str(old), "Weekly planning", capsys=capsys)[0] == 0
    code, out, _ = run(db_url, "sessions", "--json", capsys=capsys)
    assert {s["id"]: s["title"] for s in json.loads(out)}[old] == "Weekly planning"
    code, out, err = run(db_url, "rename", str(old), "x" * 201, capsys=capsys)
    assert code == 1 and "at most 200" in err


class _Terminal(io.StringIO):
    """Typed answers on a terminal."""

    def isatty(self) -> bool:
        return True


def test_delete_asks_and_refuses_without_a_terminal(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """delete needs --yes or a 'y' on a terminal; the session and its lines then vanish."""
    old, new = _fill(db_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(db_url, "delete", str(old), capsys=capsys)
    assert code == 1 and "--yes" in err
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    code, out, err = run(db_url, "delete", str(old), capsys=capsys)
    assert code == 1 and "nothing deleted" in out and "[y/N]" in err
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    assert run(db_url, "delete", str(old), capsys=capsys)[0] == 0
    code, out, _ = run(db_url, "search", "budget", "--json", capsys=capsys)
    assert [h["session"] for h in json.loads(out)["hits"]] == [new]
    code, _, err = run(db_url, "delete", str(old), "--yes", capsys=capsys)
    assert code == 1 and f"no session {old}" in err


def test_delete_refuses_a_session_being_recorded(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running session of a live daemon (this process) is not deleted."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="test")
    store.close()
    code, _, err = run(db_url, "delete", str(sid), "--yes", capsys=capsys)
    assert code == 1 and "still being recorded" in err


def test_prune_deletes_only_old_finished_sessions(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prune --older-than 90d removes the 100-day-old session, keeps the new one."""
    _, new = _fill(db_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(db_url, "prune", "--older-than", "90d", capsys=capsys)
    assert code == 1 and "--yes" in err and "delete 1 session: session" in err
    code, out, _ = run(db_url, "prune", "--older-than", "90d", "--yes", capsys=capsys)
    assert code == 0 and "deleted 1 session" in out
    code, out, _ = run(db_url, "sessions", "--json", capsys=capsys)
    assert [s["id"] for s in json.loads(out)] == [new]
    code, out, _ = run(db_url, "prune", "--older-than", "90d", "--yes", capsys=capsys)
    assert code == 0 and "no sessions to prune" in out
    with pytest.raises(SystemExit) as exc:
        run(db_url, "prune", "--older-than", "90 years", capsys=capsys)
    assert exc.value.code == 2
    assert "not an age" in capsys.readouterr().err


def test_missing_postgresql_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL URL without psycopg installed says which extra to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra has
    assert cli.main(["sessions", "--db", "postgresql+psycopg://me:secret@db.example/c"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'captiond[postgresql]'" in err
    assert "secret" not in err and "No module named" not in err


def test_unsupported_database_lists_the_supported_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A MySQL URL is refused as unsupported, naming SQLite and PostgreSQL."""
    assert cli.main(["sessions", "--db", "mysql://me:secret@db.example/c"]) == 1
    err = capsys.readouterr().err
    assert "mysql is not supported" in err
    assert "sqlite:///PATH" in err and "postgresql+psycopg://" in err
    assert "MySQLdb" not in err and "secret" not in err
