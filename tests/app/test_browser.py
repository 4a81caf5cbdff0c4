"""The page as a person uses it: Playwright driving Debian's chromium against a live API and worker.

Screenshots land in the test artefacts folder (``tests/artifacts/browser``, removed by
``make clean``); with ``SPOTSHIFT_UPDATE_SCREENSHOTS=1`` small copies also replace the
README's under ``tools/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from app.queue import Queue
from app.storage import LocalStore

from .conftest import REPO_ROOT
from .images import encode
from .live_api import LiveApi, live_api

ARTIFACTS = Path(os.environ.get("SPOTSHIFT_TEST_ARTIFACTS", REPO_ROOT / "tests" / "artifacts")) / "browser"
README_SHOTS = REPO_ROOT / "tools" / "screenshots"
#: The worker runs on a shared, busy machine: give a job this long to finish.
JOB_TIMEOUT_MS = 120_000
PHONE = {"width": 390, "height": 844}


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    # Not a skip: `make test` installs it, and a page test that quietly does not run proves nothing.
    pytest.fail("Debian's chromium is not installed: run `make system-tools` (installs it from apt)")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The API and one worker on a fresh local store."""
    with live_api(tmp_path_factory.mktemp("browser"), worker=True) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (the system's; Playwright never downloads a browser here)."""
    executable = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def offsite() -> list[str]:
    """Requests the page tried to send anywhere but the API on loopback (all are blocked)."""
    return []


def _context(browser: Any, offsite: list[str], **options: Any) -> Any:
    context = browser.new_context(**options)

    def only_loopback(route: Any) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    return context


@pytest.fixture
def desktop(browser: Any, offsite: list[str]) -> Iterator[Any]:
    """A desktop-sized page that can reach only the loopback API."""
    context = _context(browser, offsite, viewport={"width": 1100, "height": 800})
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser: Any, offsite: list[str]) -> Iterator[Any]:
    """A phone-sized page (390 px wide, touch) that can reach only the loopback API."""
    context = _context(browser, offsite, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    yield context.new_page()
    context.close()


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SPOTSHIFT_UPDATE_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            small = image.convert("RGB")
            small.thumbnail((800, 1400))
            small.quantize(colors=128).save(README_SHOTS / f"{name}.png", optimize=True)
    return path


def _photo(path: Path) -> Path:
    """A colourful gradient photo, so input and grayscale previews differ visibly."""
    image = Image.radial_gradient("L").resize((480, 320))
    colour = Image.merge("RGB", (image, image.rotate(90, expand=False), Image.linear_gradient("L").resize((480, 320))))
    path.write_bytes(encode(colour, "JPEG", quality=90))
    return path


def _loaded_images(locator: Any) -> list[int]:
    return locator.evaluate_all("imgs => imgs.map(img => img.complete ? img.naturalWidth : 0)")


def _no_horizontal_scroll(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide in a {widths[1]} px viewport"


def test_upload_is_confirmed_and_turns_done_without_a_click(
    api: LiveApi, desktop: Any, tmp_path: Path, offsite: list[str]
) -> None:
    page = desktop
    page.goto(api.url + "/")
    page.set_input_files("input[name=file]", str(_photo(tmp_path / "sunset.jpg")))
    page.click("button[type=submit]")

    confirmation = page.locator(".notice.ok")
    expect(confirmation).to_contain_text("sunset.jpg was received as job")
    job_id = confirmation.get_attribute("data-job")
    assert job_id and page.url.endswith(f"/?submitted={job_id}")
    _shot(page, "1-submitted")
    page.evaluate("window.__stillTheSamePage = true")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row.locator(".status")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
    expect(confirmation.locator(".status")).to_have_text("done")
    previews = row.locator(".previews img")
    expect(previews).to_have_count(2)
    page.wait_for_function(
        "imgs => imgs.every(img => img.complete && img.naturalWidth > 0)", arg=previews.element_handles()
    )

    assert page.evaluate("window.__stillTheSamePage") is True, "the status changed without a reload"
    assert all(0 < width <= 320 for width in _loaded_images(previews)), "previews are thumbnails"
    assert offsite == []
    _shot(page, "2-done")


def test_job_page_shows_previews_and_timeline(api: LiveApi, desktop: Any, tmp_path: Path) -> None:
    page = desktop
    page.goto(api.url + "/")
    page.set_input_files("input[name=file]", str(_photo(tmp_path / "harbour.jpg")))
    page.click("button[type=submit]")
    job_id = page.locator(".notice.ok").get_attribute("data-job")
    page.click(f'.notice.ok a[href="/jobs/{job_id}/page"]')

    expect(page.locator("main.job .status")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
    timeline = page.locator(".timeline")
    expect(timeline).to_contain_text("Queued")
    expect(timeline).to_contain_text("Started")
    expect(timeline).to_contain_text("Finished")
    expect(page.locator("dl.facts")).to_contain_text("Attempts")
    expect(page.locator(".previews img")).to_have_count(2)
    page.wait_for_function("() => [...document.querySelectorAll('.previews img')].every(i => i.naturalWidth > 0)")

    assert page.title().startswith("harbour.jpg")
    _shot(page, "3-job-page")


def test_failed_job_explains_the_reason_in_words(api: LiveApi, desktop: Any) -> None:
    # A damaged file that got past the upload check (as one over the API's decode budget would).
    job = Queue(LocalStore(api.store)).submit(b"\x89PNG\r\n\x1a\n damaged", "holiday.png", "image/png")
    page = desktop

    page.goto(f"{api.url}/jobs/{job['id']}/page")

    expect(page.locator("main.job .status")).to_have_text("failed", timeout=JOB_TIMEOUT_MS)
    expect(page.locator(".explanation")).to_contain_text("cannot be read as an image")
    expect(page.locator(".technical code")).to_contain_text("invalid image")
    expect(page.locator(".previews img")).to_have_count(0)
    _shot(page, "4-failed")


def test_text_file_is_refused_in_words(api: LiveApi, desktop: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list: milk, eggs\n")
    page = desktop
    page.goto(api.url + "/")

    page.set_input_files("input[name=file]", str(notes))
    page.click("button[type=submit]")

    refusal = page.locator(".notice.error")
    expect(refusal).to_contain_text("Upload refused: not an image")
    expect(refusal).to_contain_text("not an intact image in a supported format")
    _shot(page, "5-refused")


def test_phone_layout_has_no_horizontal_scroll(api: LiveApi, phone: Any, tmp_path: Path) -> None:
    page = phone
    page.goto(api.url + "/")
    page.set_input_files("input[name=file]", str(_photo(tmp_path / "a-photo-with-a-rather-long-file-name.jpg")))
    page.click("button[type=submit]")
    job_id = page.locator(".notice.ok").get_attribute("data-job")
    expect(page.locator(f'tr[data-job="{job_id}"] .status')).to_have_text("done", timeout=JOB_TIMEOUT_MS)

    _no_horizontal_scroll(page)
    result = page.locator(f'tr[data-job="{job_id}"] td.result')
    box = result.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], "the Result column is on screen"
    _shot(page, "6-phone")
    page.goto(f"{api.url}/jobs/{job_id}/page")
    _no_horizontal_scroll(page)
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(api.url + "/")
    _no_horizontal_scroll(page)


def test_api_docs_render_offline(api: LiveApi, desktop: Any, offsite: list[str]) -> None:
    page = desktop

    page.goto(api.url + "/docs")

    expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)
    expect(page.locator(".opblock-summary-path", has_text="/jobs/{job_id}/thumbnails/{kind}")).to_have_count(1)
    page.locator(".opblock-post .opblock-summary").first.click()
    responses = page.locator(".opblock-post .responses-table").first
    expect(responses).to_contain_text("415")
    expect(responses).to_contain_text("not an intact image")
    assert offsite == [], f"the docs reached out of the machine: {offsite}"
