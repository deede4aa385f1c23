"""OpenAI settings, the API key's sources, and how the engine is chosen."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from captiond import config
from captiond.engines.auto import AutoEngine
from captiond.engines.factory import build_engine, engine_name
from captiond.engines.openai import OpenAIEngine, OpenAIOptions, resolve_api_key
from captiond.errors import ConfigError, EngineFatal
from captiond.logs import redact

KEY = "sk-config-test-0123456789abcdef"


def test_url_setting_from_environment_and_checked() -> None:
    """openai.url comes from CAPTIOND_OPENAI_URL; a non-WebSocket URL is refused with a fix."""
    cfg = config.parse("", env={"CAPTIOND_OPENAI_URL": "ws://127.0.0.1:9/v1/realtime"})
    assert cfg["openai.url"] == "ws://127.0.0.1:9/v1/realtime"
    with pytest.raises(ConfigError, match="openai.url must be a ws:// or wss:// URL"):
        config.parse('[openai]\nurl = "https://api.openai.com/v1"\n', env={})


def test_options_follow_the_settings() -> None:
    """Settings map onto the session: language, delay, noise reduction off, VAD params."""
    cfg = config.parse('[openai]\ndelay = "high"\nnoise_reduction = "off"\n'
                       '[engine]\nlanguage = "de"\n[vad]\nmax_utterance_s = 10.0\n', env={})
    o = OpenAIOptions.from_config(cfg)
    assert (o.delay, o.noise_reduction, o.language) == ("high", None, "de")
    assert o.segmenter.max_utterance_s == 10.0


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_API_KEY is used and from then on redacted from log lines."""
    monkeypatch.setenv("OPENAI_API_KEY", f" {KEY}\n")
    assert resolve_api_key(config.parse("", env={})) == KEY
    assert KEY not in redact(f"connecting with {KEY}")


def test_key_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         caplog: pytest.LogCaptureFixture) -> None:
    """openai.api_key_file wins over the environment; a readable-by-others file is warned
    about (with the chmod fix) but used."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-000000000000")
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    cfg = config.parse(f'[openai]\napi_key_file = "{key_file}"\n', env={})
    with caplog.at_level(logging.WARNING, logger="captiond"):
        assert resolve_api_key(cfg) == KEY
    assert "chmod 600" in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("content", [None, ""])
def test_key_file_problems_name_the_file_not_the_key(tmp_path: Path,
                                                     content: str | None) -> None:
    """A missing or empty key file is a clear error naming the file."""
    key_file = tmp_path / "missing.key"
    if content is not None:
        key_file.write_text(content)
    cfg = config.parse(f'[openai]\napi_key_file = "{key_file}"\n', env={})
    with pytest.raises(ConfigError, match=str(key_file)):
        resolve_api_key(cfg)


def test_auto_means_openai_only_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine auto: OpenAI (with local fallback) when a key is set, else local; engine
    openai without a key is a fatal error naming OPENAI_API_KEY."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = config.parse("", env={})
    assert engine_name(cfg) == "local"
    with pytest.raises(EngineFatal, match="OPENAI_API_KEY"):
        build_engine(cfg.replace(engine__name="openai"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert engine_name(cfg) == "auto"
    assert isinstance(build_engine(cfg), AutoEngine)
    assert isinstance(build_engine(cfg.replace(engine__name="openai")), OpenAIEngine)
