"""What a test needs from the machine: a program, a library, a server. When it is absent the
test is skipped with the reason and the fix; under CI (``CI=true``) it fails instead, because CI
installs everything (``.ci/apt-packages``, ``.ci/services``) and a skip there would report a
test that never ran as a pass.

Import into a test module: ``from needs import need_programs, need_portaudio, missing``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

#: Debian's Chromium, the browser the overlay and WebVTT tests drive (never a downloaded one).
CHROMIUM = "/usr/bin/chromium"


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to 1, true or yes)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Skip the test with ``reason`` (what is missing and how to install it); fail under CI."""
    if in_ci():
        pytest.fail(f"{reason} [CI=true: a missing piece fails instead of skipping]",
                    pytrace=False)
    pytest.skip(reason)


def absent_programs(*names: str) -> list[str]:
    """The programs among ``names`` that are not on PATH."""
    return [name for name in names if shutil.which(name) is None]


def need_programs(*names: str, install: str) -> None:
    """The programs ``names`` on PATH, else :func:`missing` with ``install`` as the fix."""
    absent = absent_programs(*names)
    if absent:
        missing(f"needs {', '.join(absent)} ({install}; .ci/apt-packages has it)")


def portaudio_problem() -> str | None:
    """None when sounddevice loads PortAudio, else why not."""
    try:
        import sounddevice  # noqa: F401 - loading it is the check (it dlopens PortAudio)
    except OSError as exc:
        return (f"needs the PortAudio library ({exc}; apt-get install libportaudio2; "
                ".ci/apt-packages has it)")
    return None


def need_portaudio() -> None:
    """The PortAudio library (sounddevice's), else :func:`missing`."""
    problem = portaudio_problem()
    if problem:
        missing(problem)


def need_chromium() -> None:
    """Debian's Chromium at :data:`CHROMIUM`, else :func:`missing`."""
    if not Path(CHROMIUM).exists():
        missing(f"needs {CHROMIUM} (apt-get install chromium; .ci/apt-packages has it)")
