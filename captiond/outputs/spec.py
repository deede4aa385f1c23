"""What an output is, as the config file and ``--output`` flags describe it [pure].

In ``config.toml`` each output is an ``[[outputs]]`` table::

    [[outputs]]
    kind = "youtube"                     # obs, youtube, zoom or webhook
    url_file = "~/.config/captiond/youtube-url"
    track = "original"                   # or a translation language: "es"

On the command line the same keys, comma separated: ``--output kind=obs,password_env=OBS_PW``
(a leading bare word is the kind: ``--output obs``).

Secrets (the YouTube/Zoom caption URLs carry their credentials in the query, the OBS
password, the webhook key) come from files or environment variables named here; the values
themselves are read by :func:`resolve` when the output starts, registered with the log
redactor and never stored in the config, the database or a status page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from captiond.errors import ConfigError

KINDS = ("obs", "youtube", "zoom", "webhook")
#: Outputs one daemon runs at most.
MAX_OUTPUTS = 16
#: Where OBS (28+) listens for obs-websocket v5 by default.
OBS_DEFAULT_URL = "ws://127.0.0.1:4455"
#: Least seconds between two sends, by kind (OBS: a roll-up step; YouTube/Zoom: a post).
DEFAULT_INTERVAL_S = {"obs": 0.5, "youtube": 1.0, "zoom": 1.0, "webhook": 0.0}
#: How long one request may take before it counts as failed and is retried.
DEFAULT_TIMEOUT_S = 10.0
#: Largest secret file read (a URL or a password is far smaller).
MAX_SECRET_BYTES = 8192

_NAME_RE = re.compile(r"[A-Za-z0-9_\-]{1,40}")
_TRACK_RE = re.compile(r"original|[a-z]{2,3}")
_LANG_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z]{2,4})?")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,100}")


@dataclass(frozen=True)
class OutputSpec:
    """One configured output. ``where`` names its place (``config.toml:12``, ``--output``)."""

    kind: str
    name: str
    url: str = ""
    url_file: str = ""
    url_env: str = ""
    password_file: str = ""
    password_env: str = ""
    secret_file: str = ""
    secret_env: str = ""
    track: str = "original"
    speakers: bool = True
    lang: str = "en-US"
    partials: bool = False
    min_interval_s: float = 0.0
    timeout_s: float = DEFAULT_TIMEOUT_S
    where: str = field(default="", compare=False)
    #: "file" or "command line": a reload keeps the command line's.
    origin: str = field(default="file")
    #: The flag text, for outputs from the command line (a reload parses it again).
    flag: str = field(default="", compare=False)

    def target(self) -> str:
        """Where it sends, safe to show: scheme and host of a literal URL, else the source."""
        if self.url:
            return safe_url(self.url)
        if self.url_file:
            return f"url from file {self.url_file}"
        if self.url_env:
            return f"url from ${self.url_env}"
        return OBS_DEFAULT_URL if self.kind == "obs" else "-"


def safe_url(url: str) -> str:
    """A URL as it may be shown: scheme, host and port (the path and query carry tokens)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


#: key -> (type, kinds it applies to; empty: all).
_KEYS: dict[str, tuple[type, tuple[str, ...]]] = {
    "kind": (str, ()),
    "name": (str, ()),
    "url": (str, ()),
    "url_file": (str, ()),
    "url_env": (str, ()),
    "password_file": (str, ("obs",)),
    "password_env": (str, ("obs",)),
    "secret_file": (str, ("webhook",)),
    "secret_env": (str, ("webhook",)),
    "track": (str, ()),
    "speakers": (bool, ()),
    "lang": (str, ("zoom",)),
    "partials": (bool, ("obs",)),
    "min_interval_s": (float, ()),
    "timeout_s": (float, ()),
}
#: Keys whose values are secret if written literally (they never appear in an error).
_SECRET_KEYS = frozenset({"url"})


