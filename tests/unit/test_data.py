"""The tests carry their own speech: everything they read is under tests/data, with its licence."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import AMI, DATA, EN_CLIPS, FLEURS

TESTS = Path(__file__).resolve().parent
while TESTS.name != "tests":
    TESTS = TESTS.parent

#: A path to the folder that sits beside a checkout on the project's own machines
#: (``../shared``, ``/shared/``, or ``"shared"`` as a path part), which a fresh clone lacks.
OUTSIDE = re.compile(r"""\.\./shared\b|/shared/|["']shared["']""")


def test_no_test_file_names_the_folder_beside_the_checkout() -> None:
    """No file under tests/ points at ../shared: a fresh clone has nothing beside it."""
    offenders = []
    for path in sorted(TESTS.rglob("*")):
        if not path.is_file() or path == Path(__file__).resolve() or DATA in path.parents:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # compiled or binary files hold no paths anyone wrote
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(TESTS.parent)}:{number}: {line.strip()}")
    assert not offenders, "use the copies under tests/data (conftest's DATA, FLEURS, AMI):\n" + \
        "\n".join(offenders)


def test_speech_ships_with_references_and_licences() -> None:
    """Every FLEURS clip has its transcript, the AMI excerpts their turns, each folder a LICENSE."""
    assert all(c.is_file() and c.with_suffix(".txt").is_file() for c in EN_CLIPS)
    assert all(c.with_suffix(".txt").is_file() for c in FLEURS.glob("*.ogg"))
    assert len(list(AMI.glob("*.flac"))) == 11 and (AMI / "reference.rttm").is_file()
    for words in AMI.glob("*.words.tsv"):
        assert words.with_name(words.name.replace(".words.tsv", ".turns.txt")).is_file()
    assert (DATA / "README.md").is_file()
    assert (FLEURS / "LICENSE").is_file() and (AMI / "LICENSE").is_file()
