"""One registry of settings drives the TOML file, the environment, CLI flags, ``--help`` and docs.

Precedence, lowest first: the default in :data:`SETTINGS`, the TOML file
(``~/.config/captiond/config.toml`` or ``--config``), ``CAPTIOND_<SECTION>_<KEY>`` environment
variables, CLI flags. A setting is named ``section.key`` and lives in the file as::

    [audio]
    source = "mic"

Parsing is pure: :func:`parse` takes text and a mapping and returns a frozen :class:`Config` or
raises :class:`~captiond.errors.ConfigError` naming the file, line, key, value and fix.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from captiond.errors import ConfigError
from captiond.outputs.spec import parse_flags as parse_output_flags
from captiond.outputs.spec import parse_tables as parse_output_tables

ENV_PREFIX = "CAPTIOND_"
#: The config file's array of ``[[outputs]]`` tables (and the overrides key of ``--output``).
OUTPUTS_KEY = "outputs"


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    #: Re-read on a live config reload without a restart.
    live: bool = False
    #: Extra check: returns an error message (what is wrong and the fix) or None.
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace(".", "_")

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[1]


def _language(value: str) -> str | None:
    if value and not re.fullmatch(r"[a-z]{2,3}", value):
        return "must be an ISO-639-1 code such as 'en' or 'de', or empty to auto-detect"
    return None


# -- checks for the overlay settings: values reach CSS, so they are held to safe forms.
#: Bare hex digits (``ffcc00``): a colour written in a URL, where ``#`` starts the fragment.
_BARE_HEX_RE = re.compile(r"[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}")
#: Longest colour value accepted (``rgb(255 204 0 / 50%)`` and the like are far shorter).
COLOUR_MAX_CHARS = 64
_FONT_FAMILY_RE = re.compile(r"[A-Za-z0-9 ,\-_'\"]{1,120}")


def _colour(value: str) -> str | None:
    """None for a CSS colour (a name, #hex, rgb(), hsl() and the other CSS Color 4 forms, as
    tinycss2 parses them; bare hex for URLs), else what to write instead."""
    import tinycss2.color4

    if _BARE_HEX_RE.fullmatch(value):
        return None
    if len(value) <= COLOUR_MAX_CHARS and tinycss2.color4.parse_color(value) is not None:
        return None
    fix = "must be a CSS colour such as white, #ffcc00, ffcc00, rgb(255 204 0) or hsl(48 100% 50%)"
    # The CSS colour names as tinycss2 holds them (private: no suggestion if it goes away).
    names = list(getattr(tinycss2.color4, "_COLOR_KEYWORDS", ()))
    close = difflib.get_close_matches(value.strip().lower(), names, n=3, cutoff=0.6)
    if close:
        fix += f" (did you mean {' or '.join(close)}?)"
    return fix


def _font_family(value: str) -> str | None:
    if not _FONT_FAMILY_RE.fullmatch(value):
        return "must be font names separated by commas (letters, digits, spaces, - and quotes)"
    return None


def _track(value: str) -> str | None:
    if value not in ("original", "both") and not re.fullmatch(r"[a-z]{2,3}", value):
        return "must be original, both, or a language code such as es"
    return None


def _token(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9_\-.~]{16,200}", value):
        return "must be 16 to 200 URL-safe characters (letters, digits, - _ . ~)"
    return None


def _ws_url(value: str) -> str | None:
    if not re.match(r"^wss?://[^/\s]+", value):
        return "must be a ws:// or wss:// URL such as wss://api.openai.com/v1/realtime?intent=transcription"
    return None


#: gpt-realtime-translate's output languages (kept here so config has no engine import).
TRANSLATE_TARGETS = ("es", "pt", "fr", "ja", "ru", "zh", "de", "ko", "hi", "id", "vi", "it", "en")


def _translate_targets(value: list[str]) -> str | None:
    bad = [v for v in value if v not in TRANSLATE_TARGETS]
    if bad:
        return (f"unsupported translation target {', '.join(map(repr, bad))}; "
                f"use some of {', '.join(TRANSLATE_TARGETS)}")
    if len(set(value)) != len(value):
        return "lists a language twice; name each target once"
    return None


def _translate_play(value: str) -> str | None:
    lang = value.split(":", 1)[0]
    if value and lang not in TRANSLATE_TARGETS:
        return f"must be LANG[:DEVICE] with LANG one of {', '.join(TRANSLATE_TARGETS)}"
    return None


SETTINGS: tuple[Setting, ...] = (
    # -- audio ---------------------------------------------------------------------------
    Setting(
        "audio.source",
        str,
        "mic",
        "Where audio comes from: mic[:DEVICE], mic:pulse:SOURCE, system[:SINK], file:PATH, "
        "stdin, or two joined with + (mic+system: a two-sided call).",
    ),
    Setting(
        "audio.rate",
        int,
        16000,
        "Sample rate of raw PCM16 on stdin (--source stdin).",
        minimum=8000,
        maximum=192000,
    ),
    Setting(
        "audio.channels",
        int,
        1,
        "Channels of raw PCM16 on stdin (interleaved); they are mixed down to mono.",
        minimum=1,
        maximum=8,
    ),
    Setting(
        "audio.stdin_live",
        bool,
        False,
        "Raw PCM on stdin is a live capture: audio the engine cannot keep up with is dropped "
        "(one gap per outage). Off: stdin is a pipe that waits for the engine and loses nothing.",
    ),
    Setting(
        "audio.block_ms",
        int,
        32,
        "Capture block size in milliseconds.",
        minimum=10,
        maximum=200,
    ),
    Setting(
        "audio.queue_s",
        float,
        30.0,
        "Audio the pipeline buffers between capture and engine before it records a gap.",
        minimum=1.0,
        maximum=600.0,
    ),
    Setting(
        "audio.keep",
        bool,
        False,
        "Keep the session's audio (Ogg Opus, one file per session, written as it runs) for "
        "`captiond speakers` and `export --format audio`. Off by default: a recording of "
        "other people's voices needs their consent.",
    ),
    Setting(
        "audio.keep_dir",
        str,
        "",
        "Directory of kept audio; empty: audio/ in the data directory.",
    ),
    Setting(
        "audio.keep_kbps",
        int,
        24,
        "Bit rate of kept audio in kbit/s (24: about 9 MB per hour of meeting speech).",
        minimum=12,
        maximum=64,
    ),
    Setting(
        "audio.keep_days",
        float,
        30.0,
        "Kept audio older than this many days is deleted (the transcript stays); 0: no age "
        "limit.",
        minimum=0.0,
        maximum=36_500.0,
    ),
    Setting(
        "audio.keep_max_mb",
        int,
        2_000,
        "Kept audio beyond this many megabytes in all is deleted, oldest first (the "
        "transcript stays); 0: no size limit.",
        minimum=0,
        maximum=10_000_000,
    ),
    # -- engine --------------------------------------------------------------------------
    Setting(
        "engine.name",
        str,
        "auto",
        "Transcription engine: auto (OpenAI when a key is configured, else local), local, openai.",
        choices=("auto", "local", "openai"),
    ),
    Setting(
        "engine.language",
        str,
        "en",
        "Spoken language (ISO-639-1), or empty to auto-detect each utterance's language "
        "(a multilingual local.model, or OpenAI).",
        check=_language,
    ),
    # -- local engine ----------------------------------------------------------------------
    Setting(
        "local.model",
        str,
        "",
        "Whisper model: empty for the bundled tiny.en, a faster-whisper name (base.en, small, "
        "distil-large-v3, large-v3-turbo, ...; downloaded once into the Hugging Face cache), a "
        "Hugging Face repo id, or a CTranslate2 model directory. `captiond models` lists them.",
    ),
    Setting(
        "local.device",
        str,
        "auto",
        "Where the local model runs: auto (CUDA when CTranslate2 sees a GPU), cpu or cuda.",
        choices=("auto", "cpu", "cuda"),
    ),
    Setting(
        "local.threads",
        int,
        0,
        "CPU threads for decoding; 0: one for tiny and base models (their decoder is fastest "
        "on one), two for larger ones.",
        minimum=0,
        maximum=64,
    ),
    Setting(
        "local.compute_type",
        str,
        "auto",
        "CTranslate2 compute type; auto: int8 on the CPU, float16 on CUDA.",
        choices=("auto", "int8", "int8_float32", "int8_float16", "float16", "float32"),
    ),
    Setting(
        "local.hotwords",
        str,
        "",
        "Words and names to favour, e.g. \"Sintra, Kubernetes, Nguyen\" (faster-whisper's "
        "hotwords); also sent in the OpenAI transcription prompt.",
    ),
    Setting(
        "local.initial_prompt",
        str,
        "",
        "Text that sets the vocabulary and style before every utterance (faster-whisper's "
        "initial_prompt); also sent as the OpenAI transcription prompt.",
    ),
    Setting(
        "local.beam_size",
        int,
        5,
        "Beam width for final text (partials are greedy).",
        minimum=1,
        maximum=10,
    ),
    Setting(
        "local.final_window",
        str,
        "fit",
        "Encoder window of final decodes: fit (the utterance plus 3 s, at least 14 s; the full "
        "window again when that text would be dropped as not speech or a loop) or full "
        "(Whisper's 30 s window for every final: slower, see docs/guide/engines.md for the accuracy measured).",
        choices=("fit", "full"),
    ),
    Setting(
        "local.partial_interval_s",
        float,
        0.5,
        "How often partial text is re-decoded while someone speaks (0 disables partials).",
        minimum=0.0,
        maximum=10.0,
        live=True,
    ),
    Setting(
        "local.stable_text",
        bool,
        False,
        "Mark partial text stable once partials agree and force it on every later decode "
        "(overlay mode=stable and OBS partials show text sooner; costs accuracy, see docs/guide/engines.md). "
        "Off: only finals are stable.",
        live=True,
    ),
    Setting(
        "local.word_timestamps",
        bool,
        True,
        "Compute word timings for finals (used to split long subtitles).",
        live=True,
    ),
    # -- voice activity and commits (shared by every engine) ------------------------------
    Setting(
        "vad.threshold",
        float,
        0.5,
        "Speech probability that starts an utterance (silero VAD).",
        minimum=0.05,
        maximum=0.95,
        live=True,
    ),
    Setting(
        "vad.min_silence_ms",
        int,
        400,
        "Pause that ends an utterance.",
        minimum=100,
        maximum=5000,
        live=True,
    ),
    Setting(
        "vad.sentence_end_ms",
        int,
        300,
        "Pause that ends an utterance whose text the local engine judged a finished sentence "
        "(ends in . ? or !, its last word sure); at vad.min_silence_ms or above, every pause "
        "waits that long.",
        minimum=100,
        maximum=5000,
        live=True,
    ),
    Setting(
        "vad.min_speech_ms",
        int,
        0,
        "Utterances with less speech than this are dropped as noise without decoding (0: "
        "every utterance is decoded and the hallucination guards decide).",
        minimum=0,
        maximum=5000,
        live=True,
    ),
    Setting(
        "vad.max_utterance_s",
        float,
        15.0,
        "Longest utterance: continuous speech is cut at its quietest point before this.",
        minimum=2.0,
        maximum=29.0,
        live=True,
    ),
    Setting(
        "vad.pad_ms",
        int,
        400,
        "Audio kept before speech starts (soft first syllables score low in the VAD).",
        minimum=0,
        maximum=1000,
        live=True,
    ),
    Setting(
        "vad.tail_ms",
        int,
        100,
        "Audio kept after the last speech of an utterance.",
        minimum=0,
        maximum=1000,
        live=True,
    ),
    # -- OpenAI realtime engine ---------------------------------------------------
    Setting(
        "openai.url",
        str,
        "wss://api.openai.com/v1/realtime?intent=transcription",
        "Realtime transcription WebSocket endpoint (Azure, EU data residency, a proxy, tests).",
        check=_ws_url,
    ),
    Setting(
        "openai.api_key_file",
        str,
        "",
        "File holding the API key (mode 600); empty: the OPENAI_API_KEY environment variable.",
    ),
    Setting(
        "openai.model",
        str,
        "gpt-realtime-whisper",
        "Transcription model.",
    ),
    Setting(
        "openai.delay",
        str,
        "low",
        "gpt-realtime-whisper text delay: lower is faster partials, higher is better text.",
        choices=("minimal", "low", "medium", "high", "xhigh"),
    ),
    Setting(
        "openai.noise_reduction",
        str,
        "near_field",
        "Server-side noise reduction: near_field (headset), far_field (room mic), off.",
        choices=("near_field", "far_field", "off"),
    ),
    Setting(
        "openai.buffer_s",
        float,
        300.0,
        "Speech kept while the service is unreachable, sent after reconnecting; beyond it: a gap.",
        minimum=10.0,
        maximum=3600.0,
    ),
    Setting(
        "openai.grace_s",
        float,
        30.0,
        "--engine auto: switch to the local engine after the service is unreachable this long.",
        minimum=1.0,
        maximum=3600.0,
    ),
    Setting(
        "openai.item_timeout_s",
        float,
        30.0,
        "An utterance with no transcription this long after it was sent is marked failed.",
        minimum=2.0,
        maximum=600.0,
    ),
    Setting(
        "openai.rotate_before_s",
        float,
        300.0,
        "Open a new session this long before the current one expires (60-minute cap).",
        minimum=1.0,
        maximum=1800.0,
    ),
    Setting(
        "openai.price_per_min",
        float,
        0.017,
        "USD per audio minute streamed, for the cost figure (gpt-realtime-whisper: 0.017).",
        minimum=0.0,
        maximum=10.0,
    ),
    # -- live translation, gpt-realtime-translate ------------------------------
    Setting(
        "translate.targets",
        list,
        [],
        "Languages to translate into live, one session each (es, pt, fr, ja, ru, zh, de, ko, "
        "hi, id, vi, it, en); empty: no translation. Needs the OpenAI API key.",
        check=_translate_targets,
    ),
    Setting(
        "openai.translate_url",
        str,
        "wss://api.openai.com/v1/realtime/translations?model=gpt-realtime-translate",
        "Realtime translation WebSocket endpoint (a proxy, EU data residency, tests).",
        check=_ws_url,
    ),
    Setting(
        "translate.price_per_min",
        float,
        0.034,
        "USD per audio minute streamed to each translation session (gpt-realtime-translate).",
        minimum=0.0,
        maximum=10.0,
    ),
    Setting(
        "translate.play",
        str,
        "",
        "Play one language's translated speech: LANG or LANG:DEVICE (output device number or "
        "name); empty: not played.",
        check=_translate_play,
    ),
    Setting(
        "translate.audio_dir",
        str,
        "",
        "Directory where translated speech is saved as WAV (one file per language and run); "
        "empty: not saved.",
    ),
    # -- database ------------------------------------------------------------------------
    Setting(
        "database.url",
        str,
        "",
        "SQLAlchemy URL of the transcript database; empty: SQLite in the data directory.",
        secret=True,
    ),
    Setting(
        "database.data_dir",
        str,
        "",
        "Data directory; empty: $XDG_DATA_HOME/captiond (~/.local/share/captiond).",
    ),
    # -- caption overlay ---------------------------------------------------------
    # Style settings (font_* .. speakers) are also URL query parameters of /overlay; they are
    # the only settings that reach a page (see captiond/overlay/style.py).
    Setting(
        "overlay.enabled",
        bool,
        True,
        "Serve the caption overlay page and live feed while `captiond run` runs.",
    ),
    Setting(
        "overlay.host",
        str,
        "127.0.0.1",
        "Address the overlay server binds; anything but loopback requires a token.",
    ),
    Setting(
        "overlay.port",
        int,
        8765,
        "TCP port of the overlay server (0 picks a free port).",
        minimum=0,
        maximum=65535,
    ),
    Setting(
        "overlay.token",
        str,
        "",
        "Access token for /overlay, /ws and /api when bound beyond loopback; empty: generated "
        "once and kept in the data directory.",
        secret=True,
        check=_token,
    ),
    Setting(
        "overlay.max_viewers",
        int,
        100,
        "Most overlay pages and feed clients connected at once.",
        minimum=1,
        maximum=2000,
    ),
    Setting(
        "overlay.templates",
        str,
        "",
        "Directory of your own overlay.html / index.html; {% extends \"default:overlay.html\" %} "
        "reaches the shipped one. Edits apply live.",
    ),
    Setting(
        "overlay.font_family",
        str,
        "sans-serif",
        "Caption font family (CSS list, e.g. 'Roboto, sans-serif').",
        check=_font_family,
        live=True,
    ),
    Setting(
        "overlay.font_size",
        int,
        36,
        "Caption font size in CSS pixels.",
        minimum=8,
        maximum=400,
        live=True,
    ),
    Setting(
        "overlay.font_weight",
        int,
        600,
        "Caption font weight (100..900).",
        minimum=100,
        maximum=900,
        live=True,
    ),
    Setting(
        "overlay.color",
        str,
        "#ffffff",
        "Text colour; any CSS colour: a name, #hex, bare hex in URLs (ffcc00), "
        "rgb() or hsl().",
        check=_colour,
        live=True,
    ),
    Setting(
        "overlay.outline_color",
        str,
        "#000000",
        "Colour of the text outline; any CSS colour: a name, #hex, bare hex in URLs (ffcc00), "
        "rgb() or hsl().",
        check=_colour,
        live=True,
    ),
    Setting(
        "overlay.outline_px",
        float,
        2.0,
        "Width of the text outline in CSS pixels (0: none).",
        minimum=0.0,
        maximum=20.0,
        live=True,
    ),
    Setting(
        "overlay.shadow_px",
        float,
        3.0,
        "Blur radius of the drop shadow in CSS pixels (0: none).",
        minimum=0.0,
        maximum=50.0,
        live=True,
    ),
    Setting(
        "overlay.shadow_color",
        str,
        "#000000",
        "Colour of the drop shadow; any CSS colour: a name, #hex, bare hex in URLs (ffcc00), "
        "rgb() or hsl().",
        check=_colour,
        live=True,
    ),
    Setting(
        "overlay.background_color",
        str,
        "#000000",
        "Colour of the box behind the captions; any CSS colour: a name, #hex, "
        "bare hex in URLs (ffcc00), rgb() or hsl().",
        check=_colour,
        live=True,
    ),
    Setting(
        "overlay.background_opacity",
        float,
        0.5,
        "Opacity of the box behind the captions (0: no box, 1: solid).",
        minimum=0.0,
        maximum=1.0,
        live=True,
    ),
    Setting(
        "overlay.align",
        str,
        "center",
        "Horizontal alignment of the caption text.",
        choices=("left", "center", "right"),
        live=True,
    ),
    Setting(
        "overlay.position",
        str,
        "bottom",
        "Where the caption box sits in the frame.",
        choices=("top", "middle", "bottom"),
        live=True,
    ),
    Setting(
        "overlay.margin_px",
        int,
        40,
        "Distance of the caption box from the frame edge in CSS pixels.",
        minimum=0,
        maximum=2000,
        live=True,
    ),
    Setting(
        "overlay.max_lines",
        int,
        2,
        "Most caption rows shown; older rows scroll off the top like broadcast captions.",
        minimum=1,
        maximum=20,
        live=True,
    ),
    Setting(
        "overlay.max_chars",
        int,
        42,
        "Most characters per caption row; text wraps at word boundaries.",
        minimum=10,
        maximum=200,
        live=True,
    ),
    Setting(
        "overlay.linger_s",
        float,
        4.0,
        "How long a finished line stays when nothing new is said.",
        minimum=0.5,
        maximum=600.0,
        live=True,
    ),
    Setting(
        "overlay.lang",
        str,
        "original",
        "Track to show: original, a translation language code (es, de, ...), or both.",
        check=_track,
        live=True,
    ),
    Setting(
        "overlay.speakers",
        bool,
        False,
        "Prefix lines with the speaker's name when it changes.",
        live=True,
    ),
    Setting(
        "overlay.mode",
        str,
        "live",
        "live: partial text as it is recognised; stable: only text that will not change.",
        choices=("live", "stable"),
        live=True,
    ),
    # -- logging -------------------------------------------------------------------------
    Setting(
        "log.level",
        str,
        "info",
        "Log level.",
        choices=("debug", "info", "warning", "error"),
        live=True,
    ),
    Setting(
        "log.format",
        str,
        "text",
        "Log format on stderr.",
        choices=("text", "json"),
    ),
)

# -- export: subtitles and minutes ---------------------------------------------
_EXPORT_FORMATS = ("srt", "vtt")


def _subtitle_formats(value: str) -> str | None:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or any(p not in _EXPORT_FORMATS for p in parts):
        return "must list srt and/or vtt separated by commas, e.g. 'srt,vtt'"
    return None


SETTINGS += (
    Setting(
        "export.live",
        bool,
        False,
        "Keep .srt/.vtt files of the running session updated in export.dir.",
    ),
    Setting(
        "export.dir",
        str,
        "",
        "Folder of the live subtitle files; empty: the data directory's subtitles/ folder.",
    ),
    Setting(
        "export.live_formats",
        str,
        "srt,vtt",
        "Live subtitle formats, comma separated (srt, vtt).",
        check=_subtitle_formats,
    ),
    Setting(
        "export.live_interval_s",
        float,
        2.0,
        "Live subtitle files are rewritten at most this often (seconds).",
        minimum=0.2,
        maximum=60.0,
        live=True,
    ),
    Setting(
        "export.max_cps",
        float,
        17.0,
        "Subtitle reading speed limit in characters per second (Netflix adult: 17; BBC ~15).",
        minimum=5.0,
        maximum=40.0,
        live=True,
    ),
    Setting(
        "export.max_line_chars",
        int,
        42,
        "Characters per subtitle line.",
        minimum=20,
        maximum=80,
        live=True,
    ),
    Setting(
        "export.max_lines",
        int,
        2,
        "Lines per subtitle cue.",
        minimum=1,
        maximum=3,
        live=True,
    ),
    Setting(
        "export.min_duration_ms",
        int,
        833,
        "Shortest subtitle cue (5/6 s = 20 frames at 24 fps).",
        minimum=100,
        maximum=5000,
        live=True,
    ),
    Setting(
        "export.max_duration_ms",
        int,
        7000,
        "Longest subtitle cue.",
        minimum=1000,
        maximum=20000,
        live=True,
    ),
    Setting(
        "export.min_gap_ms",
        int,
        83,
        "Least time between two subtitle cues (2 frames at 24 fps = 83 ms).",
        minimum=0,
        maximum=1000,
        live=True,
    ),
    Setting(
        "export.templates_dir",
        str,
        "",
        "Your templates (e.g. minutes.md.j2), tried before the shipped ones; "
        "empty: ~/.config/captiond/templates.",
    ),
)

# -- system audio and the two-sided call -----------------------------------------


def _label(value: str) -> str | None:
    if not value.strip() or len(value) > 40:
        return "must be a short non-empty name (at most 40 characters), e.g. Me"
    return None


SETTINGS += (
    Setting(
        "call.me_label",
        str,
        "Me",
        "Speaker name of the microphone channel in `--source mic+system`.",
        check=_label,
    ),
    Setting(
        "call.them_label",
        str,
        "Them",
        "Speaker name of the system-audio channel in `--source mic+system`.",
        check=_label,
    ),
    Setting(
        "call.echo_guard",
        bool,
        False,
        "Drop mic lines that repeat what the system channel said (speakers heard by the mic).",
    ),
    Setting(
        "call.echo_window_s",
        float,
        3.0,
        "Echo guard: how far apart in time a mic line and a system line may be to match.",
        minimum=0.0,
        maximum=30.0,
    ),
    Setting(
        "call.echo_similarity",
        float,
        0.7,
        "Echo guard: share of the mic line's words, in order, found in the system line.",
        minimum=0.1,
        maximum=1.0,
    ),
)

# -- meeting minutes ---------------------------------------------------------------


def _https_url(value: str) -> str | None:
    if not re.match(r"^https?://[^/\s]+", value):
        return "must be an http:// or https:// URL such as https://api.openai.com/v1"
    return None


SETTINGS += (
    Setting(
        "minutes.engine",
        str,
        "auto",
        "Who writes the minutes: openai (a text model, needs the API key), offline (rules, "
        "no network), auto (openai when a key is set, else offline). A failed model answer "
        "always falls back to offline minutes.",
        choices=("auto", "openai", "offline"),
        live=True,
    ),
    Setting(
        "minutes.on_session_end",
        bool,
        True,
        "Write and store the minutes when a session completes (else only on `captiond minutes`).",
        live=True,
    ),
    Setting(
        "minutes.model",
        str,
        "gpt-5-mini",
        "OpenAI text model for the minutes (Responses API with structured outputs).",
        live=True,
    ),
    Setting(
        "minutes.language",
        str,
        "",
        "Language of the minutes (ISO-639-1, e.g. en, de); empty: the meeting's own language.",
        check=_language,
        live=True,
    ),
    Setting(
        "minutes.max_cost_usd",
        float,
        0.50,
        "Cost cap of one set of minutes in USD, estimated from the tokens before sending; a "
        "meeting that would cost more gets offline minutes.",
        minimum=0.0,
        maximum=100.0,
        live=True,
    ),
    Setting(
        "minutes.url",
        str,
        "https://api.openai.com/v1/responses",
        "Responses API endpoint (a proxy, EU data residency, tests).",
        check=_https_url,
        live=True,
    ),
    Setting(
        "minutes.price_input_per_mtok",
        float,
        0.25,
        "USD per million input tokens of minutes.model (gpt-5-mini: 0.25), for the cost.",
        minimum=0.0,
        maximum=1000.0,
        live=True,
    ),
    Setting(
        "minutes.price_output_per_mtok",
        float,
        2.00,
        "USD per million output tokens of minutes.model (gpt-5-mini: 2.00), for the cost.",
        minimum=0.0,
        maximum=1000.0,
        live=True,
    ),
    Setting(
        "minutes.part_tokens",
        int,
        60_000,
        "A transcript longer than this many tokens is summarised in parts, then merged.",
        minimum=2_000,
        maximum=400_000,
        live=True,
    ),
    Setting(
        "minutes.timeout_s",
        float,
        120.0,
        "Longest wait for one answer of the model.",
        minimum=5.0,
        maximum=900.0,
        live=True,
    ),
)

# -- speaker labels (gpt-4o-transcribe-diarize) ----------------------------------------


SETTINGS += (
    Setting(
        "speakers.auto",
        bool,
        False,
        "Label speakers at the end of every session (`captiond speakers`); needs audio.keep "
        "and the OpenAI API key.",
    ),
    Setting(
        "speakers.url",
        str,
        "https://api.openai.com/v1",
        "Base URL of the Transcriptions API (a proxy, EU data residency, tests).",
        check=_https_url,
    ),
    Setting(
        "speakers.model",
        str,
        "gpt-4o-transcribe-diarize",
        "Diarizing transcription model.",
    ),
    Setting(
        "speakers.chunk_s",
        float,
        1200.0,
        "Longest piece of audio sent at once (the model takes at most 1500 s).",
        minimum=10.0,
        maximum=1400.0,
    ),
    Setting(
        "speakers.timeout_s",
        float,
        300.0,
        "How long one chunk may take to come back before it is retried.",
        minimum=1.0,
        maximum=3600.0,
    ),
    Setting(
        "speakers.price_per_min",
        float,
        0.006,
        "USD per audio minute sent for labelling, for the cost figure.",
        minimum=0.0,
        maximum=10.0,
    ),
)

BY_NAME: Mapping[str, Setting] = MappingProxyType({s.name: s for s in SETTINGS})


class Config(Mapping[str, Any]):
    """Frozen, validated settings by name (``cfg["audio.source"]``)."""

    def __init__(self, values: Mapping[str, Any], origins: Mapping[str, str], path: Path | None,
                 outputs: tuple[Any, ...] = ()):
        self._values = MappingProxyType(dict(values))
        self.origins = MappingProxyType(dict(origins))
        self.path = path
        #: The caption outputs (``[[outputs]]`` tables, then ``--output`` flags): a tuple of
        #: :class:`captiond.outputs.spec.OutputSpec`.
        self.outputs = tuple(outputs)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> Config:
        """A copy with settings changed by name, written ``section__key=value``."""
        overrides = {k.replace("__", "."): v for k, v in changes.items()}
        values = dict(self._values)
        origins = dict(self.origins)
        for name, raw in overrides.items():
            values[name] = _coerce(BY_NAME[name], raw, "override")
            origins[name] = "override"
        return Config(values, origins, self.path, self.outputs)

    def changed(self, other: Config) -> set[str]:
        return {k for k in self._values if self._values[k] != other._values.get(k)}

    def restored(self, names: Iterable[str], source: Config) -> Config:
        """A copy with ``names`` set back to ``source``'s values, under ``source``'s origins
        (values already checked; everything else about this config is kept)."""
        names = list(names)
        out = copy.copy(self)
        out._values = MappingProxyType({**self._values, **{n: source[n] for n in names}})
        out.origins = MappingProxyType({**self.origins, **{n: source.origins[n] for n in names}})
        return out

    def data_dir(self) -> Path:
        if self["database.data_dir"]:
            return Path(self["database.data_dir"]).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "captiond"

    def database_url(self) -> str:
        if self["database.url"]:
            return str(self["database.url"])
        return f"sqlite:///{self.data_dir() / 'captiond.db'}"

    def public(self) -> dict[str, Any]:
        """Values safe to show (secrets hidden)."""
        return {
            k: ("<hidden>" if BY_NAME[k].secret and v else v) for k, v in self._values.items()
        }


def default_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "captiond" / "config.toml"


def _type_name(t: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        t, t.__name__
    )


def _coerce(setting: Setting, raw: Any, where: str, *, from_text: bool = False) -> Any:
    """Check and convert one value; ``from_text`` for environment variables and flags.

    The error for a secret setting never repeats the value (it ends up in logs).
    """
    if not setting.secret:
        return _coerce_value(setting, raw, where, from_text=from_text)
    try:
        return _coerce_value(setting, raw, where, from_text=from_text)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(repr(raw), "<hidden>")) from None


def _coerce_value(setting: Setting, raw: Any, where: str, *, from_text: bool = False) -> Any:
    name = setting.name
    t = setting.type
    value: Any = raw
    if from_text and isinstance(raw, str) and t is not str:
        text = raw.strip()
        try:
            if t is bool:
                low = text.lower()
                if low in ("1", "true", "yes", "on"):
                    value = True
                elif low in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError
            elif t is int:
                value = int(text)
            elif t is float:
                value = float(text)
            elif t is list:
                value = [p.strip() for p in text.split(",") if p.strip()]
        except ValueError:
            raise ConfigError(
                f"{where}: {name} must be {_type_name(t)}, got {raw!r}"
            ) from None
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if t is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
        pass
    elif not isinstance(value, t) or (t is int and isinstance(value, bool)):
        hint = ""
        if isinstance(value, str) and t in (int, float):
            hint = " (remove the quotes)"
        elif isinstance(value, str) and t is bool:
            hint = " (write true or false without quotes)"
        elif t is str and not isinstance(value, str):
            hint = f' (put it in quotes: "{value}")'
        raise ConfigError(f"{where}: {name} must be {_type_name(t)}, got {value!r}{hint}")
    if t is float:
        problem = finite_problem(value)
        if problem:
            raise ConfigError(f"{where}: {name} {problem}, got {raw!r}{_range_hint(setting)}")
    if setting.choices and value not in setting.choices:
        raise ConfigError(
            f"{where}: {name} must be one of {', '.join(setting.choices)}, got {value!r}"
        )
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{where}: {name} must be at least {setting.minimum}, got {value!r}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"{where}: {name} must be at most {setting.maximum}, got {value!r}")
    if setting.check is not None:
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"{where}: {name} {problem}, got {value!r}")
    return value


def finite_problem(value: float) -> str | None:
    """Why a number read from outside is unusable, or None: NaN and infinity pass every ``<``
    and ``>`` check (NaN compares false to everything), so they are refused by name."""
    if not math.isfinite(value):
        return "must be a finite number (nan and inf are not numbers captiond can use)"
    return None


def _range_hint(setting: Setting) -> str:
    if setting.minimum is not None and setting.maximum is not None:
        return f" (write a number from {setting.minimum:g} to {setting.maximum:g})"
    return " (write a number such as 1.5)"


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """The line where ``key`` is set in ``[section]`` (or the section header), 1-based."""
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if current == section and key is not None and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def parse(
    text: str = "",
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Settings from TOML text, environment and overrides (already typed, e.g. from argparse)."""
    label = str(path) if path else "config"
    outputs: list[Any] = []
    values = {s.name: s.default for s in SETTINGS}
    origins = {s.name: "default" for s in SETTINGS}
    if text:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{label}: not valid TOML: {exc} (fix the syntax there)") from None
        sections = {s.section for s in SETTINGS}
        outputs = parse_output_tables(data.pop(OUTPUTS_KEY, []), text, label)
        for section, table in data.items():
            if not isinstance(table, dict):
                guess = [s.name for s in SETTINGS if s.key == section]
                hint = f" (write it as [{guess[0].split('.')[0]}] {section} = ...)" if guess else ""
                raise ConfigError(f"{label}: '{section}' must be a [section]{hint}")
            if section not in sections:
                line = _line_of(text, section, None)
                where = f"{label}:{line}" if line else label
                raise ConfigError(
                    f"{where}: unknown section [{section}]{_suggest(section, sections)}"
                )
            for key, raw in table.items():
                name = f"{section}.{key}"
                line = _line_of(text, section, key)
                where = f"{label}:{line}" if line else label
                if name not in BY_NAME:
                    keys = [s.key for s in SETTINGS if s.section == section]
                    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]}?)" if close else _suggest(name, BY_NAME)
                    raise ConfigError(f"{where}: unknown setting {name}{hint}")
                values[name] = _coerce(BY_NAME[name], raw, where)
                origins[name] = label
    env = os.environ if env is None else env
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = _coerce(
                setting, env[setting.env], f"environment {setting.env}", from_text=True
            )
            origins[setting.name] = "environment"
    stray = [k for k in env if k.startswith(ENV_PREFIX) and k not in _ENV_NAMES]
    for k in stray:
        if k not in _NON_SETTING_ENV:
            guess = difflib.get_close_matches(k, list(_ENV_NAMES), n=1, cutoff=0.6)
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            raise ConfigError(f"environment: unknown variable {k}{hint}")
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name == OUTPUTS_KEY:  # --output flags, after the file's outputs
            outputs += parse_output_flags(list(raw), outputs)
            continue
        if name not in BY_NAME:
            raise ConfigError(f"unknown setting {name}{_suggest(name, BY_NAME)}")
        values[name] = _coerce(BY_NAME[name], raw, f"--{name.split('.', 1)[1]}", from_text=True)
        origins[name] = "command line"
    return Config(values, origins, path, tuple(outputs))


