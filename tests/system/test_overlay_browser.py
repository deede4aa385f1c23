"""The caption overlay in a real headless Chromium (Debian's /usr/bin/chromium via Playwright)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from needs import need_chromium
from overlay_helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGE_WAIT_MS,
    overlay_config,
    overlay_feeding,
    publish_line,
    shown_text,
    wait_for_text,
)
from playwright.async_api import Browser, async_playwright

from captiond.events import UpdateKind
from captiond.feed import Feed
from captiond.overlay.server import OverlayServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    need_chromium()
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        await b.close()


async def test_captions_appear_update_in_place_and_screenshot(browser: Browser) -> None:
    """Published lines appear in the DOM; a partial's row element is updated, not replaced."""
    feed = Feed()
    async with overlay_feeding(browser, feed, query="max_lines=3&max_chars=40") as (_, page):
        publish_line(feed, "a", "The quick brown fox", seq=0, final=False, stable=0,
                     kind=UpdateKind.ADDED)
        await wait_for_text(page, "The quick brown fox")
        row = await page.query_selector(".pane[data-track='original'] .row")
        assert row is not None
        publish_line(feed, "a", "The quick brown fox jumps", seq=0, final=False)
        await wait_for_text(page, "The quick brown fox jumps")
        # Same element, new text: partial updates change text in place (no flicker).
        assert await row.evaluate("e => e.isConnected && e.textContent") == (
            "The quick brown fox jumps"
        )
        publish_line(feed, "a", "The quick brown fox jumps over the lazy dog.", seq=0)
        publish_line(feed, "b", "Captions keep flowing.", seq=1)
        await wait_for_text(page, "The quick brown fox jumps over the lazy dog. Captions keep "
                                  "flowing.")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "overlay-captions.png"
        await page.screenshot(path=str(shot), omit_background=True)
        assert shot.stat().st_size > 1000


async def test_late_joiner_sees_recent_lines_at_once(browser: Browser) -> None:
    """A page opened after lines were published shows them from the snapshot."""
    feed = Feed()
    publish_line(feed, "a", "Said before the page opened.", seq=0)
    async with overlay_feeding(browser, feed, query="linger_s=60") as (_, page):
        await wait_for_text(page, "Said before the page opened.")


async def test_stale_lines_are_not_reshown_to_late_joiners(browser: Browser) -> None:
    """A final line older than linger_s is in the snapshot but a new page does not show it."""
    feed = Feed()
    cfg = overlay_config(linger_s=0.5)
    server = OverlayServer(cfg, feed, dict)
    await server.start()
    try:
        publish_line(feed, "old", "This was said long ago.", seq=0)
        await asyncio.sleep(1.0)  # the age tracker stamps the line; then it outlives linger_s
        page = await browser.new_page()
        try:
            await page.goto(server.url + "overlay")
            await page.wait_for_selector("#cap[data-connected='1']", timeout=PAGE_WAIT_MS)
            # hello + the snapshot's line have arrived; the render they queued has run.
            await page.wait_for_function("() => window.captiond.stats.messages >= 2",
                                         timeout=PAGE_WAIT_MS)
            await page.evaluate("new Promise(done => setTimeout(done, 300))")
            assert await shown_text(page) == ""
            publish_line(feed, "new", "Fresh words.", seq=1)
            await wait_for_text(page, "Fresh words.")
        finally:
            await page.close()
    finally:
        await server.close()


async def test_stable_mode_shows_only_text_that_will_not_change(browser: Browser) -> None:
    """mode=stable shows finals and the stable prefix of partials, cut at a word boundary."""
    feed = Feed()
    async with overlay_feeding(browser, feed, query="mode=stable&max_lines=4") as (_, page):
        publish_line(feed, "a", "First sentence is final.", seq=0)
        # 22 stable characters end inside "somethi|ng": only whole words are shown.
        publish_line(feed, "b", "Then someone said something else", seq=1, final=False,
                     stable=22)
        await wait_for_text(page, "First sentence is final. Then someone said")
        publish_line(feed, "b", "Then someone said something else entirely.", seq=1)
        await wait_for_text(page, "First sentence is final. Then someone said something else "
                                  "entirely.")


