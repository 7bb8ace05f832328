"""The pages in a real browser: headless Chromium driven by Playwright against a live server.

Chromium is Debian's (apt package ``chromium``, at /usr/bin/chromium); Playwright
never downloads a browser. ``make test`` installs it first (the Makefile's ``browser``
target: ``apt-get install -y chromium`` when run as root). Without it these tests
are skipped on a laptop, and fail where ``REQUIRE_BROWSER_TESTS=1`` (``.ci/run`` sets
it) or ``CI`` is set, so a missing browser can never pass silently.

Screenshots of every page, on a desktop and a phone viewport, are written to
``test-artifacts/screenshots/`` for CI to keep as artifacts.
"""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import pytest
from django.test import override_settings

from tests.test_pages import build_site

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 90_000  # the first material page loads the model bundle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def browser_tests_required() -> str:
    """Why a missing browser must fail these tests rather than skip them ("" on a laptop)."""
    if os.environ.get("REQUIRE_BROWSER_TESTS"):
        return "REQUIRE_BROWSER_TESTS is set"
    return "CI is set" if os.environ.get("CI") else ""


def chromium_or_skip(chromium: Path = CHROMIUM) -> Path:
    executable = chromium if chromium.exists() else Path(shutil.which("chromium") or "/nonexistent")
    if executable.exists():
        return executable
    message = f"Chromium not found at {chromium}: install Debian's package with `apt-get install -y chromium`"
    if required := browser_tests_required():
        pytest.fail(f"{message} ({required}, so the browser tests may not be skipped)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is in requirements.txt
        if browser_tests_required():
            pytest.fail("the playwright package is not installed")
        pytest.skip("the playwright package is not installed")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the tests
    # make between browser steps are ordinary blocking calls, not async code.
    with mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "true"}), sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def site(transactional_db, tmp_path):
    with override_settings(MEDIA_ROOT=str(tmp_path / "media")):
        yield build_site(tmp_path)


class Page:
    """A browser tab that records script errors and takes named screenshots."""

    def __init__(self, browser, base_url: str, viewport: dict):
        self.context = browser.new_context(viewport=viewport, base_url=base_url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on(
            "console", lambda message: message.type == "error" and self.errors.append(f"console: {message.text}")
        )
        self.width = viewport["width"]

    def open(self, path: str):
        response = self.page.goto(path, wait_until="domcontentloaded")
        assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
        self.page.wait_for_load_state("load")
        return response

    def wait_for_charts(self) -> int:
        """Wait until every plotly chart on the page has drawn its SVG; returns how many."""
        charts = self.page.locator("[data-chart]")
        count = charts.count()
        for index in range(count):
            chart = charts.nth(index)
            chart.locator("svg.main-svg").first.wait_for(state="attached")
            assert chart.get_attribute("data-rendered") == "true" or chart.locator("svg.main-svg").count() > 0
        return count

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}-{self.width}px.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        return path

    def overflow(self) -> int:
        """How far the page is wider than the viewport (0: no sideways scrolling)."""
        return self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")

    def close(self) -> None:
        self.context.close()


def pages_of(site) -> list[tuple[str, str, int]]:
    """(screenshot name, path, charts expected at least) for every page."""
    from django.urls import reverse

    return [
        ("dashboard", reverse("materials:dashboard"), 0),
        ("candidates", reverse("materials:candidate-list"), 0),
        ("materials", reverse("materials:material-list"), 0),
        ("material-detail", reverse("materials:material-detail", args=[site.material.pk]), 1),
        ("material-without-spectra", reverse("materials:material-detail", args=[site.bare_material.pk]), 0),
        ("model-detail", reverse("materials:model-detail", args=[site.production.pk]), 7),  # 6 heatmaps + ROC
        ("model-compare", reverse("materials:model-compare"), 1),
        ("dataset", reverse("materials:dataset"), 3),
        ("screenings", reverse("materials:screening-list"), 0),
        ("screening-detail", reverse("materials:screening-detail", args=[site.batch.pk]), 0),
        ("login", reverse("materials:login"), 0),
    ]