_ENV_NAMES = frozenset(s.env for s in SETTINGS)
#: Environment variables with the prefix that are not settings.
_NON_SETTING_ENV = frozenset({"CAPTIOND_CONFIG"})


def load(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the config file (an explicit path must exist; the default may be absent)."""
    env = os.environ if env is None else env
    explicit = path is not None or "CAPTIOND_CONFIG" in env
    file = Path(path or env.get("CAPTIOND_CONFIG") or default_path(env)).expanduser()
    text = ""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"config file {file} does not exist (create it, or leave out --config)"
            ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    return parse(text, path=file if text else None, env=env, overrides=overrides)


#: How to regenerate docs/reference/settings.md (its first line says so; tests/test_config.py
#: checks the file is current).
DOCS_COMMAND = "python -m captiond config --docs > docs/reference/settings.md"

_DOCS_INTRO = """\
Every setting can be set in the config file (`~/.config/captiond/config.toml`, or
`--config FILE`) as `key = value` under `[section]`, overridden by the environment variable
shown, and some by command-line flags (`captiond run --help`). `captiond config` shows the
values in force; a wrong value or an unknown key is an error naming the file, line and fix.
Every number must be finite: `nan` and `inf` are refused in the file, the
environment, flags and overlay URLs with the usual one line, e.g.
`config.toml:7: vad.threshold must be a finite number (nan and inf are not numbers captiond can
use), got nan (write a number from 0.05 to 0.95)`.

Caption outputs are `[[outputs]]` tables, described in [Caption outputs](../guide/outputs.md).
"""


def docs_page() -> str:
    """docs/reference/settings.md: a generated-file notice, how settings are given, the table."""
    return (
        f"<!-- Generated from the settings registry (captiond/config.py): do not edit.\n"
        f"     Regenerate: {DOCS_COMMAND} -->\n"
        f"# Settings reference\n\n"
        f"Generated from the settings registry in `captiond/config.py`; regenerate with "
        f"`{DOCS_COMMAND}`.\n\n"
        f"{_DOCS_INTRO}\n{docs_table()}\n"
    )


def docs_table() -> str:
    """The settings as a Markdown table (docs/reference/settings.md is generated from this)."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "" if s.default == "" else s.default
        if isinstance(default, bool):
            default = str(default).lower()
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        rows.append(f"| `{s.name}` | `{s.env}` | `{default}` | {s.help}{choices} |")
    return "\n".join(rows)
