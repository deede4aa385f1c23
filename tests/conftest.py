"""Shared test fixtures: FLEURS clips, WER, a temporary store. No model hub: HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# Minutes at session end stay offline in tests (a test with an API key never reaches the
# real Responses API); the minutes tests ask for the model against a fake on 127.0.0.1.
os.environ.setdefault("CAPTIOND_MINUTES_ENGINE", "offline")

ROOT = Path(__file__).resolve().parents[1]
#: The speech the tests use, in the repository (licences and sources: tests/data/README.md).
DATA = ROOT / "tests" / "data"
# The benchmark kit holds the corpus paths and how WER is counted; tests share them. Appended,
# so no benchmark script shadows a test module.
sys.path.append(str(ROOT / "benchmarks"))

from kit import (  # noqa: E402
    AMI,
    EN_CLIPS,
    FLEURS,
    assemble_whisper_base,
    normalise,
    reference,
    shares_word,
)

__all__ = ["AMI", "DATA", "EN_CLIPS", "FLEURS", "ROOT", "assemble_whisper_base", "normalise", "reference",
           "shares_word"]


@pytest.fixture(scope="session")
def fleurs_en() -> list[Path]:
    missing = [c for c in EN_CLIPS if not c.exists()]
    if missing:
        pytest.fail(f"FLEURS clips missing: {missing} (they ship in tests/data/fleurs: "
                    "restore them with git checkout -- tests/data)")
    return EN_CLIPS


@pytest.fixture(scope="session")
def whisper_base(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multilingual Whisper model directory: the stand-in for `local.model = base`.

    Whisper base from the `[dev]` extra (:func:`assemble_whisper_base`), joined once into
    pytest's cache folder (and checked against its digest every session), or into a temporary
    folder when the cache is off (`-p no:cacheprovider`)."""
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("whisper-base") if cache else tmp_path_factory.mktemp("whisper-base")
    try:
        return assemble_whisper_base(folder)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'captiond.db'}"

# Real SQLite and PostgreSQL fixtures for the transcript-database tests.
pytest_plugins = ["db_support"]
# A private PulseAudio server for the system-audio tests.
pytest_plugins += ["pulse_support"]


#: Test tiers, one folder each under tests/ (the rule for which file goes where:
#: docs/development-tests.md). Each test gets its folder's marker: ``pytest -m unit``.
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier, from the folder it sits in."""
    tests = Path(__file__).resolve().parent
    for item in items:
        try:
            tier = item.path.resolve().relative_to(tests).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
