"""System audio through a real (private) PulseAudio server: discovery, clear errors, the
server's rates and channel layouts, surviving the server going away."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from pulse_support import PulseServer, write_tone

from captiond.audio.block import AudioBlock
from captiond.audio.resample import Resampler
from captiond.audio.sources import open_source
from captiond.audio.system import (
    SampleSpec,
    ServerDevice,
    ServerSource,
    choose_sink,
    downmix,
    parse_sample_spec,
    server_failure,
)
from captiond.cli import main
from captiond.errors import AudioError

#: Audio collected per capture in the tone tests.
TONE_S = 1.5


# -- pure helpers ------------------------------------------------------------------------


def _sink(name: str, desc: str = "") -> ServerDevice:
    return ServerDevice(name, desc or name, SampleSpec(2, 48_000), monitor=f"{name}.monitor")


def test_sample_spec_as_pactl_prints_it() -> None:
    """pactl's sample specs give channels and rate; nonsense is a clear error."""
    assert parse_sample_spec("s16le 2ch 44100Hz") == SampleSpec(2, 44_100)
    assert parse_sample_spec("float32le 6ch 48000Hz") == SampleSpec(6, 48_000)
    with pytest.raises(AudioError, match="unreadable sample spec"):
        parse_sample_spec("n/a")


def test_choose_sink_default_exact_substring_and_missing() -> None:
    """No name: the default sink; a name: exact, else a unique substring of name or
    description; a missing or ambiguous name lists what there is."""
    sinks = [_sink("alsa_output.pci.analog-stereo", "Built-in Audio"), _sink("bt_headset", "WH-1000XM4")]
    assert choose_sink(sinks, "bt_headset", None).name == "bt_headset"
    assert choose_sink(sinks, "gone", None).name == sinks[0].name
    assert choose_sink(sinks, "", "built-in").name == sinks[0].name
    assert choose_sink(sinks, "", "bt_headset").monitor == "bt_headset.monitor"
    with pytest.raises(AudioError, match=r"no sound output \(sink\) 'hdmi'.*alsa_output.*bt_headset"):
        choose_sink(sinks, "", "hdmi")
    with pytest.raises(AudioError, match="matches several"):
        choose_sink(sinks, "", "_")
    with pytest.raises(AudioError, match="no output"):
        choose_sink([], "", None)


def test_server_failure_messages_name_the_fix() -> None:
    """A refused connection says no server runs and how to start one (PipeWire or PulseAudio)."""
    msg = server_failure("Connection failure: Connection refused\n")
    assert "no PulseAudio/PipeWire sound server is running" in msg
    assert "pipewire-pulse" in msg and "pulseaudio --start" in msg
    assert "access denied" in server_failure("Connection failure: Access denied")


def test_downmix_averages_interleaved_channels() -> None:
    """Stereo float32 frames become their mean; a trailing half frame is dropped."""
    frames = np.array([1.0, 0.0, 0.5, 0.5, -1.0, 1.0, 0.25], dtype="<f4")
    assert downmix(frames.tobytes(), 2).tolist() == [0.5, 0.5, 0.0]
    assert downmix(frames[:3].tobytes(), 1).tolist() == [1.0, 0.0, 0.5]


# -- errors people read ------------------------------------------------------------------


