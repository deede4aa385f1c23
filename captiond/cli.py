"""The ``captiond`` command line: ``main(argv) -> exit code``.

Each command lives in a module of :mod:`captiond.commands` that exposes ``register(sub)``; it
adds its sub-parser (with ``parents=[common]``) and sets ``func(args, cfg) -> int``. Settings flags come from the registry in
:mod:`captiond.config` (:func:`add_setting_flags`), so ``--help``, the TOML file and the
environment always agree.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from captiond import __version__, config
from captiond.errors import CaptiondError

#: Modules that register commands, in ``--help`` order.
COMMAND_MODULES = (
    "captiond.commands.run",
    "captiond.commands.browse",
    "captiond.commands.db",
    "captiond.commands.configcmd",
    "captiond.commands.export",
    "captiond.commands.minutes",
    "captiond.commands.service",
    "captiond.commands.models",
    "captiond.commands.speakers",
)

log = logging.getLogger("captiond")


def add_setting_flags(parser: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    """Add ``--flag`` options for settings: ``{"--source": "audio.source", ...}``."""
    for flag, name in flags.items():
        setting = config.BY_NAME[name]
        help_text = f"{setting.help} [{setting.name}, {setting.env}]"
        if setting.type is bool:
            parser.add_argument(
                flag,
                dest=_dest(name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=_dest(name), default=None, metavar=name.split(".")[1].upper(),
                help=help_text,
            )


def _dest(name: str) -> str:
    return "setting__" + name.replace(".", "__")


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("setting__") and value is not None:
            out[key[len("setting__") :].replace("__", ".")] = value
    return out


def load_config(args: argparse.Namespace) -> config.Config:
    return config.load(getattr(args, "config", None), overrides=setting_overrides(args))


#: The common options' values when not given.
COMMON_DEFAULTS = {"config": None, "verbose": False, "setting__log__format": None,
                   "setting__database__url": None}


def _add_common(p: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    p.add_argument("--config", default=s,
                   help="config file (default ~/.config/captiond/config.toml)")
    p.add_argument("-v", "--verbose", action="store_true", default=s, help="debug logging")
    p.add_argument(
        "--log-format", choices=("text", "json"), dest="setting__log__format", default=s,
        help="log format on stderr [log.format]",
    )
    p.add_argument(
        "--db", dest="setting__database__url", default=s, metavar="URL",
        help="database URL (default: SQLite in the data directory) [database.url]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captiond",
        description="Live captions and meeting transcripts, local or with OpenAI realtime.",
    )
    parser.add_argument("--version", action="version", version=f"captiond {__version__}")
    # The options every command takes, accepted before the command too (`captiond --db URL
    # sessions`). Unset options stay absent (SUPPRESS) so the command's copy cannot hide the
    # global one; main() fills in the defaults.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in COMMON_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    from captiond.logs import setup_logging

    try:
        cfg = load_config(args)
    except CaptiondError as exc:
        setup_logging("info", "text")
        print(f"captiond: {exc}", file=sys.stderr)
        if not getattr(args, "config_optional", False):
            return 2
        # `captiond status` is most needed when the file is broken: the running daemon keeps
        # its last good settings, and its status says so.
        cfg = config.parse("", env={})
    setup_logging("debug" if args.verbose else cfg["log.level"], cfg["log.format"])
    try:
        return int(args.func(args, cfg) or 0)
    except CaptiondError as exc:
        print(f"captiond: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # Task groups wrap a fatal engine error (e.g. the key refused): show its sentence.
        ours = group.subgroup(lambda e: isinstance(e, CaptiondError))
        if ours is None:
            raise
        while isinstance(ours, BaseExceptionGroup):
            ours = ours.exceptions[0]
        print(f"captiond: {ours}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `captiond show last | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
