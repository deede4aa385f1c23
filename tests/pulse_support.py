"""A private PulseAudio server for the system-audio tests.

The ``pulse`` fixture starts ``pulseaudio`` with its own runtime directory (so it never
touches the desktop's server), no default modules (``-n``), the native protocol on a socket
under ``tmp_path`` and no idle exit; it works as an ordinary user and as root (``--system=false``
keeps it a per-user daemon; root gets a warning, not a refusal). ``PULSE_SERVER`` points at it
for the test and for every child process; the server is stopped afterwards, whatever happened.

Import into a test module: ``from pulse_support import pulse, PulseServer``.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from needs import need_programs

#: How long the server may take to accept connections.
START_TIMEOUT_S = 10.0
#: How long it gets to exit on SIGTERM before it is killed.
STOP_TIMEOUT_S = 5.0
#: How long one pactl call may take.
PACTL_TIMEOUT_S = 5.0


class PulseServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        runtime = root / "runtime"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket = runtime / "native"
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_RUNTIME_PATH": str(runtime / "pulse"),
            "PULSE_STATE_PATH": str(root / "state"),
            "PULSE_CONFIG_PATH": str(root / "config"),
            "PULSE_SERVER": f"unix:{self.socket}",
            "HOME": str(root),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "pulseaudio.log"

    def start(self) -> None:
        need_programs("pulseaudio", "pactl", "parec", "paplay",
                      install="apt-get install pulseaudio pulseaudio-utils")
        cmd = [
            "pulseaudio",
            "--daemonize=no",
            "--system=false",
            "--exit-idle-time=-1",
            "--use-pid-file=false",
            "--disable-shm=yes",
            "--log-target=stderr",
            "-n",
            "-L",
            f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"pulseaudio exited: {self.log.read_text(errors='replace')[-2000:]}")
            done = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=PACTL_TIMEOUT_S)
            if done.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"pulseaudio did not start in {START_TIMEOUT_S} s: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pactl(self, *args: str) -> str:
        done = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=PACTL_TIMEOUT_S
        )
        assert done.returncode == 0, f"pactl {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def null_sink(self, name: str, *, rate: int = 48_000, channels: int = 2) -> int:
        """A virtual output; what is played into it comes out of ``NAME.monitor``."""
        return int(
            self.pactl(
                "load-module", "module-null-sink", f"sink_name={name}", f"rate={rate}",
                f"channels={channels}", f"sink_properties=device.description={name}",
            )
        )

    def virtual_mic(self, name: str, *, rate: int = 48_000) -> int:
        """A capture source (not a monitor) named ``name``: whatever is played into the sink
        ``name + '_in'`` is "spoken into" it (a null sink's monitor remapped to a source)."""
        self.null_sink(f"{name}_in", rate=rate, channels=1)
        return int(
            self.pactl(
                "load-module", "module-remap-source", f"master={name}_in.monitor",
                f"source_name={name}", "channels=1", f"source_properties=device.description={name}",
            )
        )

    def unload(self, module: int) -> None:
        self.pactl("unload-module", str(module))

    def play(self, path: Path, sink: str) -> subprocess.Popen[bytes]:
        """Starts ``paplay`` of a file into ``sink`` (wait() on it to know it is done)."""
        return subprocess.Popen(
            ["paplay", f"--device={sink}", str(path)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def capture_clients(self) -> list[str]:
        """Recording streams connected to the server (``parec`` instances)."""
        return [ln for ln in self.pactl("list", "short", "source-outputs").splitlines() if ln.strip()]


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A private, running PulseAudio server; ``PULSE_SERVER`` points at it for this test."""
    server = PulseServer(tmp_path / "pulse")
    try:
        server.start()
        monkeypatch.setenv("PULSE_SERVER", server.env["PULSE_SERVER"])
        yield server
    finally:
        server.stop()


def write_tone(
    path: Path, *, freq: float, rate: int, seconds: float, channels: int = 2, left_only: bool = False
) -> None:
    """A sine tone as a PCM16 WAV (on the left channel only, if asked)."""
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * math.pi * freq * t)
    frames = np.zeros((len(t), channels))
    frames[:, 0] = tone
    if channels > 1 and not left_only:
        frames[:, 1:] = tone[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((frames * 32767).astype("<i2").tobytes())