async def test_wraps_at_word_boundaries_and_keeps_last_rows(browser: Browser) -> None:
    """Long text wraps into rows of at most max_chars at spaces; only the last max_lines show."""
    feed = Feed()
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
    async with overlay_feeding(browser, feed, query="max_lines=2&max_chars=20") as (_, page):
        publish_line(feed, "a", " ".join(words), seq=0)
        await page.wait_for_function(
            "() => document.querySelectorAll('.pane[data-track=original] .row').length === 2",
            timeout=PAGE_WAIT_MS,
        )
        rows = await page.eval_on_selector_all(
            ".pane[data-track='original'] .row", "els => els.map(e => e.textContent)"
        )
    assert all(len(r) <= 20 for r in rows)
    # Rows are whole words, and together they are the end of the text.
    shown = " ".join(rows).split()
    assert shown == words[-len(shown):]
    assert "twenty" in rows[-1]


async def test_finished_lines_leave_after_linger(browser: Browser) -> None:
    """A final line disappears linger_s after it finished when nothing new is said."""
    feed = Feed()
    async with overlay_feeding(browser, feed, query="linger_s=0.5") as (_, page):
        publish_line(feed, "a", "Brief words.", seq=0)
        await wait_for_text(page, "Brief words.")
        await wait_for_text(page, "")


async def test_speaker_labels_and_style_from_query(browser: Browser) -> None:
    """speakers=true prefixes a new speaker; URL style parameters reach the computed style."""
    feed = Feed()
    query = "speakers=true&max_lines=4&font_size=50&color=ffdd00&align=left"
    async with overlay_feeding(browser, feed, query=query) as (_, page):
        publish_line(feed, "a", "Hello there.", seq=0, speaker="Ana")
        publish_line(feed, "b", "Hi Ana.", seq=1, speaker="Ben")
        await wait_for_text(page, "Ana: Hello there. Ben: Hi Ana.")
        css = await page.eval_on_selector(
            ".pane[data-track='original'] .box",
            "e => { const s = getComputedStyle(e); return [s.fontSize, s.color]; }",
        )
        assert css == ["50px", "rgb(255, 221, 0)"]


async def test_both_tracks_show_original_and_translation(browser: Browser) -> None:
    """lang=both shows the original and the translation in two panes."""
    feed = Feed()
    async with overlay_feeding(browser, feed, query="lang=both") as (_, page):
        publish_line(feed, "a", "Good morning.", seq=0)
        publish_line(feed, "a-es", "Buenos días.", seq=0, track="es")
        await wait_for_text(page, "Good morning.")
        await wait_for_text(page, "Buenos días.", track="es")


async def test_page_reconnects_after_daemon_restart(browser: Browser) -> None:
    """After the server closes and a new one starts on the same port, the page catches up."""
    feed = Feed()
    first = OverlayServer(overlay_config(linger_s=60), feed, dict)
    await first.start()
    port = first.port
    page = await browser.new_page()
    try:
        await page.goto(first.url + "overlay")
        await page.wait_for_selector("#cap[data-connected='1']", timeout=PAGE_WAIT_MS)
        publish_line(feed, "a", "Before the restart.", seq=0)
        await wait_for_text(page, "Before the restart.")
        await first.close()
        await page.wait_for_selector("#cap[data-connected='0']", timeout=PAGE_WAIT_MS)

        # A restarted daemon: new feed, same port, something already said.
        feed2 = Feed()
        publish_line(feed2, "x", "After the restart.", seq=0, session=2)
        second = OverlayServer(overlay_config(port=port, linger_s=60), feed2, dict)
        await second.start()
        try:
            await page.wait_for_selector("#cap[data-connects='2']", timeout=PAGE_WAIT_MS)
            await wait_for_text(page, "After the restart.")
            publish_line(feed2, "y", "And live again.", seq=1, session=2)
            await wait_for_text(page, "After the restart. And live again.")
        finally:
            await second.close()
    finally:
        await page.close()


