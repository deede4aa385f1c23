"""Meetings for the speaker tests and benchmark: AMI reference turns (``tests/data/speakers``,
CC BY 4.0 from the AMI Meeting Corpus) turned into audio the fake diarizer hears (one tone
per person) and into stored lines as a one-microphone engine would cut them (by pauses,
whoever speaks), with word times."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fakes.openai_transcribe import VOICES

from captiond.audio.block import AudioBlock
from captiond.audio.keep import KEEP_RATE, AudioKeeper, audio_path
from captiond.events import Line, LineStatus, Word
from captiond.speakers.attribute import Labelled, Turn, coverage
from captiond.transcript.store import Store

DATA = Path(__file__).resolve().parent / "data" / "speakers"
#: Each AMI excerpt's annotated span; excerpts are joined one after another.
EXCERPT_S = 30.0
#: A pause this long between words ends a line; a line never runs longer than LINE_MAX_MS.
LINE_PAUSE_MS = 500
LINE_MAX_MS = 10_000
TONE_AMPLITUDE = 0.1


def person(name: str) -> str:
    """One spelling of an AMI speaker id: the turns write MÉO069 where the words write
    MEO069."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


def ami_meeting() -> tuple[list[Turn], list[list[tuple[int, int, str, str]]]]:
    """Reference turns on one clock (excerpts in name order, 30 s apart) and each excerpt's
    words (start_ms, end_ms, speaker, word) on the same clock."""
    names = sorted(p.name.split(".")[0] for p in DATA.glob("*.words.tsv"))
    turns: list[Turn] = []
    words: list[list[tuple[int, int, str, str]]] = []
    rttm = [ln.split() for ln in (DATA / "reference.rttm").read_text().splitlines() if ln]
    for i, name in enumerate(names):
        offset = int(i * EXCERPT_S * 1000)
        for f in rttm:
            if f[1] == name:
                start = float(f[3])
                end = min(start + float(f[4]), EXCERPT_S)
                turns.append(Turn(offset + round(start * 1000), offset + round(end * 1000), person(f[7])))
        rows = (DATA / f"{name}.words.tsv").read_text().splitlines()[1:]
        ws = []
        for r in rows:
            start, end, who, word = r.split("\t")
            if float(start) < EXCERPT_S:
                ws.append((offset + round(float(start) * 1000),
                           offset + round(min(float(end), EXCERPT_S) * 1000), person(who),
                           word))
        words.append(sorted(ws))
    return turns, words


def lines_from_words(words: Sequence[Sequence[tuple[int, int, str, str]]], *,
                     with_words: bool = True) -> list[Line]:
    """Lines as a one-microphone engine cuts them: at pauses, whoever speaks."""
    out: list[Line] = []
    for excerpt in words:
        current: list[tuple[int, int, str, str]] = []
        for w in list(excerpt) + [None]:  # type: ignore[list-item]
            if current and (w is None or w[0] - max(x[1] for x in current) >= LINE_PAUSE_MS
                            or w[1] - current[0][0] > LINE_MAX_MS):
                i = len(out)
                out.append(Line(
                    item_id=f"it-{i}", previous_item_id=f"it-{i - 1}" if i else None, seq=i,
                    audio_start_ms=current[0][0], audio_end_ms=max(x[1] for x in current),
                    text=" ".join(x[3] for x in current), status=LineStatus.FINAL,
                    words=tuple(Word(f" {x[3]}", x[0], x[1]) for x in current)
                    if with_words else (), engine="local", language="en"))
                current = []
            if w is not None:
                current.append(w)
    return out


def voices(turns: Sequence[Turn]) -> dict[str, int]:
    people = sorted({t.speaker for t in turns})
    assert len(people) <= len(VOICES), "more people than the fake has voices"
    return {p: i for i, p in enumerate(people)}


def synthesise(turns: Sequence[Turn], duration_ms: int) -> np.ndarray:
    """Each person's tone while their turns last (people who overlap sound together)."""
    voice = voices(turns)
    audio = np.zeros(duration_ms * KEEP_RATE // 1000, np.float32)
    ramp = KEEP_RATE // 200  # 5 ms fades: no clicks smearing over other voices
    for t in turns:
        a, b = t.start_ms * KEEP_RATE // 1000, t.end_ms * KEEP_RATE // 1000
        if b - a < 2 * ramp:
            continue
        n = np.arange(a, b)
        tone = TONE_AMPLITUDE * np.sin(2 * np.pi * VOICES[voice[t.speaker]] * n / KEEP_RATE)
        env = np.ones(b - a)
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        audio[a:b] += (tone * env).astype(np.float32)
    return audio


def store_meeting(db_url: str, audio_dir: Path, audio: np.ndarray, lines: Sequence[Line]) -> int:
    """A completed session with these lines and this audio kept (written as the daemon does)."""
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local", language="en", title="AMI")
    store.write_lines(sid, list(lines))
    keeper = AudioKeeper(audio_path(audio_dir, sid), bitrate=24_000)
    step = KEEP_RATE * 32 // 1000
    for pos in range(0, len(audio), step):
        keeper.feed("", AudioBlock(audio[pos:pos + step], KEEP_RATE, pos))
        if pos % (step * 200) == 0:
            keeper.drain()  # faster than real time: let the encoder keep up
    keeper.end("")
    keeper.close(timeout=120)
    store.end_session(sid, audio_seconds=len(audio) / KEEP_RATE)
    store.close()
    return sid


def mapping(truth: Sequence[Turn], found: Sequence[Turn]) -> dict[str, str]:
    """Labels to people, one to one, largest shared talk time first (as diarization error
    rate maps them)."""
    pairs: dict[tuple[str, str], int] = {}
    for f in found:
        for person, ms in coverage(truth, f.start_ms, f.end_ms).items():
            pairs[(f.speaker, person)] = pairs.get((f.speaker, person), 0) + ms
    out: dict[str, str] = {}
    used: set[str] = set()
    for (label, person), _ in sorted(pairs.items(), key=lambda kv: -kv[1]):
        if label not in out and person not in used:
            out[label] = person
            used.add(person)
    return out


def right_share(truth: Sequence[Turn], rows: Sequence[object], names: dict[str, str]
                ) -> tuple[int, int]:
    """(line ms whose label maps to someone talking then, line ms with anyone talking)."""
    right = total = 0
    anyone = [Turn(t.start_ms, t.end_ms, "_") for t in truth]
    for r in rows:
        a, b, label = r.audio_start_ms, r.audio_end_ms, r.speaker  # type: ignore[attr-defined]
        talking = sum(coverage(anyone, a, b).values())
        if not talking:
            continue
        total += talking
        person = names.get(label or "")
        if person:
            right += coverage(truth, a, b).get(person, 0)
    return right, total


__all__ = ["Labelled", "ami_meeting", "lines_from_words", "mapping", "right_share",
           "store_meeting", "synthesise", "voices"]


def write_wav(path: Path, samples: np.ndarray, rate: int = KEEP_RATE) -> None:
    from captiond.speakers.service import wav_bytes

    path.write_bytes(wav_bytes(samples, rate))
