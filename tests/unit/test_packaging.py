"""The README's quick start and CI agree: users install without test tools; CI runs the
README's test command verbatim, and that command brings the test extras itself."""

from __future__ import annotations

import re

from conftest import ROOT


def _quick_start() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quick start"):]
    blocks = re.findall(r"```\n(.*?)\n```", section, re.S)
    return blocks[0].strip(), blocks[1].strip()


def test_first_command_installs_without_test_extras() -> None:
    """The quick start's first command installs captiond without [dev] and runs it."""
    first, _ = _quick_start()
    assert "pip install ." in first and "[dev]" not in first, first
    assert first.endswith("captiond run"), first


def test_ci_runs_the_readme_test_command_which_installs_the_test_extras() -> None:
    """The test-command block installs [dev] and runs pytest; .ci/run installs nothing else."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    command = block.replace("```", "").strip()
    assert command == _quick_start()[1]
    assert "'.[dev]'" in command and "pytest" in command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "[dev]" not in ci and "<!-- test-command -->" in ci


def test_ci_apt_packages_cover_a_bare_debian_image() -> None:
    """A bare Debian image lacks the venv module and git; CI installs both."""
    lines = (ROOT / ".ci" / "apt-packages").read_text().splitlines()
    packages = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {"python3-venv", "git", "ffmpeg"} <= packages
