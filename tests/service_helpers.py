"""Running the real daemon as a subprocess, the way systemd does: a notify socket, signals,
stdout/stderr read line by line with the time each line arrived."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Longest a test waits for the daemon to load the model and become ready (s).
READY_TIMEOUT_S = 90.0
#: Longest a test waits for a clean shutdown after SIGTERM (s).
EXIT_TIMEOUT_S = 60.0


def decode_16k(path: Path) -> np.ndarray:
    """A recording as mono float32 at 16 kHz."""
    import av

    out = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def last_speech_end_s(samples: np.ndarray, rate: int = 16_000) -> float:
    """Where the last word ends: the last 20 ms frame above 5 % of the loudest frame."""
    hop = rate // 50
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > rms.max() * 0.05)[0]
    return float((loud[-1] + 1) * hop / rate)


def daemon_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a daemon under test: its own runtime dir, no stray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTIOND_", "NOTIFY_", "WATCHDOG_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        XDG_RUNTIME_DIR=str(tmp / "run"),
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class NotifySocket:
    """A bound unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout_s: float) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                for when, fields in self.messages:
                    if key in fields:
                        return when, fields
            time.sleep(0.02)
        raise AssertionError(f"no {key} notification within {timeout_s} s: {self.messages}")

    def all(self, key: str) -> list[str]:
        with self._lock:
            return [f[key] for _, f in self.messages if key in f]

    def close(self) -> None:
        self.sock.close()


@dataclass
class DaemonProcess:
    """A ``captiond run`` subprocess with its output lines timestamped as they arrive."""

    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] = field(init=False)
    stdout: list[tuple[float, str]] = field(default_factory=list)
    stderr: list[tuple[float, str]] = field(default_factory=list)
    #: Give the daemon a pipe on stdin (for ``--source stdin``), fed with :meth:`feed`.
    stdin_pipe: bool = False

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "captiond", *self.args],
            env=self.env,
            cwd=str(ROOT),
            stdin=subprocess.PIPE if self.stdin_pipe else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream, into: list[tuple[float, str]]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    def wait_stderr(self, needle: str, timeout_s: float, after: int = 0) -> str:
        """The first stderr line (from index ``after``) containing ``needle``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _, line in self.stderr[after:]:
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the readers catch up once more
                for _, line in self.stderr[after:]:
                    if needle in line:
                        return line
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {needle!r}:\n"
                                     + self.stderr_text())
            time.sleep(0.02)
        raise AssertionError(f"no {needle!r} on stderr within {timeout_s} s:\n" + self.stderr_text())

    def stderr_text(self) -> str:
        return "\n".join(line for _, line in self.stderr)

    def feed(self, pcm: bytes) -> threading.Thread:
        """Writes ``pcm`` to the daemon's stdin from a thread (a pipe holds only 64 KiB) and
        leaves the pipe open, as a live writer would; join the thread to know all was taken."""
        assert self.proc.stdin is not None, "DaemonProcess(..., stdin_pipe=True)"
        pipe = self.proc.stdin.buffer

        def write() -> None:
            with contextlib.suppress(BrokenPipeError, ValueError):  # the daemon died or was killed
                pipe.write(pcm)
                pipe.flush()

        writer = threading.Thread(target=write, name="daemon-stdin", daemon=True)
        writer.start()
        return writer

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        rc = self.proc.wait(timeout_s)
        for t in self._readers:
            t.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
