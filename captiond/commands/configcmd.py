"""``captiond config``: the settings in force and where each came from; ``--docs`` for the
settings reference page (docs/reference/settings.md)."""

from __future__ import annotations

import argparse
from typing import Any

from captiond import config
from captiond.config import Config


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "config",
        parents=[common],
        help="show the settings in force (and check the config file)",
    )
    p.add_argument("--docs", action="store_true", help="print the settings reference page (Markdown; docs/reference/settings.md)")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    if args.docs:
        print(config.docs_page(), end="")
        return 0
    where = cfg.path or f"{config.default_path()} (absent: defaults)"
    print(f"# config file: {where}")
    for name, value in cfg.public().items():
        shown = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        print(f"{name} = {shown}    # {cfg.origins[name]}")
    for out in cfg.outputs:  # where each sends, never a secret (a URL shows scheme and host)
        print(f"# output {out.name}: kind={out.kind} target={out.target()} track={out.track}"
              f"    # {out.where or out.origin}")
    return 0
