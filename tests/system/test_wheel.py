"""The package as users install it: a wheel in a fresh venv (not editable), run from a folder
outside the checkout. A module missing from the wheel fails here, not on a user's machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import EN_CLIPS, ROOT

pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    print(f"$ {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}")
    print(proc.stdout + proc.stderr)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the built wheel; the dependencies come from the test venv, after it."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A clean copy of the sources: a build/ folder left in the checkout would hide a package
    # missing from the discovery.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks", "test-artifacts",
    ))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next((tmp / "dist").glob("captiond-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
    ).strip())
    # The dependencies, already installed in the test venv, as a plain path after the wheel's
    # own site-packages (a plain path line does not run the editable install's hook).
    (site / "zz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_wheel_runs_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    """A wheel install transcribes, runs a file, exports and installs the unit outside the checkout."""
    clip = EN_CLIPS[0]
    work = tmp_path / "elsewhere"
    work.mkdir()
    home = tmp_path / "home"
    env = {
        "PATH": f"{installed / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "HF_HUB_OFFLINE": "1",
        "LANG": "C.UTF-8",
    }
    (tmp_path / "run").mkdir(mode=0o700)
    captiond = str(installed / "bin" / "captiond")
    where = subprocess.check_output(
        [str(installed / "bin" / "python"), "-c", "import captiond; print(captiond.__file__)"],
        cwd=work, env=env, text=True,
    )
    assert where.startswith(str(installed)), where  # the wheel, not the checkout
    out = _run([captiond, "transcribe", str(clip), "--no-progress"], cwd=work, env=env)
    assert "session 1 saved" in out
    out = _run([captiond, "run", "--source", f"file:{clip}", "--fast", "--engine", "local"],
               cwd=work, env=env)
    out = _run([captiond, "export", "last", "-f", "srt", "-o", str(work / "t.srt")], cwd=work, env=env)
    assert "-->" in (work / "t.srt").read_text()
    out = _run([captiond, "install-service"], cwd=work, env=env)
    unit = home / ".config/systemd/user/captiond.service"
    assert f"ExecStart={captiond} run" in unit.read_text(), unit.read_text()
    assert "PYTHONPATH" not in unit.read_text()  # installed, not a checkout