def test_every_page_loads_draws_its_charts_and_fits_a_phone(browser, live_server, site):
    for viewport in (DESKTOP, PHONE):
        tab = Page(browser, live_server.url, viewport)
        try:
            for name, path, min_charts in pages_of(site):
                tab.open(path)
                assert tab.page.locator("h1").first.is_visible(), name
                assert tab.wait_for_charts() >= min_charts, name
                if min_charts:
                    # plotly.js came from our own static files: a rendered SVG is proof.
                    assert tab.page.locator("[data-chart] svg.main-svg").count() >= min_charts, name
                    assert tab.page.evaluate("typeof Plotly") == "object"
                tab.screenshot(name)
                if viewport is PHONE:
                    assert tab.overflow() <= 1, f"{name} scrolls sideways on a phone"
            assert tab.errors == []
        finally:
            tab.close()


def test_filter_candidates_then_open_a_material_and_toggle_its_spectra(browser, live_server, site):
    from materials.models import Prediction

    predictions = Prediction.objects.filter(model_version=site.production).select_related("material")
    element = site.material.elements[0]
    expected = sorted(
        (p for p in predictions if element in p.material.elements), key=lambda p: (-p.probability, p.material_id)
    )
    tab = Page(browser, live_server.url, DESKTOP)
    try:
        tab.open("/candidates/")
        tab.page.get_by_label("Contains all of").fill(element)
        tab.page.get_by_label("Label status").select_option("all")
        tab.page.get_by_role("button", name="Apply filters").click()
        tab.page.wait_for_url(f"**/candidates/?*include={element}*")
        links = tab.page.locator("table.candidates tbody tr td.formula a")
        assert links.count() == min(len(expected), 50)
        assert links.first.inner_text() == expected[0].material.reduced_formula
        tab.screenshot("candidates-filtered")
        # The export link carries the same filter.
        export = tab.page.get_by_role("link", name="Download CSV of this filter").get_attribute("href")
        assert f"include={element}" in export

        tab.page.locator(f'table.candidates a[href="/materials/{site.material.pk}/"]').click()
        tab.page.wait_for_url(f"**/materials/{site.material.pk}/")
        assert tab.page.locator("h1").inner_text().startswith(site.material.reduced_formula)
        chart = tab.page.locator("#spectra-chart")
        chart.locator("svg.main-svg").first.wait_for(state="attached")
        visible = "document.getElementById('spectra-chart').data.filter(t => t.visible === true).map(t => t.name)"
        raw = tab.page.evaluate(visible)
        assert raw and all("standardized" not in name for name in raw)
        toggle = tab.page.get_by_role("button", name="Standardized (as the model sees it)")
        toggle.click()
        tab.page.wait_for_function(
            "document.querySelector('[data-group=standardized]').getAttribute('aria-pressed') === 'true'"
        )
        standardized = tab.page.evaluate(visible)
        assert standardized and all("standardized" in name for name in standardized)
        assert "standardized" in tab.page.evaluate("document.getElementById('spectra-chart').layout.yaxis.title.text")
        tab.screenshot("material-standardized")
        assert tab.errors == []
    finally:
        tab.close()


def cif_release(site, path: Path) -> Path:
    """A zip with the CIF of a stored material (so no FEFF run is needed) and one bad file."""
    from pymatgen.io.cif import CifWriter

    structure = site.material.get_structure()
    with zipfile.ZipFile(path, "w") as archive:
        if structure is not None:
            with warnings.catch_warnings():  # pymatgen: repeated site labels in a primitive cell
                warnings.simplefilter("ignore")
                text = str(CifWriter(structure))
            archive.writestr(f"{site.material.reduced_formula}.cif", text)
        archive.write(REPO / "data" / "structures" / "LiCoO2_mp24850.cif", "LiCoO2_mp24850.cif")
        archive.writestr("notes.txt", "not a structure")
    return path


