"""Helpers for the overlay tests: a real Chromium, lines published through the real Feed.

:func:`overlay_feeding` is the hook for an end-to-end test: run any pipeline that publishes into
a :class:`~captiond.feed.Feed`, with the overlay server serving that feed, and read back what a
real browser shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from needs import CHROMIUM  # noqa: F401 - the browser the overlay tests drive

from captiond import config
from captiond.events import Line, LineStatus, LineUpdate, UpdateKind
from captiond.feed import Feed
from captiond.overlay.server import OverlayServer

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: Longest a test waits for the page to show something (ms): generous, CI machines are slow.
PAGE_WAIT_MS = 15_000


def overlay_config(**settings: Any) -> config.Config:
    """Defaults plus overlay settings, port 0, independent of the caller's environment."""
    overrides = {"overlay.port": "0"}
    overrides.update({f"overlay.{k}": str(v) for k, v in settings.items()})
    return config.parse("", env={}, overrides=overrides)


def publish_line(
    feed: Feed,
    item_id: str,
    text: str,
    *,
    seq: int = 0,
    final: bool = True,
    stable: int | None = None,
    kind: UpdateKind | None = None,
    start_ms: int | None = None,
    speaker: str | None = None,
    track: str = "original",
    session: int = 1,
) -> None:
    """Publish one line update the way the pipeline does (a LineUpdate through the Feed)."""
    status = LineStatus.FINAL if final else LineStatus.PARTIAL
    line = Line(
        item_id=item_id,
        previous_item_id=None,
        seq=seq,
        audio_start_ms=seq * 1000 if start_ms is None else start_ms,
        audio_end_ms=(seq + 1) * 1000 if start_ms is None else start_ms + 1000,
        text=text,
        status=status,
        stable=len(text) if stable is None else stable,
        speaker=speaker,
        track=track,
        engine="test",
    )
    if kind is None:
        kind = UpdateKind.FINALISED if final else UpdateKind.UPDATED
    feed.publish_updates([LineUpdate(kind, line, session)])


async def shown_text(page: Any, track: str = "original") -> str:
    """The caption rows the page shows for a track, joined by spaces (empty if none)."""
    rows = await page.evaluate(
        "t => Array.from(document.querySelectorAll(`.pane[data-track='${t}']:not([hidden]) .row`))"
        ".map(e => e.textContent)",
        track,
    )
    return " ".join(rows)


async def wait_for_text(page: Any, expected: str, track: str = "original") -> None:
    """Wait until the page's caption rows, joined by spaces, equal ``expected``.

    Predicates are always functions: Playwright evaluates a function's text once, in the call
    that starts the wait, but a bare expression on every animation frame, where the overlay's
    Content-Security-Policy (no 'unsafe-eval') refuses it whenever the first check was false."""
    await page.wait_for_function(
        """([t, want]) => {
            const rows = Array.from(document.querySelectorAll(
                `.pane[data-track='${t}']:not([hidden]) .row`)).map(e => e.textContent);
            return rows.join(' ') === want;
        }""",
        arg=[track, expected],
        timeout=PAGE_WAIT_MS,
    )


@asynccontextmanager
async def overlay_feeding(
    browser: Any, feed: Feed, cfg: config.Config | None = None, query: str = ""
) -> AsyncIterator[tuple[OverlayServer, Any]]:
    """An overlay server on ``feed`` and a Chromium page showing ``/overlay?query``.

    For the lead's end-to-end test::

        async with overlay_feeding(browser, feed, query="max_lines=20&max_chars=80") as (srv, page):
            await run_pipeline_into(feed)          # the real pipeline publishing LineUpdates
            await wait_for_text(page, expected)    # the stored finals, joined
    """
    server = OverlayServer(cfg or overlay_config(), feed, lambda: {"state": "test"})
    await server.start()
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        await page.goto(f"{server.url}overlay{'?' + query if query else ''}")
        await page.wait_for_selector("#cap[data-connected='1']", timeout=PAGE_WAIT_MS)
        yield server, page
    finally:
        await page.close()
        await server.close()


async def settle() -> None:
    """Let the event loop run pending callbacks (publish is synchronous; sends are tasks)."""
    for _ in range(3):
        await asyncio.sleep(0)