def _line_of_table(text: str, index: int, key: str | None) -> int | None:
    """The line of ``key`` in the ``index``-th ``[[outputs]]`` table (or of its header)."""
    seen = -1
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if re.match(r"^\[\[\s*outputs\s*\]\]", stripped):
            seen += 1
            inside = seen == index
            if inside and key is None:
                return number
            continue
        if stripped.startswith("["):
            inside = False
            continue
        if inside and key is not None and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _check(raw: Mapping[str, Any], where_of: Any, label: str) -> dict[str, Any]:
    """Validate one output's keys; ``where_of(key)`` names the place for an error."""
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        shown = f", got {kind!r}" if kind is not None else ""
        raise ConfigError(f"{where_of('kind')}: {label}.kind must be one of "
                          f"{', '.join(KINDS)}{shown} (e.g. kind = \"youtube\")")
    out: dict[str, Any] = {"kind": kind}
    for key, value in raw.items():
        if key not in _KEYS:
            import difflib

            close = difflib.get_close_matches(key, list(_KEYS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(_KEYS)})"
            raise ConfigError(f"{where_of(key)}: unknown output setting {label}.{key}{hint}")
        typ, kinds = _KEYS[key]
        shown = "<hidden>" if key in _SECRET_KEYS else repr(value)
        if kinds and kind not in kinds:
            raise ConfigError(f"{where_of(key)}: {label}.{key} does not apply to a {kind} output "
                              f"(it is for {', '.join(kinds)}; remove it)")
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is float and isinstance(value, bool)):
            want = {str: "a string", bool: "true or false", float: "a number"}[typ]
            raise ConfigError(f"{where_of(key)}: {label}.{key} must be {want}, got {shown}")
        out[key] = value
    w = where_of
    if "name" in out and not _NAME_RE.fullmatch(out["name"]):
        raise ConfigError(f"{w('name')}: {label}.name must be 1-40 letters, digits, - or _, "
                          f"got {out['name']!r}")
    if "track" in out and not _TRACK_RE.fullmatch(out["track"]):
        raise ConfigError(f"{w('track')}: {label}.track must be original or a language code "
                          f"such as es, got {out['track']!r}")
    if "lang" in out and not _LANG_RE.fullmatch(out["lang"]):
        raise ConfigError(f"{w('lang')}: {label}.lang must be a language and country such as "
                          f"en-US or de-DE, got {out['lang']!r}")
    for key in ("url_env", "password_env", "secret_env"):
        if key in out and not _ENV_RE.fullmatch(out[key]):
            raise ConfigError(f"{w(key)}: {label}.{key} must name an environment variable, "
                              f"got {out[key]!r}")
    for key, low, high in (("min_interval_s", 0.0, 60.0), ("timeout_s", 0.1, 120.0)):
        if key in out and not low <= out[key] <= high:
            raise ConfigError(f"{w(key)}: {label}.{key} must be between {low} and {high}, "
                              f"got {out[key]!r}")
    sources = [k for k in ("url", "url_file", "url_env") if out.get(k)]
    if len(sources) > 1:
        raise ConfigError(f"{w(sources[1])}: {label} sets {' and '.join(sources)}; "
                          f"give the URL one way")
    if not sources and kind != "obs":
        raise ConfigError(f"{w(None)}: {label} ({kind}) needs url, url_file or url_env "
                          f"(url_file keeps a caption URL's credentials out of the config)")
    if out.get("url"):
        scheme = urlsplit(out["url"]).scheme
        allowed = ("ws", "wss") if kind == "obs" else ("http", "https")
        if scheme not in allowed:
            raise ConfigError(f"{w('url')}: {label}.url must be a {' or '.join(allowed)} URL "
                              f"(e.g. {OBS_DEFAULT_URL if kind == 'obs' else 'https://…'})")
    for a, b in (("password_file", "password_env"), ("secret_file", "secret_env")):
        if out.get(a) and out.get(b):
            raise ConfigError(f"{w(b)}: {label} sets {a} and {b}; give the secret one way")
    out.setdefault("min_interval_s", DEFAULT_INTERVAL_S[kind])
    # Off by default: the local engine's "stable" prefix is two decodes agreeing, and its
    # final (beam search) still changes a word now and then; a caption in a stream cannot be
    # taken back.
    out.setdefault("partials", False)
    return out


def _named(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give unnamed outputs their kind as name (``youtube``, ``youtube-2``, ...)."""
    taken = {s["name"] for s in specs if "name" in s}
    counts: dict[str, int] = {}
    for s in specs:
        if "name" in s:
            continue
        counts[s["kind"]] = counts.get(s["kind"], 0) + 1
        n = counts[s["kind"]]
        name = s["kind"] if n == 1 else f"{s['kind']}-{n}"
        while name in taken:
            n += 1
            name = f"{s['kind']}-{n}"
        taken.add(name)
        s["name"] = name
    return specs


def parse_tables(value: Any, text: str, label: str) -> list[OutputSpec]:
    """The ``[[outputs]]`` array of tables of a config file (``label``: its name in errors)."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        line = _line_of_table(text, 0, None) or next(
            (n for n, ln in enumerate(text.splitlines(), 1)
             if re.match(r"^(\[\s*outputs\s*\]|outputs\s*=)", ln.strip())), None)
        where = f"{label}:{line}" if line else label
        raise ConfigError(f"{where}: outputs must be [[outputs]] tables, one per output "
                          f"(see docs/guide/outputs.md)")
    if len(value) > MAX_OUTPUTS:
        raise ConfigError(f"{label}: {len(value)} [[outputs]]; at most {MAX_OUTPUTS}")
    checked: list[tuple[dict[str, Any], str]] = []
    for index, table in enumerate(value):
        def where_of(key: str | None, index: int = index) -> str:
            line = _line_of_table(text, index, key) or _line_of_table(text, index, None)
            return f"{label}:{line}" if line else label

        checked.append((_check(table, where_of, f"outputs[{index + 1}]"), where_of(None)))
    return _finish(checked, "file")