def test_no_sound_server_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no server at PULSE_SERVER, `--source system` fails at once saying how to start one."""
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such-socket")
    with pytest.raises(AudioError, match="no PulseAudio/PipeWire sound server is running"):
        open_source("system")


def test_no_sound_server_from_the_cli(tmp_path: Path) -> None:
    """`captiond run --source mic+system` with no server: exit 1, one line, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PULSE_SERVER": f"unix:{tmp_path}/no-such-socket",
           "XDG_RUNTIME_DIR": str(tmp_path)}  # its own control socket: another daemon may run
    proc = subprocess.run(
        [sys.executable, "-m", "captiond", "run", "--source", "system", "--db", f"sqlite:///{tmp_path / 'c.db'}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "no PulseAudio/PipeWire sound server is running" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("captiond: ") == 1


def test_missing_sink_lists_the_sinks(pulse: PulseServer) -> None:
    """`system:NAME` for a sink the server does not have names it and lists the real ones."""
    pulse.null_sink("speakers")
    with pytest.raises(AudioError, match=r"no sound output \(sink\) 'hdmi' .*available: speakers"):
        open_source("system:hdmi")
    with pytest.raises(AudioError, match=r"no capture source 'headset'"):
        open_source("mic:pulse:headset")


def test_devices_lists_monitors(pulse: PulseServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`captiond devices` lists each sink's monitor (default marked) and capture sources."""
    pulse.null_sink("speakers", rate=44_100)
    pulse.virtual_mic("vmic")
    pulse.pactl("set-default-sink", "speakers")
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "--source system:NAME" in out
    assert "* speakers" in out and "44100 Hz" in out
    assert "mic:pulse:vmic" in out


# -- audio from the server ---------------------------------------------------------------


async def _collect(source: ServerSource, seconds: float) -> list[AudioBlock]:
    blocks: list[AudioBlock] = []
    async for block in source.blocks():
        blocks.append(block)
        if sum(len(b.samples) for b in blocks) >= seconds * source.rate:
            break
    await source.close()
    return blocks


def _peak_hz(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(frequency of the strongest bin, its amplitude) of a Hann-windowed spectrum."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) / (window.sum() / 2)
    k = int(np.argmax(spectrum))
    return k * rate / len(samples), float(spectrum[k])


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_tone_arrives_at_its_frequency(pulse: PulseServer, tmp_path: Path, rate: int) -> None:
    """A 1234 Hz tone played on the left channel of a stereo sink at 44.1/48 kHz is captured
    at the server's rate and layout, downmixed (half amplitude) and resampled to 16 kHz at
    the same frequency."""
    pulse.null_sink("speakers", rate=rate, channels=2)
    pulse.pactl("set-default-sink", "speakers")
    tone = tmp_path / "tone.wav"
    write_tone(tone, freq=1234.0, rate=rate, seconds=TONE_S + 2.0, left_only=True)

    async def run() -> list[AudioBlock]:
        source = open_source("system")
        assert isinstance(source, ServerSource)
        assert (source.rate, source.channels, source.description) == (rate, 2, "system:speakers")
        player = pulse.play(tone, "speakers")
        try:
            # Skip the moment the player starts; then take TONE_S of steady tone.
            blocks = await _collect(source, TONE_S + 0.5)
        finally:
            player.kill()
            player.wait()
        return blocks

    blocks = asyncio.run(run())
    assert [b.start for b in blocks[1:]] == [b.end for b in blocks[:-1]]  # no gaps
    resample = Resampler(16_000)
    out = np.concatenate([resample(b).samples for b in blocks])
    steady = out[8_000 : 8_000 + int(TONE_S * 16_000) - 8_000]
    freq, amp = _peak_hz(steady, 16_000)
    assert abs(freq - 1234.0) <= 16_000 / len(steady) * 1.5, freq
    assert 0.2 <= amp <= 0.3, amp  # 0.5 on one of two channels


def test_capture_survives_the_sink_going_away(pulse: PulseServer, tmp_path: Path) -> None:
    """When the sink disappears, capture waits (back-off) and resumes once it is back; the
    time it was away is one jump in the stream clock (a gap) at least as long as the outage,
    and the blocks after it follow on without another jump. (How closely the stream clock
    then tracks the wall clock is measured by benchmarks/system_audio_clock.py.)"""
    module = pulse.null_sink("speakers", rate=48_000)
    away_s = 1.5

    async def run() -> tuple[list[AudioBlock], ServerSource]:
        source = open_source("system:speakers")
        assert isinstance(source, ServerSource)
        blocks: list[AudioBlock] = []
        nonlocal module
        resumed = float("inf")  # stream time of the first block after the gap
        async for block in source.blocks():
            blocks.append(block)
            seconds = block.end / source.rate
            if seconds >= 0.5 and source.reconnects == 0 and module >= 0:
                await asyncio.to_thread(pulse.unload, module)
                module = -1
                await asyncio.sleep(away_s)
                module = await asyncio.to_thread(pulse.null_sink, "speakers", rate=48_000)
            if source.reconnects and len(blocks) > 1 and blocks[-2].end != block.start:
                resumed = block.start / source.rate
            if seconds >= resumed + 0.5:  # half a second of audio after the gap
                break
        await source.close()
        return blocks, source

    blocks, source = asyncio.run(asyncio.wait_for(run(), 30))
    assert source.reconnects == 1
    jumps = [(a.end, b.start) for a, b in zip(blocks, blocks[1:]) if b.start != a.end]
    assert len(jumps) == 1
    gap_s = (jumps[0][1] - jumps[0][0]) / 48_000
    assert gap_s >= away_s, gap_s


def test_parec_is_gone_after_close(pulse: PulseServer) -> None:
    """close() ends the recording: the server has no capture stream left."""
    pulse.null_sink("speakers")

    async def run() -> None:
        source = open_source("system:speakers")
        blocks = await _collect(source, 0.2)  # type: ignore[arg-type]
        assert blocks

    asyncio.run(run())
    assert pulse.capture_clients() == []
    info = json.loads(subprocess.run(["pactl", "-f", "json", "info"], env=pulse.env, capture_output=True, text=True).stdout)
    assert info["default_sink_name"] == "speakers"
