"""The curation report in a real browser: Debian's Chromium driven by Playwright (never Playwright's own
browsers). The plot, both tables, the token colours, the filter and the sorting work in the page, and
the page asks for nothing but itself. Screenshots are saved in the test's temporary folder.

Without Chromium or Playwright the test fails, saying how to install them (``scripts/setup.sh``
installs Debian's ``chromium`` and the test extra installs ``playwright``): a green suite has looked at
the pages. ``FORVALUE_SKIP_BROWSER=1`` skips it instead, on a machine that cannot have Chromium."""

import os
from pathlib import Path

import pytest

from tests.test_report import build_subset

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_or_skip():
    """``sync_playwright``, or a skip (a failure under CI) saying how to install what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, missing = None, "the Python package playwright (pip install -e '.[test]')"
    else:
        missing = None if CHROMIUM.is_file() else f"{CHROMIUM} (apt-get install -y --no-install-recommends chromium)"
    if missing:
        why = f"the browser tests need {missing}; scripts/setup.sh installs both"
        if os.environ.get("FORVALUE_SKIP_BROWSER") == "1":
            pytest.skip(why)
        pytest.fail(why + " (FORVALUE_SKIP_BROWSER=1 skips them)")
    return sync_playwright


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, tiny_model_dir):
    from forvalue.report import subset_report

    folder = tmp_path_factory.mktemp("browser-report")
    cat, sid, _, _ = build_subset(folder, tiny_model_dir, n=30, value=40)
    n_kept = len(cat.query("SELECT sample_id FROM subset_samples WHERE subset_id = ?", [sid]))
    return subset_report(cat.path, sid, folder / "report.html", explain_rows=8), n_kept


def visible_rows(page, table: str) -> int:
    return page.locator(f"#{table}-table tbody tr:visible").count()


def column_values(page, table: str, column: int) -> list[float]:
    return [float(v) for v in page.locator(f"#{table}-table tbody tr").evaluate_all(
        f"rows => rows.map(r => r.cells[{column}].getAttribute('data-v'))")]


def test_report_in_chromium(report_page, tmp_path):
    sync_playwright = browser_or_skip()
    path, n_kept = report_page
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            # the histograms: kept and dropped bars, drawn (a size on the page)
            hist = page.locator("svg.hist").first
            assert hist.locator("rect.bar.kept").count() > 0 and hist.locator("rect.bar.dropped").count() > 0
            assert hist.bounding_box()["width"] > 300
            # both tables have rows; the kept table all the members
            assert visible_rows(page, "kept") == n_kept and visible_rows(page, "dropped") == 30 - n_kept
            # a token is coloured: a background colour from the style sheet, its contribution on hover
            token = page.locator("#kept-table .resp span.p4").first
            assert token.evaluate("e => getComputedStyle(e).backgroundColor") not in ("rgba(0, 0, 0, 0)", "transparent")
            assert token.get_attribute("title").startswith("+")
            # typing in the filter leaves the rows that hold the text
            page.fill("#dropped .filter", "Reverse")
            shown = visible_rows(page, "dropped")
            assert 0 < shown < 30 - n_kept
            texts = page.locator("#dropped-table tbody tr:visible").all_inner_texts()
            assert all("reverse" in t.lower() for t in texts)
            assert page.inner_text("#dropped-count") == f"{shown} of {30 - n_kept} rows"
            page.screenshot(path=str(tmp_path / "filtered.png"), full_page=True)
            page.fill("#dropped .filter", "")
            assert visible_rows(page, "dropped") == 30 - n_kept
            # clicking a header sorts by it, again the other way
            header = page.locator("#kept-table thead th", has_text="score")
            header.click()
            up = column_values(page, "kept", 2)
            assert up == sorted(up) and header.get_attribute("aria-sort") == "ascending"
            header.click()
            assert column_values(page, "kept", 2) == sorted(up, reverse=True)
            page.locator("#kept-table thead th", has_text="rank").click()
            assert column_values(page, "kept", 0) == list(range(1, n_kept + 1))
            page.screenshot(path=str(tmp_path / "sorted.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert requests == [path.as_uri()]          # the page loaded nothing else
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("report.png", "filtered.png", "sorted.png"))
