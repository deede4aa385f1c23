"""One registry of settings: file, environment and flags; errors name place, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from captiond import config
from captiond.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    """Defaults < TOML file < CAPTIOND_* environment < command-line flags."""
    text = '[vad]\nmin_silence_ms = 500\n[local]\nthreads = 3\n[engine]\nlanguage = "de"\n'
    env = {"CAPTIOND_LOCAL_THREADS": "4"}
    cfg = config.parse(text, path=tmp_path / "c.toml", env=env, overrides={"engine.language": "fr"})
    assert cfg["vad.min_silence_ms"] == 500
    assert cfg["local.threads"] == 4
    assert cfg["engine.language"] == "fr"
    assert cfg["vad.threshold"] == 0.5
    assert cfg.origins["local.threads"] == "environment"


def test_wrong_type_names_file_line_key_value_and_fix(tmp_path: Path) -> None:
    """A quoted number is reported with file:line, key, value and 'remove the quotes'."""
    text = '[audio]\nsource = "mic"\nrate = "48000"\n'
    with pytest.raises(ConfigError) as err:
        config.parse(text, path=tmp_path / "config.toml", env={})
    assert str(err.value) == (
        f"{tmp_path / 'config.toml'}:3: audio.rate must be an integer, got '48000' "
        "(remove the quotes)"
    )


def test_unknown_key_suggests_the_right_one() -> None:
    """A misspelt key is an error with a did-you-mean."""
    with pytest.raises(ConfigError, match=r"unknown setting vad\.min_silense_ms \(did you mean min_silence_ms\?\)"):
        config.parse("[vad]\nmin_silense_ms = 300\n", env={})
    with pytest.raises(ConfigError, match=r"unknown section \[locl\] \(did you mean local\?\)"):
        config.parse("[locl]\nthreads = 2\n", env={})
    with pytest.raises(ConfigError, match="did you mean CAPTIOND_LOCAL_THREADS"):
        config.parse("", env={"CAPTIOND_LOCAL_THREAD": "2"})


def test_ranges_choices_and_checks() -> None:
    """Out-of-range numbers, unknown choices and bad language codes are refused."""
    with pytest.raises(ConfigError, match="at most 0.95"):
        config.parse("[vad]\nthreshold = 1.5\n", env={})
    with pytest.raises(ConfigError, match="must be one of auto, local, openai"):
        config.parse('[engine]\nname = "cloud"\n', env={})
    with pytest.raises(ConfigError, match="ISO-639-1"):
        config.parse('[engine]\nlanguage = "English"\n', env={})
    with pytest.raises(ConfigError, match="environment CAPTIOND_LOCAL_THREADS: local.threads must be an integer"):
        config.parse("", env={"CAPTIOND_LOCAL_THREADS": "two"})
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.parse("[vad\n", env={})


def test_colours_are_css_colours(tmp_path: Path) -> None:
    """Overlay colours take CSS names, #hex, bare hex, rgb() and hsl(); a made-up name is
    refused with file:line, the setting, a did-you-mean and the forms to write."""
    for value in ("white", "RebeccaPurple", "#fc0", "#ffcc0080", "ffcc00", "rgb(255 204 0)",
                  "rgba(0, 0, 0, 0.5)", "hsl(48 100% 50%)", "transparent"):
        cfg = config.parse(f'[overlay]\ncolor = "{value}"\n', env={})
        assert cfg["overlay.color"] == value
    with pytest.raises(ConfigError) as err:
        config.parse('[overlay]\ncolor = "blurple"\n', path=tmp_path / "config.toml", env={})
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'config.toml'}:2: overlay.color must be a CSS colour")
    assert "did you mean purple" in message and "rgb(255 204 0)" in message
    assert "got 'blurple'" in message
    for bad in ("red; background: url(x)", "#ff", "rgb(1, 2)", "ff cc 00", ""):
        with pytest.raises(ConfigError, match="must be a CSS colour"):
            config.parse("", env={}, overrides={"overlay.background_color": bad})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """--config naming a file that does not exist is an error; the default may be absent."""
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml", env={})
    cfg = config.load(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg["engine.name"] == "auto"


def test_secrets_are_hidden_in_public_view() -> None:
    """Secret settings (a database URL with a password) are hidden from public()."""
    cfg = config.parse('[database]\nurl = "postgresql://u:hunter2@db/x"\n', env={})
    assert "hunter2" not in str(cfg.public())


def test_settings_reference_is_current() -> None:
    """docs/reference/settings.md is exactly the page the registry generates, table included."""
    page = (ROOT / "docs" / "reference" / "settings.md").read_text(encoding="utf-8")
    assert config.docs_table() in page
    assert page == config.docs_page(), f"docs/reference/settings.md is stale: {config.DOCS_COMMAND}"


def test_settings_reference_says_how_to_regenerate_it() -> None:
    """The generated page opens by saying it is generated and with the command that does it."""
    page = config.docs_page()
    assert config.DOCS_COMMAND in page.split("| setting |")[0]
    assert page.startswith("<!-- Generated from the settings registry")
