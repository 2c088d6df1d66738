"""The report opened in a real headless Chromium (Debian's chromium): it renders its table and plots, its
script runs without console errors, nothing is fetched from the network, sorting and filtering work.

Skipped (with the reason) only where no Chromium is installed: ``make install`` installs it on Debian.
A screenshot of the page is kept at ``<tmp>/report-browser/mb.png`` for a person to look at.
"""
from __future__ import annotations

import pytest

from speclake.serving.report import write_study_report
from tests.serving.report.browser import Chromium, chromium_binary

BINARY = chromium_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no chromium installed (apt-get install chromium)")

ROWS = "Array.from(document.querySelectorAll('#annotations tbody tr'))"


@pytest.fixture(scope="module")
def browser(report_lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-browser")
    page = write_study_report(report_lake.root, "mb", out / "mb.html")
    with Chromium(BINARY, width=1280, height=1600) as chrome:
        chrome.open(page.resolve().as_uri())
        chrome.screenshot(out / "mb.png")
        yield chrome, page


def test_page_renders_table_and_plots_without_errors(browser):
    """The script ran (ready marker), no console error or exception, rows and SVG plots are laid out,
    and the only request was the file itself (self-contained)."""
    chrome, page = browser
    assert chrome.js("document.body.dataset.reportReady") == "1"
    assert chrome.errors == [] and chrome.js("document.getElementById('js-errors').children.length") == 0
    assert chrome.requests == [page.resolve().as_uri()], "nothing fetched at view time"
    assert chrome.js(f"{ROWS}.length") == 14
    assert chrome.js(f"{ROWS}.filter(r => r.offsetHeight > 0).length") == 14, "every row is displayed"
    plots = chrome.js("Array.from(document.querySelectorAll('svg.mirror')).map(s => s.getBoundingClientRect().width)")
    assert len(plots) == 13 and min(plots) > 300, "mirror plots are drawn at their size"
    assert chrome.js("document.querySelectorAll('svg.mirror line.peak.matched').length") > 20
    assert chrome.js("document.querySelectorAll('svg.structure').length") >= 13
    assert chrome.js("document.getElementById('shown').textContent") == "14 of 14 rows shown"


def test_header_click_sorts_and_filter_box_filters(browser):
    """Clicking 'Precursor m/z' sorts ascending, again descending; typing a name hides the other rows;
    a minimum confidence of 0.5 hides every row of this uncalibrated study."""
    chrome, _ = browser
    col = chrome.js("Array.from(document.querySelectorAll('#annotations th')).findIndex(h => h.textContent === "
                    "'Precursor m/z')")
    values = f"{ROWS}.map(r => parseFloat(r.cells[{col}].dataset.v))"
    chrome.js(f"document.querySelectorAll('#annotations th')[{col}].click()")
    up = chrome.js(values)
    assert up == sorted(up) and len(up) == 14
    chrome.js(f"document.querySelectorAll('#annotations th')[{col}].click()")
    assert chrome.js(values) == sorted(up, reverse=True)
    name = chrome.js(f"{ROWS}[0].cells[0].textContent")
    chrome.js(f"var f = document.getElementById('filter'); f.value = {name!r}; f.dispatchEvent(new Event('input'))")
    visible = chrome.js(f"{ROWS}.filter(r => r.style.display !== 'none').map(r => r.cells[0].textContent)")
    assert visible and all(name.lower() in v.lower() for v in visible) and len(visible) < 14
    chrome.js("var f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));"
              "var c = document.getElementById('min-confidence'); c.value = '0.5'; c.dispatchEvent(new Event('input'))")
    assert chrome.js("document.getElementById('shown').textContent") == "0 of 14 rows shown"
    assert chrome.errors == []
