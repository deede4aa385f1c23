"""Logging on stderr: stable event names with key=value fields, text or JSON, secrets redacted.

Log calls read ``log.info("engine.started name=%s", name)``: the first word is the event name.
journald adds timestamps, so the text format has none. Anything that looks like an API key or
bearer token is replaced before a record is written, whatever logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys

_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]{8,}"),
    re.compile(r"(?i)(token=)[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",]{8,}"),
)
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact this exact value from every log record from now on."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    for secret in _extra_secrets:
        text = text.replace(secret, "<redacted>")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "<redacted>", text)
    return text


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        out = f"{record.levelname.lower()} {message}"
        if record.exc_info:
            out += "\n" + redact(self.formatException(record.exc_info))
        return out


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        event, _, rest = message.partition(" ")
        data: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        for pair in re.finditer(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)", rest):
            value = pair.group(2)
            if value[:1] in "'\"":
                value = value[1:-1]
            data[pair.group(1)] = value
        if rest and not data.keys() - {"ts", "level", "logger", "event"}:
            data["message"] = rest
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("captiond").setLevel(getattr(logging, level.upper(), logging.INFO))
