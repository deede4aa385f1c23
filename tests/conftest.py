"""Shared test fixtures: FLEURS clips, WER, a temporary store. No model hub: HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the repo; from a git worktree it sits further up.
FLEURS = next(
    (p / "shared" / "audio" / "fleurs" for p in ROOT.parents
     if (p / "shared" / "audio" / "fleurs").is_dir()),
    ROOT.parent / "shared" / "audio" / "fleurs",
)
EN_CLIPS = [FLEURS / f"fleurs-en-00{i}.ogg" for i in range(5)]


def normalise(text: str) -> str:
    """Lowercase, no punctuation: how WER is counted everywhere in captiond."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def reference(clip: Path) -> str:
    return normalise(clip.with_suffix(".txt").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def fleurs_en() -> list[Path]:
    missing = [c for c in EN_CLIPS if not c.exists()]
    if missing:
        pytest.fail(f"FLEURS clips missing: {missing} (../shared/audio/fleurs must sit beside the repo)")
    return EN_CLIPS


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'captiond.db'}"

# Real SQLite and PostgreSQL fixtures for the transcript-database tests.
pytest_plugins = ["db_support"]
# A private PulseAudio server for the system-audio tests.
pytest_plugins += ["pulse_support"]
