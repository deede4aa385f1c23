"""``captiond minutes SESSION [--regenerate]``: a session's stored minutes, written when missing.

Minutes are stored with the session and written again only when asked (``--regenerate``):
by an OpenAI text model when ``minutes.engine`` and the API key allow it, else offline. The
cost of model-written minutes is printed on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from captiond.commands.browse import open_store
from captiond.config import Config

_FLAGS = {
    "--engine": "minutes.engine",
    "--model": "minutes.model",
    "--language": "minutes.language",
    "--max-cost-usd": "minutes.max_cost_usd",
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from captiond.cli import add_setting_flags

    p = sub.add_parser(
        "minutes",
        parents=[common],
        help="show a session's minutes (written and stored when missing, or with --regenerate)",
        description="Show a session's stored minutes; write and store them when there are none "
                    "or with --regenerate (by an OpenAI text model with a key, else offline).",
    )
    p.add_argument("session", help="session id or 'last'")
    p.add_argument("--regenerate", action="store_true",
                   help="write the minutes again and replace the stored ones")
    p.add_argument("--json", action="store_true", help="print the minutes as JSON")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="write FILE (atomically) instead of stdout")
    add_setting_flags(p, _FLAGS)
    p.set_defaults(func=cmd_minutes)


def cmd_minutes(args: argparse.Namespace, cfg: Config) -> int:
    from captiond.commands.export import _emit, minutes_markdown
    from captiond.exports import digest, produce
    from captiond.exports.document import load_session

    store = open_store(cfg)
    try:
        doc = load_session(store, args.session)
        minutes = None if args.regenerate else produce.stored(store, doc)
        if minutes is None:
            minutes = write_for(doc, cfg)
            produce.save(store, doc, minutes)
            what = "written" if not args.regenerate else "written again"
        else:
            what = "stored"
    finally:
        store.close()
    lines = digest.text_lines(doc.original)
    about = f"{minutes.source}" + (f", {minutes.model}" if minutes.model else "")
    cost = f", ${minutes.cost_usd:.4f}" if minutes.source == "openai" else ""
    print(f"captiond: minutes of session {doc.id} {what} ({about}{cost})", file=sys.stderr)
    for note in minutes.notes:
        print(f"captiond: {note}", file=sys.stderr)
    if args.json:
        text = json.dumps(digest.to_json(minutes, lines), ensure_ascii=False, indent=2) + "\n"
    else:
        text = minutes_markdown(doc, cfg, None, minutes)
    _emit([text], args.output)
    return 0


def write_for(doc: Any, cfg: Config) -> Any:
    """Minutes of ``doc`` as the settings say (the key is read only when it may be used)."""
    from captiond.exports import produce

    opts = produce.Options.from_config(cfg)
    key = None
    if opts.engine != "offline":
        from captiond.engines.openai import resolve_api_key

        key = resolve_api_key(cfg)
    return produce.write_minutes(doc, opts, key)
