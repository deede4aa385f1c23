"""Audio plumbing: streaming VAD, resampling, PCM conversion, file and stdin sources."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import captiond.audio.pipe  # noqa: F401  (registers --source pipe:PATH, as the daemon does)
from captiond.audio.block import AudioBlock, float_to_pcm16, pcm16_to_float
from captiond.audio.resample import Resampler
from captiond.audio.sources import FileSource, open_source, parse_source, probe_file
from captiond.audio.vad import StreamingVad
from captiond.errors import AudioError


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampler_keeps_a_tone_at_its_frequency(rate: int) -> None:
    """A 440 Hz tone at 44.1/48 kHz, resampled block by block to 16 kHz, is still 440 Hz, with
    the right length and no energy lost at block boundaries."""
    x = tone(440.0, rate, 3.0)
    r = Resampler(16_000)
    out = []
    pos = 0
    for size in [rate // 50, 333, 1024, rate // 10] * 100:
        if pos >= len(x):
            break
        block = AudioBlock(x[pos : pos + size], rate, pos)
        out.append(r(block))
        pos += size
    tail = r.flush()
    y = np.concatenate([b.samples for b in out] + ([tail.samples] if tail else []))
    assert abs(len(y) - 3 * 16_000) <= 2
    assert abs(dominant_frequency(y[1000:-1000], 16_000) - 440.0) < 2.0
    # Steady amplitude: no clicks or dips at block boundaries.
    env = np.abs(y[2000:-2000])
    assert env.max() < 0.52
    assert out[1].start == out[0].end  # the output clock is continuous


def test_resampler_removes_what_cannot_be_represented() -> None:
    """A 12 kHz tone cannot exist at 16 kHz: a proper filter removes it instead of aliasing it
    down to 4 kHz (what dropping samples would do)."""
    x = tone(12_000.0, 48_000, 1.0)
    y = Resampler(16_000)(AudioBlock(x, 48_000, 0)).samples
    assert np.sqrt(np.mean(y[2000:] ** 2)) < 0.01


def test_pcm16_round_trip_and_downmix() -> None:
    """Interleaved stereo PCM16 becomes mono float, and back."""
    left = np.array([0.5, -0.5, 0.25], dtype=np.float32)
    right = np.array([0.5, 0.5, -0.25], dtype=np.float32)
    stereo = np.empty(6, dtype="<i2")
    stereo[0::2] = (left * 32767).astype("<i2")
    stereo[1::2] = (right * 32767).astype("<i2")
    mono = pcm16_to_float(stereo.tobytes(), channels=2)
    assert np.allclose(mono, (left + right) / 2, atol=1e-3)
    assert np.allclose(pcm16_to_float(float_to_pcm16(left)), left, atol=1e-3)


def test_streaming_vad_equals_whole_clip(fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """Probabilities from odd-sized blocks equal those of the whole clip at once, and are
    high in speech and low in silence."""
    from faster_whisper import decode_audio

    audio = decode_audio(str(fleurs_en[3]), 16_000)
    whole = StreamingVad()(audio)
    vad = StreamingVad()
    parts = []
    for i in range(0, len(audio), 777):
        parts.append(vad(audio[i : i + 777]))
    streamed = np.concatenate(parts)
    assert np.allclose(streamed, whole[: len(streamed)], atol=1e-5)
    assert whole.max() > 0.9
    assert StreamingVad()(np.zeros(16_000, dtype=np.float32)).max() < 0.1


def test_file_source_decodes_at_native_rate(fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """A file is decoded to mono blocks on a continuous clock covering its whole duration."""
    src = FileSource(fleurs_en[4], realtime=False)

    async def collect() -> list[AudioBlock]:
        return [b async for b in src.blocks()]

    blocks = asyncio.run(collect())
    assert all(b.rate == src.rate for b in blocks)
    assert all(b2.start == b1.end for b1, b2 in zip(blocks, blocks[1:]))
    assert abs(blocks[-1].end / src.rate - (src.duration_s or 0)) < 0.1


def test_bad_sources_have_clear_errors(tmp_path: Path) -> None:
    """Missing, undecodable and unknown sources each give one sentence naming the fix."""
    with pytest.raises(AudioError, match="does not exist"):
        probe_file(tmp_path / "nope.wav")
    notes = tmp_path / "notes.md"
    notes.write_text("these are meeting notes, not a recording\n" * 100)
    with pytest.raises(AudioError) as undecodable:
        probe_file(notes)
    message = str(undecodable.value)
    assert f"cannot decode {notes}: it is not audio FFmpeg (PyAV) can decode" in message
    assert "give a recording such as .wav" in message and "Errno" not in message
    # FFmpeg opens a long .txt as teletype art: a video, so "no audio stream", with the fix.
    text = tmp_path / "notes.txt"
    text.write_text("these are meeting notes, not a recording\n" * 100)
    with pytest.raises(AudioError, match=r"notes.txt has no audio stream .*give a recording"):
        probe_file(text)
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(AudioError, match="cannot decode .*give a recording"):
        probe_file(junk)
    with pytest.raises(AudioError, match="unknown audio source 'speaker'") as unknown:
        parse_source("speaker")
    for form in ("mic[:DEVICE]", "file:PATH", "stdin", "system[:SINK]", "pipe:PATH",
                 "mic+system"):
        assert form in str(unknown.value), form
    with pytest.raises(AudioError, match="needs a path"):
        open_source("file:")


def test_stdin_source_reassembles_odd_reads() -> None:
    """Raw PCM16 on stdin arrives in odd-sized reads and still becomes whole samples."""
    x = tone(300.0, 16_000, 1.0)
    pcm = float_to_pcm16(x)
    code = (
        "import asyncio, sys\n"
        "from captiond.audio.sources import StdinSource\n"
        "async def main():\n"
        "    n = 0\n"
        "    async for b in StdinSource(rate=16000).blocks():\n"
        "        n += len(b.samples)\n"
        "    print(n)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None
    for i in range(0, len(pcm), 1001):  # odd chunk: splits samples in half
        proc.stdin.write(pcm[i : i + 1001])
        proc.stdin.flush()
    proc.stdin.close()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.wait(30) == 0
    assert int(out.strip()) == len(x)
