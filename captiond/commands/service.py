"""``captiond status`` (ask the running daemon) and ``captiond install-service`` (systemd unit)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import sysconfig
from pathlib import Path
from typing import Any

from captiond.config import Config
from captiond.control import query_status, socket_path
from captiond.errors import CaptiondError
from captiond.resources import systemd_dir

USER_UNIT_DIR = Path("~/.config/systemd/user")
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
UNIT_NAME = "captiond.service"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="show what the running daemon is doing",
        description="Ask the running daemon (over its control socket) for its status.",
    )
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status, config_optional=True)

    p = sub.add_parser(
        "install-service",
        parents=[common],
        help="install the systemd unit for this installation",
        description="Write the systemd unit with ExecStart pointing at this installation and "
        "print the systemctl command that starts it.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--user", dest="scope", action="store_const", const="user",
                       help="a user service (default: audio lives in your session)")
    scope.add_argument("--system", dest="scope", action="store_const", const="system",
                       help="a system-wide service running as the user 'captiond'")
    p.add_argument("--dry-run", action="store_true", help="print the unit instead of writing it")
    p.add_argument("--path", help="write the unit here instead of the systemd directory")
    p.set_defaults(func=cmd_install_service, scope="user")


# -- status ------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    s = int(seconds or 0)
    if s >= 86_400:
        return f"{s // 86_400} d {s // 3600 % 24} h"
    if s >= 3600:
        return f"{s // 3600} h {s // 60 % 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def format_output(out: dict[str, Any]) -> str:
    """One output's status line: ``ok, 12 lines sent, 0 pending (obs → ws://127.0.0.1:4455)``."""
    text = f"{out.get('state')}"
    if out.get("error") and out.get("state") in ("failing", "waiting"):
        text += f" ({out['error']})"
    text += f", {out.get('sent_lines', 0)} lines sent, {out.get('pending', 0)} pending"
    if out.get("dropped"):
        text += f", {out['dropped']} dropped"
    track = "" if out.get("track") in (None, "original") else f", track {out['track']}"
    return text + f" ({out.get('kind')} → {out.get('target')}{track})"


def format_status(st: dict[str, Any]) -> str:
    """The status as the lines ``captiond status`` prints."""
    rows = [
        ("daemon", f"{st.get('state')} (pid {st.get('pid')}), up {_duration(st.get('uptime_s'))}"),
        ("engine", f"{st.get('engine') or '-'} ({st.get('engine_state') or 'starting'})"),
        ("source", st.get("source") or "-"),
        ("session", str(st.get("session") or "-")),
        ("lines stored", str(st.get("lines_stored", 0))),
        ("audio", _duration(st.get("audio_s"))),
        ("lag", f"{float(st.get('lag_s') or 0):.1f} s"),
        ("gaps", str(st.get("gaps", 0))),
        ("dropped", f"{st.get('dropped', 0)} (captiond show --dropped lists them)"),
        ("viewers", "overlay off" if st.get("viewers") is None else str(st["viewers"])),
        ("cost so far", f"${float(st.get('cost_usd') or 0):.4f}"),
    ]
    if st.get("overlay_url"):
        rows.append(("overlay", st["overlay_url"]))
    if st.get("store_errors"):
        rows.append(("store errors", str(st["store_errors"])))
    if st.get("reload_error"):
        rows.append(("config", f"last reload failed, old settings kept: {st['reload_error']}"))
    for out in st.get("outputs") or []:
        rows.append((f"output {out.get('name')}", format_output(out)))
    for component, names in (st.get("restart_needed") or {}).items():
        rows.append(("restart needed", f"{component}: {', '.join(names)}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    st = query_status(socket_path())
    if "error" in st:
        raise CaptiondError(f"the daemon answered: {st['error']}")
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


# -- install-service -------------------------------------------------------------------


def exec_start() -> list[str]:
    """The command that runs this installation's daemon.

    The ``captiond`` script next to this interpreter if there is one (a pip/pipx install),
    otherwise ``python -m captiond`` with this interpreter (a virtualenv or a checkout).
    """
    script = Path(sysconfig.get_path("scripts")) / "captiond"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), "run"]
    return [sys.executable, "-m", "captiond", "run"]


def _source_checkout() -> Path | None:
    """The checkout directory when captiond is imported from one (not installed)."""
    import captiond

    package = Path(captiond.__file__).resolve().parent
    purelib = Path(sysconfig.get_path("purelib")).resolve()
    if purelib in package.parents:
        return None
    return package.parent


def render_unit(scope: str) -> str:
    """The unit text for ``scope`` ("user" or "system") with this installation's ExecStart."""
    name = "captiond.service" if scope == "user" else "captiond-system.service"
    text = (systemd_dir() / name).read_text(encoding="utf-8")
    command = shlex.join(exec_start())
    lines = []
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            lines.append(f"ExecStart={command}")
            checkout = _source_checkout()
            if checkout is not None:
                # Not installed: the interpreter finds the package through PYTHONPATH.
                lines.append(f"Environment={shlex.quote('PYTHONPATH=' + str(checkout))}")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def cmd_install_service(args: argparse.Namespace, cfg: Config) -> int:
    scope = args.scope
    unit = render_unit(scope)
    if args.path:
        target = Path(args.path).expanduser()
    else:
        target = (USER_UNIT_DIR if scope == "user" else SYSTEM_UNIT_DIR).expanduser() / UNIT_NAME
    systemctl = "systemctl --user" if scope == "user" else "sudo systemctl"
    start_line = f"{systemctl} daemon-reload && {systemctl} enable --now captiond"
    logs = "journalctl --user -u captiond -f" if scope == "user" else "journalctl -u captiond -f"
    if args.dry_run:
        print(f"# would write {target}")
        sys.stdout.write(unit)
        print(f"# then run: {start_line}")
        return 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(unit, encoding="utf-8")
        tmp.replace(target)
    except PermissionError:
        hint = "run it with sudo" if scope == "system" else "check the directory's permissions"
        raise CaptiondError(f"cannot write {target} (permission denied; {hint})") from None
    except OSError as exc:
        raise CaptiondError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"wrote {target}")
    print(f"start it (and at every login/boot) with:\n  {start_line}")
    print(f"follow its log with: {logs}")
    return 0
