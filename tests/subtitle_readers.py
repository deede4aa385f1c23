"""Independent readers of SRT/WebVTT files, for tests: pysubs2, srt, webvtt-py, ffmpeg, Chromium.

Each reader returns ``[(start_ms, end_ms, text), ...]`` with lines joined by ``\\n``, so tests
compare what every reader understood with the cues captiond meant to write.
"""

from __future__ import annotations

import functools
import html
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import pysubs2
import srt
import webvtt
from needs import CHROMIUM, need_chromium, need_programs

from captiond.exports.cues import Cue

ParsedCue = tuple[int, int, str]
FFMPEG_TIMEOUT_S = 60
BROWSER_TIMEOUT_MS = 20_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def expected(cues: list[Cue], fmt: str) -> list[ParsedCue]:
    """What a reader should find: the cue text as it was written for ``fmt``, unescaped."""
    from captiond.exports.subtitles import srt_text

    out = []
    for c in cues:
        text = "\n".join(srt_text(x) if fmt == "srt" else " ".join(x.split()) for x in c.lines)
        out.append((c.start_ms, c.end_ms, text))
    return out


def read_pysubs2(path: Path) -> list[ParsedCue]:
    subs = pysubs2.load(str(path), encoding="utf-8")
    # pysubs2 keeps WebVTT character references (&amp;) as written; a player shows them decoded.
    decode = html.unescape if path.suffix == ".vtt" else str
    return [(e.start, e.end, decode(e.plaintext)) for e in subs.events]


def read_srt(path: Path) -> list[ParsedCue]:
    out = []
    for s in srt.parse(path.read_text(encoding="utf-8")):
        def ms(td):
            return round(td.total_seconds() * 1000)
        out.append((ms(s.start), ms(s.end), s.content))
    return out


def read_webvtt(path: Path) -> list[ParsedCue]:
    if path.suffix == ".srt":
        captions = webvtt.from_srt(str(path))
    else:
        captions = webvtt.read(str(path))
    out = []
    for c in captions:
        # webvtt-py leaves entities in .text (raw_text); unescape as a browser would.
        out.append((_ms(c.start), _ms(c.end), html.unescape(c.text)))
    return out


def _ms(clock: str) -> int:
    h, m, rest = clock.split(":")
    s, millis = rest.split(".")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(millis)


def ffmpeg_convert(src: Path, dst: Path) -> Path:
    """Convert with ffmpeg; raises with ffmpeg's own message on failure."""
    need_programs("ffmpeg", install="apt-get install ffmpeg")
    exe = shutil.which("ffmpeg")
    assert exe is not None
    proc = subprocess.run(
        [exe, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), str(dst)],
        capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S, check=False,
    )
    assert proc.returncode == 0, f"ffmpeg failed on {src.name}: {proc.stderr}"
    return dst


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """A static HTTP server on 127.0.0.1 for ``directory``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".vtt": "text/vtt; charset=utf-8"}

    def log_message(self, format: str, *args: object) -> None:
        pass


_PAGE = """<!doctype html><meta charset="utf-8"><title>cues</title>
<video id="v" muted><track id="t" kind="subtitles" srclang="en" label="en" src="{src}" default>
</video>"""

_READ_CUES = """async () => {
  const el = document.getElementById('t');
  el.track.mode = 'hidden';
  if (el.readyState !== 2) {
    await new Promise((resolve, reject) => {
      if (el.readyState === 2) return resolve();
      el.addEventListener('load', resolve);
      el.addEventListener('error', () => reject(new Error('track failed to load')));
    });
  }
  return Array.from(el.track.cues).map(c => [c.startTime, c.endTime, c.getCueAsHTML().textContent]);
}"""


class ChromiumReader:
    """One headless Chromium and one local HTTP server, reused for many files::

        with ChromiumReader(folder) as reader:
            cues = reader.read(folder / "x.vtt")
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stack: Any = None
        self._browser: Any = None
        self._base = ""

    def __enter__(self) -> Self:
        from contextlib import ExitStack

        from playwright.sync_api import sync_playwright

        need_chromium()
        self._stack = ExitStack()
        try:
            self._base = self._stack.enter_context(serve(self.folder))
            pw = self._stack.enter_context(sync_playwright())
            self._browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            self._stack.callback(self._browser.close)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read(self, path: Path) -> list[ParsedCue]:
        """The cue list Chromium builds from ``path`` (inside the folder) through <track>."""
        rel = path.relative_to(self.folder)
        page_path = path.parent / f"{path.stem}.track.html"
        page_path.write_text(_PAGE.format(src=path.name), encoding="utf-8")
        page = self._browser.new_page()
        try:
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.goto(f"{self._base}/{rel.parent.as_posix()}/{page_path.name}")
            raw = page.evaluate(_READ_CUES)
        finally:
            page.close()
        # The browser keeps times as float seconds; round to the millisecond written. The
        # text is what a player shows: tags (voice spans) and entities already resolved.
        return [(round(a * 1000), round(b * 1000), t) for a, b, t in raw]


def read_chromium(path: Path) -> list[ParsedCue]:
    """The cue list headless Chromium builds from ``path`` through a ``<track>`` element."""
    with ChromiumReader(path.parent) as reader:
        return reader.read(path)


def verify_file(path: Path, *, browser: bool | ChromiumReader = True) -> list[ParsedCue]:
    """Read ``path`` with every independent reader and check they agree; returns the cues.

    pysubs2 and srt (SRT) or webvtt-py (VTT) must give identical cues; ffmpeg must convert the
    file (to the other format) keeping count and times; Chromium must load a VTT through
    <track> with the same cues.
    """
    fmt = path.suffix.lstrip(".")
    first = read_pysubs2(path)
    second = read_srt(path) if fmt == "srt" else read_webvtt(path)
    assert first == second, f"pysubs2 and {'srt' if fmt == 'srt' else 'webvtt-py'} disagree"
    other = "vtt" if fmt == "srt" else "srt"
    converted = ffmpeg_convert(path, path.with_name(f"{path.stem}.ffmpeg.{other}"))
    back = read_pysubs2(converted)
    assert [(a, b) for a, b, _ in back] == [(a, b) for a, b, _ in first], "ffmpeg changed times"
    if fmt == "vtt" and browser:
        seen = browser.read(path) if isinstance(browser, ChromiumReader) else read_chromium(path)
        assert seen == first, "Chromium's cue list differs"
    return first
