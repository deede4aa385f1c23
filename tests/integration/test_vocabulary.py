"""The glossary (local.hotwords / local.initial_prompt) reaches the local decoder and is the
OpenAI session's transcription prompt."""

from __future__ import annotations

from fakes.openai_realtime import validate_client_event
from faster_whisper import decode_audio

from captiond import config
from captiond.engines.factory import whisper_backend
from captiond.engines.openai import OpenAIOptions
from captiond.realtime.protocol import SessionSettings

#: FLEURS en 002: "... the romantic and fascinating town of sintra ..." (batch faster-whisper
#: with tiny.en, beam 5, writes "cintra").
SINTRA_CLIP = 2


def _text(settings: str, fleurs_en) -> str:  # type: ignore[no-untyped-def]
    audio = decode_audio(str(fleurs_en[SINTRA_CLIP]), 16_000)
    return whisper_backend(config.parse(settings, env={})).decode(audio).text


def test_glossary_spells_the_place_name(fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """With hotwords "Sintra" the town is spelled Sintra; an unusual spelling in the glossary
    ("Cyntra", never written without it) shows the hint reaches the decoder."""
    assert "Cyntra" not in _text("", fleurs_en)
    assert "Sintra" in _text('[local]\nhotwords = "Sintra"\n', fleurs_en)
    assert "Cyntra" in _text('[local]\nhotwords = "Cyntra"\n', fleurs_en)
    assert "Cyntra" in _text('[local]\ninitial_prompt = "Cyntra"\n', fleurs_en)


def test_glossary_is_the_openai_transcription_prompt() -> None:
    """The same glossary goes into session.update's transcription prompt (a valid event)."""
    cfg = config.parse('[local]\nhotwords = "Sintra, Byron"\ninitial_prompt = "Travel notes."\n',
                       env={})
    options = OpenAIOptions.from_config(cfg)
    assert options.prompt == "Travel notes. Sintra, Byron"
    event = SessionSettings(prompt=options.prompt).session_update()
    assert event["session"]["audio"]["input"]["transcription"]["prompt"] == options.prompt
    assert validate_client_event(event) == []
    assert "prompt" not in str(SessionSettings().session_update())