async def test_token_is_required_and_works_from_the_page(browser: Browser) -> None:
    """With a token the page is refused without it, and with ?token= it shows captions."""
    token = "t0ken-for-the-overlay-test"
    feed = Feed()
    server = OverlayServer(overlay_config(token=token), feed, dict)
    await server.start()
    page = await browser.new_page()
    try:
        response = await page.goto(server.url + "overlay")
        assert response is not None and response.status == 401
        assert token not in await page.content()
        await page.goto(f"{server.url}overlay?token={token}")
        await page.wait_for_selector("#cap[data-connected='1']", timeout=PAGE_WAIT_MS)
        publish_line(feed, "a", "Only for token holders.", seq=0)
        await wait_for_text(page, "Only for token holders.")
        # The index puts the visitor's token into the links client-side; the HTML has none.
        response = await page.goto(f"{server.url}?token={token}")
        assert response is not None and token not in (await response.text())
        link = await page.text_content("code.url")
        assert link is not None and link.endswith(f"/overlay?token={token}")
    finally:
        await page.close()
        await server.close()


async def test_page_from_another_site_cannot_subscribe(browser: Browser) -> None:
    """A WebSocket opened by a page of another origin is refused by the server."""
    feed = Feed()
    server = OverlayServer(overlay_config(), feed, dict)
    await server.start()
    # A second server is "another site": same machine, other port, so another origin.
    other = OverlayServer(overlay_config(), Feed(), dict)
    await other.start()
    page = await browser.new_page()
    try:
        await page.goto(other.url + "overlay")
        outcome = await page.evaluate(
            """url => new Promise(resolve => {
                const ws = new WebSocket(url);
                ws.onopen = () => resolve('open');
                ws.onerror = () => resolve('refused');
            })""",
            server.url.replace("http://", "ws://") + "ws",
        )
        assert outcome == "refused"
        assert server.viewers() == 0
    finally:
        await page.close()
        await other.close()
        await server.close()


async def test_template_override_applies_live(browser: Browser, tmp_path: Path) -> None:
    """A user overlay.html extending default:overlay.html is used, and an edit reloads open pages."""
    user = tmp_path / "templates"
    user.mkdir()
    template = user / "overlay.html"

    def write(marker: str) -> None:
        template.write_text(
            '{% extends "default:overlay.html" %}'
            '{% block head %}<meta name="theme" content="' + marker + '">{% endblock %}',
            encoding="utf-8",
        )

    write("first")
    feed = Feed()
    publish_line(feed, "a", "Still captioning.", seq=0)
    cfg = overlay_config(templates=str(user), linger_s=60)
    async with overlay_feeding(browser, feed, cfg) as (_, page):
        assert await page.get_attribute("meta[name=theme]", "content") == "first"
        await wait_for_text(page, "Still captioning.")
        write("second")
        await page.wait_for_selector("meta[name=theme][content=second]", state="attached",
                                     timeout=PAGE_WAIT_MS)
        await wait_for_text(page, "Still captioning.")


@pytest.mark.slow
async def test_real_pipeline_feeds_the_overlay(
    browser: Browser, fleurs_en: list[Path], db_url: str
) -> None:
    """The local engine on a FLEURS clip feeds the overlay; the page shows the stored finals."""
    from captiond import config
    from captiond.audio.sources import FileSource
    from captiond.engines.factory import build_engine
    from captiond.pipeline import Session, Stream
    from captiond.transcript.store import Store

    cfg = config.parse("", env={}, overrides={"overlay.port": "0", "overlay.linger_s": "600"})
    store = await asyncio.to_thread(Store.open, db_url)
    feed = Feed()
    try:
        query = "max_lines=20"
        async with overlay_feeding(browser, feed, cfg, query=query) as (_, page):
            clip = fleurs_en[0]
            engine = await asyncio.to_thread(build_engine, cfg, realtime=False)
            session = Session(store, [Stream(FileSource(clip, realtime=False), engine)], feed=feed,
                              realtime=False)
            session_id = await session.run()
            rows = await asyncio.to_thread(store.lines, session_id)
            finals = " ".join(" ".join(r.text.split()) for r in rows if r.text)
            assert len(finals.split()) >= 10, finals  # the clip is a few sentences of speech
            await wait_for_text(page, finals)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "overlay-fleurs.png"), omit_background=True)
    finally:
        await asyncio.to_thread(store.close)
