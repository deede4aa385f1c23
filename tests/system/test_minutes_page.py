"""The overlay's index page shows the last meeting's minutes, in a real headless Chromium."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from minutes_support import KEY, SAID
from overlay_helpers import CHROMIUM, CHROMIUM_ARGS, PAGE_WAIT_MS, overlay_config
from playwright.async_api import async_playwright

from captiond.api import api_handler
from captiond.events import Line, LineStatus
from captiond.exports import digest
from captiond.feed import Feed
from captiond.overlay.server import OverlayServer
from captiond.transcript.store import Store


def test_index_shows_minutes_as_text(db_url: str) -> None:
    """The newest completed session's stored minutes appear on the index page: decisions
    and owned actions with their times; markup in an item stays text, never an element."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    store = Store.open(db_url)
    sid = store.begin_session(source="mic", engine="local", title="Design review")
    store.write_lines(sid, [
        Line(item_id=f"it-{i}", previous_item_id=None, seq=i, audio_start_ms=i * 5000,
             audio_end_ms=i * 5000 + 4500, text=text, status=LineStatus.FINAL, speaker=who)
        for i, (who, text) in enumerate(SAID)])
    store.end_session(sid)
    lines = digest.text_lines(store.lines(sid))
    m = digest.offline(lines, [])
    m = digest.Minutes("openai", model="gpt-5-mini", cost_usd=0.0012, topics=m.topics,
                       decisions=(digest.Item('<img src=x onerror="document.title=1">Rubber',
                                              (digest.Cite(3, 15000),)),),
                       actions=(digest.Item("send the drawings", (digest.Cite(4, 20000),),
                                            owner="Ann", due="Friday"),))
    store.save_minutes(sid, digest.to_json(m, lines), source="openai", model="gpt-5-mini",
                       cost_usd=0.0012)

    async def main() -> tuple[str, int, str]:
        server = OverlayServer(overlay_config(), Feed(), dict, {"/api/": api_handler(store)})
        await server.start()
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS, headless=True)
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{server.port}/")
                await page.wait_for_selector("#minutes:not([hidden])", timeout=PAGE_WAIT_MS)
                text = await page.inner_text("#minutes")
                images = await page.locator("#minutes img").count()
                title = await page.title()
                await browser.close()
                return text, images, title
        finally:
            await server.close()

    try:
        text, images, title = asyncio.run(main())
    finally:
        store.close()
    assert "Design review · written by gpt-5-mini ($0.0012)" in text
    assert "Ann: send the drawings (due: Friday) [00:00:20]" in text
    assert '<img src=x onerror="document.title=1">Rubber [00:00:15]' in text
    assert images == 0 and title != "1"
    assert KEY not in text