def test_upload_a_release_and_watch_its_progress_live(browser, live_server, site, tmp_path):
    from materials.models import ScreeningBatch, ScreeningRow

    tab = Page(browser, live_server.url, DESKTOP)
    try:
        tab.open("/screenings/new/")
        assert "/login/" in tab.page.url  # uploading needs an account
        tab.page.get_by_label("Username").fill("scientist")
        tab.page.get_by_label("Password").fill("correct-horse-battery")
        tab.page.get_by_role("button", name="Log in").click()
        tab.page.wait_for_url("**/screenings/new/")
        tab.page.get_by_label("Name").fill("Browser upload")
        tab.page.get_by_label("Release (.zip of CIF files)").set_input_files(str(cif_release(site, tmp_path / "r.zip")))
        # The worker is not part of this test: the batch stays pending until we move it.
        with mock.patch("materials.screening.start_screening_batch") as start:
            tab.page.get_by_role("button", name="Start screening").click()
            tab.page.wait_for_url("**/screenings/*/")
        batch = ScreeningBatch.objects.get(name="Browser upload")
        start.assert_called_once_with(batch.pk)
        assert tab.page.locator("[data-field=status]").inner_text() == "pending"
        tab.screenshot("screening-pending")

        batch.status, batch.progress, batch.progress_message = "running", 0.5, "spectra for LiCoO2"
        batch.stage_counts = {"files": 3, "parsed": 2}
        batch.save()
        tab.page.wait_for_function(
            "document.querySelector('[data-field=message]').textContent.includes('spectra for LiCoO2')"
        )
        assert tab.page.locator("[data-field=progress]").evaluate("el => el.value") == 0.5
        assert "structures parsed" in tab.page.locator("#stage-table").inner_text()

        # Stage 1 ends: the page shows the prior's ranking by itself, and stage 2's progress live.
        batch.materials.add(*site.batch.materials.all())
        for row in site.batch.rows.all():
            ScreeningRow.objects.create(
                batch=batch,
                material_id=row.material_id,
                files=row.files,
                prior_probability=row.prior_probability,
                probability=row.prior_probability,
                reason="prior only: outside the FEFF budget",
            )
        batch.stage_counts = {"files": 3, "parsed": 2, "ranked": 6, "feff_jobs": 2, "feff_jobs_done": 0}
        batch.save()
        tab.page.wait_for_selector("#ranking")
        assert "prior only: outside the FEFF budget" in tab.page.locator("#ranking").inner_text()
        batch.stage_counts = {**batch.stage_counts, "feff_jobs_done": 1}
        batch.save()
        tab.page.wait_for_function(
            "document.querySelector('[data-field=stage-two-text]').textContent.includes('1 of 2 spectra')"
        )
        tab.screenshot("screening-stage-two")

        batch.model_version = site.production
        batch.status, batch.progress, batch.progress_message = "done", 1.0, "classified"
        batch.save()
        tab.page.wait_for_function("document.querySelector('[data-field=status]').textContent === 'done'")
        tab.page.wait_for_selector("a:has-text('Download all as CSV')")
        assert tab.page.locator("[data-field=status]").inner_text() == "done"
        tab.screenshot("screening-done")
        assert tab.errors == []
    finally:
        tab.close()


def test_a_missing_chromium_fails_when_browser_tests_are_required(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on the PATH either
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("REQUIRE_BROWSER_TESTS", raising=False)
    with pytest.raises(pytest.skip.Exception):
        chromium_or_skip(tmp_path / "chromium")
    monkeypatch.setenv("REQUIRE_BROWSER_TESTS", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_BROWSER_TESTS is set, so the browser tests may not be"):
        chromium_or_skip(tmp_path / "chromium")
