"""Multilingual models: with `engine.language = ""` Whisper base (the stand-in for
`local.model = base`) detects the language of each utterance and every line stores it;
`engine.language = "de"` is honoured without detection; `show`, `show --json`, the JSON export
and the feed carry each line's language. Real CLI, real SQLite files, real FLEURS speech."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import AMI, FLEURS, ROOT, normalise, reference

from captiond.api import handle_api
from captiond.events import Line, LineStatus, LineUpdate, UpdateKind
from captiond.feed import Feed
from captiond.transcript.store import Store

#: Reference words this long or longer are the content words a plausible transcript has.
CONTENT_WORD_LEN = 5
#: Share of the reference's content words the transcript must contain.
CONTENT_WORDS_MIN = 0.5


def captiond(args: list[str], db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "CAPTIOND_OVERLAY_PORT": "0"}
    return subprocess.run([sys.executable, "-m", "captiond", "--db", f"sqlite:///{db}", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def transcribe(clip: Path, model: Path, language: str, db: Path) -> None:
    proc = captiond(["transcribe", str(clip), "--no-progress", "--model", str(model),
                     "--language", language], db)
    assert proc.returncode == 0, proc.stderr


def final_lines(db: Path) -> list[tuple[int, str | None, str]]:
    """(start ms, language, text) of the last session's final lines with text, in order."""
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT audio_start_ms, language, text FROM segments WHERE status = 'final' "
            "AND text != '' AND session_id = (SELECT max(id) FROM sessions) ORDER BY seq"
        ).fetchall()


def content_words_found(text: str, clip: Path) -> float:
    words = {w for w in reference(clip).split() if len(w) >= CONTENT_WORD_LEN}
    return len(words & set(normalise(text).split())) / len(words)


@pytest.fixture(scope="module")
def german_then_english(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """FLEURS de-000 then en-000 joined into one recording by ffmpeg; where English starts (s)."""
    de, en = FLEURS / "fleurs-de-000.ogg", FLEURS / "fleurs-en-000.ogg"
    path = tmp_path_factory.mktemp("joined") / "de-en.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(de), "-i", str(en),
                    "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1", "-ac", "1", "-ar", "16000",
                    str(path)], check=True, timeout=60)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                            "-of", "csv=p=0", str(de)], capture_output=True, text=True, check=True)
    return path, float(probe.stdout)


@pytest.mark.slow
def test_auto_detect_stores_the_lines_language(whisper_base: Path, tmp_path: Path) -> None:
    """engine.language "" with a multilingual model: a Spanish clip is transcribed in Spanish
    and every line stores "es" (German: the recording in two languages below)."""
    clip, db = FLEURS / "fleurs-es-000.ogg", tmp_path / "c.db"
    transcribe(clip, whisper_base, "", db)
    lines = final_lines(db)
    assert lines and {lang for _, lang, _ in lines} == {"es"}, lines
    found = content_words_found(" ".join(text for _, _, text in lines), clip)
    assert found >= CONTENT_WORDS_MIN, (found, lines)


@pytest.mark.slow
def test_a_recording_in_two_languages_gives_lines_in_both(
    german_then_english: tuple[Path, float], whisper_base: Path, tmp_path: Path
) -> None:
    """German then English in one file, auto-detected: the German lines store "de", the English
    ones "en"; `show` tags each line; `show --json`, the JSON export and the JSON API carry
    the language."""
    path, english_at_s = german_then_english
    db = tmp_path / "c.db"
    transcribe(path, whisper_base, "", db)
    lines = final_lines(db)
    german = [ln for ln in lines if ln[0] < english_at_s * 1000]
    english = [ln for ln in lines if ln[0] >= english_at_s * 1000]
    assert german and english, lines
    assert {lang for _, lang, _ in german} == {"de"}, german
    assert {lang for _, lang, _ in english} == {"en"}, english
    assert content_words_found(" ".join(t for _, _, t in german),
                               FLEURS / "fleurs-de-000.ogg") >= CONTENT_WORDS_MIN
    assert content_words_found(" ".join(t for _, _, t in english),
                               FLEURS / "fleurs-en-000.ogg") >= CONTENT_WORDS_MIN

    shown = captiond(["show", "last"], db)
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.endswith("(completed, local, de+en)"), header
    assert len(rows) == len(lines)
    for row, (_, lang, text) in zip(rows, lines):
        assert row.endswith(f"] [{lang}] {text}"), row

    as_json = captiond(["show", "last", "--json"], db)
    assert [json.loads(r)["language"] for r in as_json.stdout.splitlines()
            if json.loads(r)["text"]] == [lang for _, lang, _ in lines]

    out = tmp_path / "session.json"
    exported = captiond(["export", "last", "-o", str(out)], db)
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["session"]["languages"] == ["de", "en"]
    assert [r["language"] for r in doc["tracks"]["original"] if r["text"]] == [
        lang for _, lang, _ in lines]

    store = Store.open(f"sqlite:///{db}")
    try:
        code, body = handle_api(store, f"/api/sessions/{doc['session']['id']}/lines", "since=0")
    finally:
        store.close()
    assert code == 200
    assert [r["language"] for r in body["lines"] if r["text"]] == [lang for _, lang, _ in lines]


