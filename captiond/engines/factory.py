"""Builds the engine a config asks for. One Whisper model is loaded per process and shared."""

from __future__ import annotations

import threading

from captiond.config import Config
from captiond.engines.base import Engine
from captiond.engines.local import LocalEngine
from captiond.engines.whisper import WhisperBackend

_backends: dict[tuple[str, int, str, str, int], WhisperBackend] = {}
_lock = threading.Lock()


def whisper_backend(cfg: Config) -> WhisperBackend:
    """The shared model for these settings (loaded on first use)."""
    key = (
        cfg["local.model"],
        cfg["local.threads"],
        cfg["local.compute_type"],
        cfg["engine.language"],
        cfg["local.beam_size"],
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
            )
            _backends[key] = backend
        return backend


def engine_name(cfg: Config) -> str:
    """The engine that will run: ``auto`` resolves to ``local`` without an OpenAI key."""
    name = cfg["engine.name"]
    if name == "auto":
        return "local"
    return name


def build_engine(cfg: Config, *, channel: str = "", realtime: bool = True) -> Engine:
    from captiond.pipeline import segmenter_params

    name = engine_name(cfg)
    if name == "local":
        prefix = f"{channel}-loc" if channel else "loc"
        return LocalEngine(
            whisper_backend(cfg),
            segmenter_params(cfg),
            partial_interval_s=cfg["local.partial_interval_s"],
            word_timestamps=cfg["local.word_timestamps"],
            partials=realtime,
            id_prefix=prefix,
        )
    from captiond.errors import EngineFatal

    raise EngineFatal(f"engine '{name}' is not available in this build (use --engine local)")
