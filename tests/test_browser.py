"""Real Chromium, real gunicorn, real TAESD weights: upload, browse, share, delete; the image
viewer on tiny random models."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.conftest import png_bytes
from tests.servers import Gunicorn
from tests.shared import kodak_path, missing, taesd_path
from webapp.storage import ID_PATTERN

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
KODAK = ("kodim23.png", "kodim05.png")  # both 768x512
SERVER_START_S = 120
STEP_MS = 60_000  # any one browser step but the encodes stays well under this
ENCODES_MS = 600_000  # the page's uploads are encoded one after another: slow on a loaded CPU
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Functions, not expressions: Playwright evaluates a bare expression with eval(), which the
# page's Content-Security-Policy refuses.
THUMBNAILS_LOADED = (
    "() => [...document.querySelectorAll('#grid .card img')]"
    ".every(i => i.complete && i.naturalWidth)"
)
PICTURE_LOADED = "() => document.getElementById('picture').naturalWidth > 0"
CARD_LOADED = (
    "(id) => { const img = document.querySelector(`#card-${id} img:not(.preview)`);"
    " return img && img.complete && img.naturalWidth > 0; }"
)
RENDERS = re.compile(rf"/i/{ID_PATTERN.pattern}\.(png|avif)")  # full sizes, thumbnails; no previews
PICTURE_SCALED = (  # whether the picture's rendered scale (its zoom's transform) is in [low, high]
    "([low, high]) => { const p = document.getElementById('picture');"
    " const scale = p.getBoundingClientRect().width / p.offsetWidth;"
    " return low <= scale && scale <= high; }"
)
# The picture's intrinsic width comes from its srcset's `sizes`: equal to the width the CSS
# gives its content (object-fit: contain) when `sizes` matches the layout.
PICTURE_FIT = (
    "() => { const p = document.getElementById('picture');"
    " const [width, height] = [p.getAttribute('width'), p.getAttribute('height')];"
    " return [p.naturalWidth, width * Math.min(p.offsetWidth / width, p.offsetHeight / height)]; }"
)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; skips without it, fails when `LATENT_GALLERY_REQUIRE_SHARED=1`."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)")
    return CHROMIUM


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """A gunicorn serving the app on a free 127.0.0.1 port."""
    weights = str(taesd_path())
    tmp_path = tmp_path_factory.mktemp("server")
    env = {"LATENT_GALLERY_ENCODER": weights, "LATENT_GALLERY_DECODER": weights}
    server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log", env)
    try:
        yield server.start(timeout=SERVER_START_S)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tiny_gunicorn(
    tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """A gunicorn serving the app on tiny random models (fast renders, no weights needed)."""
    tmp_path = tmp_path_factory.mktemp("tiny-server")
    env = {
        "LATENT_GALLERY_ENCODER": str(tiny_folder),
        "LATENT_GALLERY_DECODER": str(tiny_folder),
        "LATENT_GALLERY_DEVICE": "cpu",
    }
    server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log", env)
    try:
        yield server.start(timeout=SERVER_START_S)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(gunicorn: Gunicorn) -> str:
    """The gunicorn's base URL."""
    return gunicorn.url


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    """A headless Chromium (Debian's, driven by Playwright)."""
    expect.set_options(timeout=STEP_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=STEP_MS
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser) -> Page:
    """A page in a fresh browser context (its own profile: storage, cookies)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(STEP_MS)
    return context.new_page()


@pytest.mark.shared
def test_upload_browse_share_and_delete(browser: Browser, server: str) -> None:
    photos = [str(kodak_path(name)) for name in KODAK]
    screenshots = os.environ.get("LATENT_GALLERY_SCREENSHOTS") == "1"
    page = new_page(browser)
    console_errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))

    page.goto(f"{server}/")
    page.set_input_files("#file-input", photos)
    expect(page.locator(".upload-item")).to_have_count(2)
    expect(page.locator('.upload-item[data-state="done"]')).to_have_count(2, timeout=ENCODES_MS)
    assert page.eval_on_selector_all(
        ".upload-item progress", "bars => bars.every(b => b.value === b.max)"
    )
    cards = page.locator("#grid .card")
    expect(cards).to_have_count(2)
    page.wait_for_function(THUMBNAILS_LOADED)
    if screenshots:
        page.screenshot(path=SCREENSHOTS / "gallery.png", animations="disabled")
    page.reload()
    expect(cards).to_have_count(2)
    page.wait_for_function(THUMBNAILS_LOADED)

    cards.first.locator("a").click()
    page.wait_for_url(f"{server}/i/*")
    page.wait_for_function(PICTURE_LOADED)
    share_link = page.input_value("#share-link")
    assert share_link == page.url
    expect(page.locator("#delete-image")).to_be_visible()
    if screenshots:
        page.screenshot(path=SCREENSHOTS / "image.png", animations="disabled")

    visitor = new_page(browser)
    visitor.goto(share_link)
    visitor.wait_for_function(PICTURE_LOADED)
    assert visitor.eval_on_selector("#picture", "img => img.naturalWidth") == 768
    expect(visitor.locator("#delete-image")).to_be_hidden()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-image")
    page.wait_for_url(f"{server}/")
    expect(cards).to_have_count(1)
    assert visitor.goto(share_link).status == 404
    expect(visitor.locator(".error-status")).to_have_text("404")
    assert console_errors == []


@pytest.mark.shared
def test_upload_errors_are_shown_per_file(browser: Browser, server: str, tmp_path: Path) -> None:
    page = new_page(browser)
    page.goto(f"{server}/")
    limit = int(page.get_attribute("#upload-form", "data-max-bytes"))
    cards = page.locator("#grid .card")
    before = cards.count()
    huge = tmp_path / "huge.png"
    with huge.open("wb") as sparse:
        sparse.truncate(limit + 1)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    page.set_input_files("#file-input", [notes, huge])
    rows = page.locator(".upload-item")
    expect(rows.and_(page.locator('[data-state="error"]'))).to_have_count(2)
    expect(rows.filter(has_text="notes.jpg")).to_contain_text("Not an acceptable image")
    expect(rows.filter(has_text="huge.png")).to_contain_text("Too large")
    expect(cards).to_have_count(before)


@pytest.mark.shared
def test_refused_renders_are_asked_for_again(browser: Browser, gunicorn: Gunicorn) -> None:
    """A render answered 503 (its decode passed the deadline) is fetched again until it loads,
    on the gallery and on the image page."""
    name = "kodim05.png"
    image = gunicorn.stored(*gunicorn.upload(kodak_path(name).read_bytes(), name))
    refused: list[str] = []
    fetched: list[str] = []

    def refuse_first(route: Route) -> None:
        url = route.request.url
        if url in refused:
            fetched.append(url)
            route.continue_()
        else:
            refused.append(url)
            route.fulfill(status=503, headers={"Retry-After": "1"}, body="busy")

    page = new_page(browser)
    page.route(RENDERS, refuse_first)
    page.goto(f"{gunicorn.url}/")
    page.wait_for_function(CARD_LOADED, arg=image["id"])
    page.goto(f"{gunicorn.url}/i/{image['id']}")
    page.wait_for_function(PICTURE_LOADED)
    assert len(refused) >= 2 and set(refused) <= set(fetched)


@pytest.mark.shared
def test_upload_button_only_without_javascript(browser: Browser, server: str) -> None:
    """The form's submit button is for browsers without JavaScript (the script uploads on
    choice): with scripts on it is not in the page at all, rather than drawn and then hidden
    by the deferred script, which moved the gallery up as the page loaded."""
    for scripts in (True, False):
        context = browser.new_context(java_script_enabled=scripts)
        page = context.new_page()
        page.goto(server + "/")
        buttons = page.locator("#upload-form button")
        if scripts:
            assert buttons.count() == 0
        else:
            expect(buttons).to_have_text("Upload")
            expect(buttons).to_be_visible()
        context.close()


def test_image_viewer_zooms_and_goes_to_neighbours_by_key(
    browser: Browser, tiny_gunicorn: Gunicorn
) -> None:
    """A 1280x720 window shows a large image's display render at its laid-out size; a click
    zooms to 100% and loads the full-size render; Escape fits, then goes to the gallery; the
    arrow keys go to the older and newer image."""
    server = tiny_gunicorn.url
    oldest, middle, newest = (
        tiny_gunicorn.stored(*tiny_gunicorn.upload(png_bytes(*size, seed=seed), "a.png"))
        for seed, size in enumerate([(64, 48), (1600, 1200), (64, 48)])
    )
    page = new_page(browser)
    page.set_viewport_size({"width": 1280, "height": 720})
    console_errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
    page.goto(f"{server}/i/{middle['id']}")
    page.wait_for_function(PICTURE_LOADED)
    picture = page.locator("#picture")
    assert ".avif?w=1024&" in picture.evaluate("img => img.currentSrc")
    natural, laid_out = page.evaluate(PICTURE_FIT)
    assert abs(natural - laid_out) <= 1, (natural, laid_out)
    assert page.evaluate(PICTURE_SCALED, [1, 1])
    expect(page.locator("#zoom-toggle")).to_have_text("100%")

    full = server + picture.get_attribute("data-full")
    with page.expect_request(full):
        picture.click()
    page.wait_for_function(PICTURE_SCALED, arg=[2, 3])  # 1600 image pixels for ~750 CSS pixels
    expect(page.locator("#zoom-toggle")).to_have_text("Fit")
    page.wait_for_function(
        "(url) => document.getElementById('picture').currentSrc === url", arg=full
    )

    page.keyboard.press("Escape")
    page.wait_for_function(PICTURE_SCALED, arg=[1, 1])
    assert page.url == f"{server}/i/{middle['id']}"
    page.keyboard.press("Escape")
    page.wait_for_url(f"{server}/")

    page.goto(f"{server}/i/{middle['id']}")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"{server}/i/{oldest['id']}")
    page.keyboard.press("ArrowRight")  # the oldest has no older image
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"{server}/i/{middle['id']}")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"{server}/i/{newest['id']}")
    assert console_errors == []
