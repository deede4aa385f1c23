"""Builds the engine a config asks for. One Whisper model is loaded per process and shared."""

from __future__ import annotations

import threading

from captiond.config import Config
from captiond.engines.base import Engine
from captiond.engines.local import LocalEngine
from captiond.engines.whisper import WhisperBackend

#: Models kept loaded for reuse: the running one and the one a live reload switched from (an
#: engine still draining holds its own reference; the cache only decides what is reused).
MAX_SHARED_MODELS = 2

_backends: dict[tuple[object, ...], WhisperBackend] = {}
_lock = threading.Lock()


def whisper_backend(cfg: Config) -> WhisperBackend:
    """The shared model for these settings (loaded on first use)."""
    key = (
        cfg["local.model"],
        cfg["local.threads"],
        cfg["local.compute_type"],
        cfg["engine.language"],
        cfg["local.beam_size"],
        cfg["local.device"],
        cfg["local.hotwords"],
        cfg["local.initial_prompt"],
        cfg["local.final_window"],
    )
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = WhisperBackend(
                cfg["local.model"] or None,
                threads=cfg["local.threads"],
                compute_type=cfg["local.compute_type"],
                language=cfg["engine.language"] or None,
                beam_size=cfg["local.beam_size"],
                device=cfg["local.device"],
                hotwords=cfg["local.hotwords"],
                initial_prompt=cfg["local.initial_prompt"],
                final_window=cfg["local.final_window"],
            )
            _backends[key] = backend
        else:
            del _backends[key]  # most recently used goes last
            _backends[key] = backend
        while len(_backends) > MAX_SHARED_MODELS:
            del _backends[next(iter(_backends))]
        return backend


def engine_name(cfg: Config) -> str:
    """The engine that will run: ``auto`` is OpenAI (with local fallback) when a key is
    configured, else ``local``."""
    name = cfg["engine.name"]
    if name == "auto":
        from captiond.engines.openai import resolve_api_key

        return "auto" if resolve_api_key(cfg) else "local"
    return name


def engine_sample_rate(cfg: Config) -> int:
    """The audio rate the configured engine takes (what the stream is resampled to)."""
    if engine_name(cfg) == "local":
        return LocalEngine.sample_rate
    from captiond.realtime.protocol import SAMPLE_RATE

    return SAMPLE_RATE


def build_engine(
    cfg: Config, *, channel: str = "", realtime: bool = True, id_prefix: str | None = None
) -> Engine:
    from captiond.audio.segmenter import segmenter_params

    name = engine_name(cfg)
    if name == "local":
        prefix = id_prefix or (f"{channel}-loc" if channel else "loc")
        return LocalEngine(
            whisper_backend(cfg),
            segmenter_params(cfg),
            partial_interval_s=cfg["local.partial_interval_s"],
            word_timestamps=cfg["local.word_timestamps"],
            stable_text=cfg["local.stable_text"],
            partials=realtime,
            id_prefix=prefix,
        )
    if name in ("openai", "auto"):
        return _openai_engine(cfg, name, channel=channel, realtime=realtime)
    from captiond.errors import EngineFatal

    raise EngineFatal(f"engine '{name}' is not available in this build (use --engine local)")


def _openai_engine(cfg: Config, name: str, *, channel: str, realtime: bool) -> Engine:
    """``openai``: the realtime engine alone; ``auto``: with the local engine as fallback."""
    from captiond.engines.auto import AutoEngine
    from captiond.engines.openai import OpenAIEngine, OpenAIOptions, resolve_api_key
    from captiond.errors import EngineFatal

    key = resolve_api_key(cfg)
    if not key:
        raise EngineFatal(
            "no OpenAI API key: set OPENAI_API_KEY or openai.api_key_file (or use --engine local)"
        )
    options = OpenAIOptions.from_config(cfg)
    base = f"{channel}-" if channel else ""
    if name == "openai":
        return OpenAIEngine(key, options, id_prefix=f"{base}oa-")

    def make_local(prefix: str) -> Engine:
        return build_engine(cfg.replace(engine__name="local"), channel=channel,
                            realtime=realtime, id_prefix=f"{base}{prefix}")

    def decode(samples, offset_ms):  # type: ignore[no-untyped-def]
        return whisper_backend(cfg).decode(samples, offset_ms=offset_ms, word_timestamps=True)

    return AutoEngine(
        lambda prefix: OpenAIEngine(key, options, id_prefix=f"{base}{prefix}"),
        make_local,
        decode=decode,
        grace_s=cfg["openai.grace_s"],
        url=options.url,
        api_key=key,
        language=options.language,
    )
