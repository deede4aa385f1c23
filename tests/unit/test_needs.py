"""A test whose program, library or server is absent skips with the reason, and fails under CI."""

from __future__ import annotations

import pytest
from needs import missing, need_programs


@pytest.mark.parametrize("ci", ["", "false"])
def test_absent_piece_skips_with_reason_off_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off CI an absent program skips the test, naming it and the package that brings it."""
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"needs no-such-tool-xyz \(apt-get install x"):
        need_programs("sh", "no-such-tool-xyz", install="apt-get install x")


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_absent_piece_fails_under_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI an absent piece fails the test: a skip there would pass a test that never ran."""
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="needs PortAudio"):
        missing("needs PortAudio")


def test_present_programs_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Programs on PATH need nothing: the test goes on."""
    monkeypatch.setenv("CI", "true")
    need_programs("sh", install="apt-get install dash")
