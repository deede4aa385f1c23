"""``captiond speakers``: label who said what in a stored session, name known voices.

    captiond speakers SESSION               label the session's lines (its kept audio)
    captiond speakers add NAME CLIP         store a 2-10 s clip of NAME's voice
    captiond speakers rename SESSION A Ann  every line of label A becomes Ann's
    captiond speakers list                  the stored known speakers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from captiond.commands.browse import open_store
from captiond.config import Config
from captiond.errors import CaptiondError

#: Longest speaker name (the column holds 64 characters).
NAME_MAX = 64


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "speakers", parents=[common],
        help="label who said what in a session (OpenAI diarization of its kept audio)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="+", metavar="SESSION | add NAME CLIP | rename SESSION OLD NEW"
                   " | list")
    p.add_argument("-y", "--yes", action="store_true",
                   help="send without asking (the cost is printed before)")
    p.add_argument("--fresh", action="store_true",
                   help="send every chunk again (default: chunks labelled before are reused)")
    p.set_defaults(func=cmd_speakers)


def cmd_speakers(args: argparse.Namespace, cfg: Config) -> int:
    words = list(args.words)
    verb = words[0]
    if verb == "add":
        if len(words) != 3:
            raise CaptiondError("usage: captiond speakers add NAME CLIP")
        return add(cfg, words[1], Path(words[2]))
    if verb == "rename":
        if len(words) != 4:
            raise CaptiondError("usage: captiond speakers rename SESSION OLD NEW")
        return rename(cfg, words[1], words[2], words[3])
    if verb == "list":
        return list_known(cfg)
    if len(words) != 1:
        raise CaptiondError("usage: captiond speakers SESSION (a number or 'last')")
    return label(cfg, verb, yes=args.yes, fresh=args.fresh)


def _name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > NAME_MAX:
        raise CaptiondError(f"a speaker name must be 1 to {NAME_MAX} characters, got {name!r}")
    return name


def add(cfg: Config, name: str, clip: Path) -> int:
    from captiond.speakers.service import check_clip, decode_clip, wav_bytes

    name = _name(name)
    if not clip.is_file():
        raise CaptiondError(f"no file {clip} (give a 2-10 s recording of {name} speaking)")
    samples = decode_clip(clip)
    check_clip(samples, str(clip))
    store = open_store(cfg)
    try:
        store.add_known_speaker(name, wav_bytes(samples), len(samples) * 1000 // 16_000)
    finally:
        store.close()
    print(f"known speaker {name}: {len(samples) / 16_000:.1f} s clip stored")
    return 0


def rename(cfg: Config, session: str, old: str, new: str) -> int:
    new = _name(new)
    store = open_store(cfg)
    try:
        row = store.resolve_session(session)
        n = store.rename_speaker(row.id, old, new)
    finally:
        store.close()
    if not n:
        raise CaptiondError(f"session {row.id} has no lines of {old!r} (see `captiond show "
                            f"{row.id}` for its speakers)")
    print(f"session {row.id}: {n} lines of {old} are now {new}'s")
    return 0


def list_known(cfg: Config) -> int:
    store = open_store(cfg)
    try:
        rows = store.known_speakers()
    finally:
        store.close()
    if not rows:
        print("no known speakers (add one: captiond speakers add NAME CLIP)")
    for r in rows:
        print(f"{r.name}\t{r.clip_ms / 1000:.1f} s")
    return 0


def label(cfg: Config, session: str, *, yes: bool = True, fresh: bool = False,
          out: Any = None) -> int:
    from captiond.engines.openai import resolve_api_key
    from captiond.speakers.service import (
        chunk_count,
        estimate_cost,
        label_session,
        openai_transcriber,
    )

    out = out or sys.stdout
    key = resolve_api_key(cfg)
    if not key:
        raise CaptiondError("speaker labels need the OpenAI API key: set OPENAI_API_KEY or "
                            "openai.api_key_file")
    store = open_store(cfg)
    try:
        row = store.resolve_session(session)
        if row.status == "running":
            raise CaptiondError(f"session {row.id} is still running; label it once it ends")
        channels = (row.meta or {}).get("channels") or []
        if len(channels) > 1:
            # Its lines already say who speaks (Me / Them); labels would overwrite them.
            raise CaptiondError(
                f"session {row.id} was captured as {' + '.join(channels)}: its lines are already "
                "labelled by channel (call.me_label, call.them_label); rename them with "
                f"`captiond speakers rename {row.id} Them NAME`")
        seconds = row.audio_seconds or 0.0
        before = estimate_cost(seconds, cfg["speakers.price_per_min"])
        n = chunk_count(seconds, cfg["speakers.chunk_s"])
        print(f"session {row.id}: {seconds / 60:.1f} min of audio in {n} chunk(s) to "
              f"{cfg['speakers.model']}, about ${before:.3f}", file=out)
        if not yes and sys.stdin.isatty():
            sys.stderr.write("send it? [y/N] ")
            sys.stderr.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                print("nothing sent", file=out)
                return 1
        if fresh:
            store.clear_speaker_turns(row.id)
        result = label_session(store, cfg, row.id, openai_transcriber(cfg, key),
                               report=lambda s: print("  " + s, file=out))
    finally:
        store.close()
    who = ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.labels.items()) or "nobody"
    print(f"session {result.session_id}: {result.lines} lines labelled ({result.split} split at "
          f"a change of speaker); {result.sent} of {result.chunks} chunk(s) sent, cost "
          f"${result.cost_usd:.3f}; speakers: {who}", file=out)
    if result.labels:
        print(f"rename a label: captiond speakers rename {result.session_id} "
              f"'{next(iter(result.labels))}' NAME", file=out)
    return 0