@pytest.mark.slow
def test_a_configured_language_is_honoured_without_detection(
    whisper_base: Path, tmp_path: Path
) -> None:
    """engine.language "de" on English speech: nothing is detected, every line is "de";
    `show` names the language once in its header and tags no line."""
    db = tmp_path / "c.db"
    transcribe(FLEURS / "fleurs-en-000.ogg", whisper_base, "de", db)
    lines = final_lines(db)
    assert lines and {lang for _, lang, _ in lines} == {"de"}, lines
    shown = captiond(["show", "last"], db)
    header, *rows = shown.stdout.splitlines()
    assert header.endswith("(completed, local, de)"), header
    assert rows and not any("[de]" in row for row in rows), rows
    assert {json.loads(r)["language"] for r in captiond(["show", "last", "--json"], db)
            .stdout.splitlines()} == {"de"}


@pytest.mark.slow
def test_an_unsure_guess_keeps_the_language_detected_with_confidence(
    whisper_base: Path, tmp_path: Path
) -> None:
    """A far-field English meeting (AMI trn08), auto-detected: the short utterances Whisper base
    is unsure of (it guesses Welsh, and loops in it) stay English, like the rest."""
    db = tmp_path / "c.db"
    transcribe(AMI / "trn08.flac", whisper_base, "", db)
    lines = final_lines(db)
    assert len(lines) >= 5 and {lang for _, lang, _ in lines} == {"en"}, lines


def test_an_unknown_language_code_is_one_clear_line(whisper_base: Path, tmp_path: Path) -> None:
    """A multilingual model asked for a language Whisper does not know: one line, no traceback."""
    proc = captiond(["transcribe", str(FLEURS / "fleurs-de-000.ogg"), "--model",
                     str(whisper_base), "--language", "xx"], tmp_path / "c.db")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("captiond: ")]
    assert len(err) == 1 and "engine.language 'xx'" in err[0] and "auto-detect" in err[0], err


def test_feed_final_line_messages_carry_the_language() -> None:
    """The feed's line messages have "language": the line's once final, null while partial."""
    feed = Feed()
    for status, language in ((LineStatus.PARTIAL, None), (LineStatus.FINAL, "de")):
        line = Line(item_id="loc-1", previous_item_id=None, seq=0, audio_start_ms=0,
                    audio_end_ms=900, text="Guten Morgen", status=status, language=language)
        kind = UpdateKind.FINALISED if status is LineStatus.FINAL else UpdateKind.ADDED
        feed.publish_updates([LineUpdate(kind, line, 1)])
        [message] = [m for m in feed.snapshot() if m["type"] == "line"]
        assert message["status"] == status.value and message["language"] == language


@pytest.mark.timeout(180)
def test_auto_engine_local_rescue_stores_the_detected_language(
    whisper_base: Path, db_url: str
) -> None:
    """--engine auto with the service unreachable and `engine.language` empty: the speech the
    OpenAI engine held is transcribed by the multilingual local model, and its lines store the
    language that model heard (they used to store the configured, empty, language)."""
    import asyncio
    import socket

    from fakes.speech import ArraySource, conversation

    from captiond.audio.segmenter import Params
    from captiond.engines.auto import AutoEngine
    from captiond.engines.local import LocalEngine
    from captiond.engines.openai import OpenAIEngine, OpenAIOptions
    from captiond.engines.whisper import WhisperBackend
    from captiond.pipeline import Session, Stream

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{probe.getsockname()[1]}/v1/realtime"
    backend = WhisperBackend(whisper_base, threads=1, language=None)
    key = "sk-test-unreachable-000000000000"
    engine = AutoEngine(
        lambda prefix: OpenAIEngine(key, OpenAIOptions(url=url, language=None), id_prefix=prefix),
        lambda prefix: LocalEngine(backend, Params(rate=16_000), partial_interval_s=0.0,
                                   id_prefix=prefix),
        decode=lambda samples, offset_ms: backend.decode(samples, offset_ms=offset_ms),
        grace_s=600.0, url=url, api_key=key, language=None,
    )
    clip = FLEURS / "fleurs-de-000.ogg"
    store = Store.open(db_url)

    async def main() -> int:
        source = ArraySource(conversation([clip], pause_s=1.0), speed=4.0)
        session = Session(store, [Stream(source, engine)], feed=Feed(), queue_s=60.0)
        return await session.run()

    try:
        sid = asyncio.run(main())
        rows = [r for r in store.lines(sid, statuses=()) if r.text]
    finally:
        store.close()
    assert rows, "no line stored for the speech taken in"
    assert all(r.engine == "local" for r in rows), [(r.engine, r.status) for r in rows]
    assert [r.language for r in rows] == ["de"] * len(rows), [(r.language, r.text) for r in rows]
    assert content_words_found(" ".join(r.text for r in rows), clip) >= CONTENT_WORDS_MIN
