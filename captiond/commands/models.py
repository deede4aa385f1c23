"""``captiond models``: the bundled Whisper model and those in the Hugging Face cache."""

from __future__ import annotations

import argparse
from typing import Any

from captiond.config import Config


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "models", parents=[common], help="list the Whisper models on disk (local.model)",
        description="The bundled model and the Whisper models in the Hugging Face cache, with "
        "their sizes. Any faster-whisper name (base.en, small, large-v3-turbo, ...) is "
        "downloaded on first use.",
    )
    p.set_defaults(func=cmd_models)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def cmd_models(args: argparse.Namespace, cfg: Config) -> int:
    from captiond.engines import models

    chosen = cfg["local.model"] or models.BUNDLED_NAME
    found = models.list_models()
    width = max([len(m.name) for m in found] + [4])
    for m in found:
        mark = "*" if m.name == chosen or str(m.path) == chosen else " "
        where = "bundled" if m.bundled else "cached"
        print(f"{mark} {m.name:<{width}}  {_mib(m.size_bytes):>10}  {where}  {m.path}")
    print(f"cache: {models.cache_dir()}")
    names = ", ".join(n for n in models.model_names() if n not in {m.name for m in found})
    print(f"more by name (downloaded on first use with --model NAME): {names}")
    return 0
