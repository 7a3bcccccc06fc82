"""The results page of a tiny `p2p train` run in a real browser: Debian's chromium driven by Playwright for
Python (nothing is downloaded) opens web/index.html (file://) while the run trains, and sees it render and
then reload itself with the next epoch. Screenshots go to build/browser-test/ as test artefacts."""

from chromium import ARTIFACTS, launch, playwright_or_skip  # tests/chromium.py

import p2p_lib.runpage as runpage
from test_engine import data, tiny, train  # noqa: F401  (data: the fixture)

playwright = playwright_or_skip()

# In the page: how many pictures it has if every one has loaded (a broken or missing one has naturalWidth 0), else 0.
PICTURES_LOADED = """() => { const images = Array.from(document.images);
    return images.every(i => i.complete && i.naturalWidth > 0) ? images.length : 0; }"""
HEADINGS = "() => Array.from(document.querySelectorAll('h3')).map(h => h.textContent).join('|')"


def check_rendered(page, epochs: list[str], pictures: int) -> None:
    """The page shows these epoch headings in this order and this many pictures, all loaded (waiting for the
    reload that brings them), and the curves drawn."""
    page.wait_for_function(f"() => ({HEADINGS})() === {'|'.join(epochs)!r} && ({PICTURES_LOADED})() === {pictures}",
                           timeout=10_000)
    curves = page.locator("svg.curve")
    assert curves.count() >= 6  # G_GAN, G_L1, D_real, D_fake, val_L1, val_PSNR
    assert curves.first.is_visible() and curves.first.bounding_box()["width"] > 100
    assert page.locator("svg.curve polyline, svg.curve circle").count() == curves.count()


def test_the_page_renders_and_reloads_itself_with_the_next_epoch_while_the_run_trains(data, tmp_path, monkeypatch):
    monkeypatch.setattr(runpage, "REFRESH_SECONDS", 1)  # the page of a run reloads itself every 10 s
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    index = tmp_path / "ck" / "run" / "web" / "index.html"
    seen = {}
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1300, "height": 900})

        def watch(step, losses):  # called by the run after each iteration: the browser looks meanwhile
            if step == 6:  # epoch 1 (iterations 1-5) has ended: its samples and visuals are on the page
                page.goto(index.as_uri())
                check_rendered(page, ["epoch [1]"], 4)  # its validation grid, then real_A, fake_B, real_B
                page.screenshot(path=str(ARTIFACTS / "runpage_01_epoch1.png"), full_page=True)
                page.evaluate("window.notReloadedYet = true")
            if step == 11:  # epoch 2 ended at iteration 10 and the run rewrote the page: the browser reloads it
                check_rendered(page, ["epoch [2]", "epoch [1]"], 8)  # the newest first
                assert page.evaluate("window.notReloadedYet === undefined")  # a new document, not the old one
                page.screenshot(path=str(ARTIFACTS / "runpage_02_epoch2.png"), full_page=True)
                seen["reloaded"] = step
        try:
            result = train(tiny(data, tmp_path / "ck", "--max_steps", "11", "--update_html_freq", "2"), on_step=watch)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "runpage_99_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert result["status"] == "done"
    assert seen == {"reloaded": 11}