def parse_flag(flag: str) -> dict[str, Any]:
    """One ``--output`` value as a table: ``kind=zoom,url_env=ZOOM_CC_URL,lang=de-DE``."""
    raw: dict[str, Any] = {}
    for i, part in enumerate(p.strip() for p in flag.split(",")):
        if not part:
            continue
        if "=" not in part:
            if i == 0:
                raw["kind"] = part
                continue
            # Not echoed: it may be a piece of a URL with a comma in it (and its token).
            raise ConfigError(f"--output: item {i + 1} is not key=value (a URL with a comma "
                              f"goes in url_file or url_env; e.g. --output "
                              f"kind=youtube,url_env=YT_CAPTION_URL)")
        key, _, value = part.partition("=")
        key = key.strip()
        typ = _KEYS.get(key, (str, ()))[0]
        parsed: Any = value.strip()
        if typ is bool:
            low = parsed.lower()
            if low not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise ConfigError(f"--output: {key} must be true or false, got {parsed!r}")
            parsed = low in ("true", "yes", "1", "on")
        elif typ is float:
            try:
                parsed = float(parsed)
            except ValueError:
                raise ConfigError(f"--output: {key} must be a number, got {parsed!r}") from None
        raw[key] = parsed
    return raw


def parse_flags(flags: Sequence[str], before: Sequence[OutputSpec] = ()) -> list[OutputSpec]:
    """``--output`` values, named after those of the file (``before``)."""
    checked = [(_check(parse_flag(f), lambda _k: "--output", "output"), "--output")
               for f in flags]
    specs = _finish(checked, "command line", before)
    # The flag as a reload parses it again: with the name it got, so the output keeps it.
    return [replace(s, flag=f if "name" in parse_flag(f) else f"{f},name={s.name}")
            for s, f in zip(specs, flags, strict=True)]


def _finish(checked: list[tuple[dict[str, Any], str]], origin: str,
            before: Sequence[OutputSpec] = ()) -> list[OutputSpec]:
    tables = [{"name": s.name, "kind": s.kind} for s in before] + [t for t, _ in checked]
    named = _named(tables)[len(before):]
    names = [s.name for s in before] + [t["name"] for t in named]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"two outputs are named {dup!r}; give each a different name")
    return [OutputSpec(**table, where=where, origin=origin)
            for table, (_, where) in zip(named, checked, strict=True)]


# -- secrets (I/O: files and the environment, read when the output starts) -------------------


def _read_secret(path: str, what: str, name: str) -> str:
    file = Path(path).expanduser()
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"output {name}: cannot read {what} file {file}: "
                          f"{exc.strerror or exc} (create it, mode 600)") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"output {name}: {what} file {file} is larger than "
                          f"{MAX_SECRET_BYTES} bytes (it should hold one line)")
    value = data.decode("utf-8", "replace").strip()
    if not value:
        raise ConfigError(f"output {name}: {what} file {file} is empty (write the {what} in it)")
    return value


def _env(var: str, what: str, name: str, env: Mapping[str, str]) -> str:
    value = env.get(var, "").strip()
    if not value:
        raise ConfigError(f"output {name}: environment variable {var} (its {what}) is not set "
                          f"(export it, or use a file)")
    return value


@dataclass(frozen=True)
class Secrets:
    url: str
    password: str = ""  # the OBS password or the webhook's HMAC key

    def __repr__(self) -> str:  # never print the values
        return "Secrets(<hidden>)"


def resolve(spec: OutputSpec, env: Mapping[str, str] | None = None) -> Secrets:
    """Read the output's URL and password/key from where the spec says; ConfigError if absent."""
    env = os.environ if env is None else env
    if spec.url_file:
        url = _read_secret(spec.url_file, "URL", spec.name)
    elif spec.url_env:
        url = _env(spec.url_env, "URL", spec.name, env)
    else:
        url = spec.url or OBS_DEFAULT_URL
    scheme = urlsplit(url).scheme
    want = ("ws", "wss") if spec.kind == "obs" else ("http", "https")
    if scheme not in want:
        raise ConfigError(f"output {spec.name}: its URL must be a {' or '.join(want)} URL "
                          f"(check {spec.url_file or spec.url_env or 'url'})")
    password = ""
    if spec.password_file or spec.secret_file:
        what = "password" if spec.kind == "obs" else "signing key"
        password = _read_secret(spec.password_file or spec.secret_file, what, spec.name)
    elif spec.password_env or spec.secret_env:
        what = "password" if spec.kind == "obs" else "signing key"
        password = _env(spec.password_env or spec.secret_env, what, spec.name, env)
    return Secrets(url, password)
