"""The report in a real browser: headless Debian chromium opens it offline, logs no console error,
runs no injected script, sorts the leaderboard on a header click, filters by model, and leaves a
screenshot (set SEGBENCH_SCREENSHOT=/some/file.png to keep a copy).

.ci/run installs chromium and chromium-driver; elsewhere this module is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from segbench.report.compare import compare_runs
from segbench.report.exports import write_report
from segbench.report.html import render_comparison
from segbench.suite.targets import Targets

from .test_report import HOSTILE_NAME, build_small_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")

from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

WIDTH = 1400


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--window-size={WIDTH},1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(browser: Any, path: Path) -> None:
    browser.get_log("browser")  # reading the log empties it: what the next page logs is all that remains
    browser.get(path.resolve().as_uri())


def console_errors(browser: Any) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def assert_no_alert(browser: Any) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def column_values(browser: Any, header_text: str) -> list[str]:
    headers = [h.text.strip() for h in browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table thead th")]
    index = headers.index(header_text)
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")
    return [row.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-sort") for row in rows]


def full_page_screenshot(browser: Any, target: Path) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, min(height + 40, 12000))
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(target))
    browser.set_window_size(WIDTH, 1000)


def test_report_in_headless_chromium(browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    report = write_report(build_small_run(tmp_path_factory), tmp_path / "report.html")
    open_page(browser, report)
    assert console_errors(browser) == []
    assert_no_alert(browser)
    assert HOSTILE_NAME in browser.title  # the hostile suite name is the page's text, not a script
    assert browser.find_element(By.CSS_SELECTOR, "header.page h1").text == HOSTILE_NAME
    images = browser.find_elements(By.CSS_SELECTOR, "#plots figure img")
    assert len(images) == 5 and all(
        browser.execute_script("return arguments[0].naturalWidth", img) > 300 for img in images
    )

    before = column_values(browser, "median ms")
    header = next(
        h
        for h in browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table thead th")
        if h.text.strip() == "median ms"
    )
    header.click()
    ascending = column_values(browser, "median ms")
    assert header.get_attribute("aria-sort") == "ascending"
    assert ascending == sorted(before, key=float)
    header.click()
    descending = column_values(browser, "median ms")
    assert descending == sorted(before, key=float, reverse=True)
    assert before != ascending or before != descending  # a click changed the row order
    resolution = next(
        h
        for h in browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table thead th")
        if h.text.strip() == "resolution"
    )
    resolution.click()  # sorts by pixel count, not by the "16x16" text
    assert column_values(browser, "resolution") == sorted(column_values(browser, "resolution"), key=float)

    select = Select(browser.find_element(By.ID, "model-filter"))
    select.select_by_value("test-tiny")
    visible = [
        row for row in browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr") if row.is_displayed()
    ]
    assert len(visible) == 4 and "4 of 4 cells" in browser.find_element(By.ID, "leaderboard-count").text
    assert console_errors(browser) == []

    shot = tmp_path / "report.png"
    full_page_screenshot(browser, shot)
    assert shot.stat().st_size > 50_000
    if os.environ.get("SEGBENCH_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SEGBENCH_SCREENSHOT"])


def test_comparison_in_headless_chromium(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run_dir = build_small_run(tmp_path_factory)
    page = tmp_path / "compare.html"
    page.write_text(render_comparison(compare_runs(run_dir, run_dir)), encoding="utf-8")
    open_page(browser, page)
    assert console_errors(browser) == []
    assert_no_alert(browser)
    header = browser.find_elements(By.CSS_SELECTOR, "#compare-table thead th")[2]
    header.click()
    assert header.get_attribute("aria-sort") == "ascending" and console_errors(browser) == []


def test_answer_table_in_headless_chromium(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """With targets the answer comes first, its verdict table open and sortable."""
    report = write_report(build_small_run(tmp_path_factory), tmp_path / "answer.html", targets=Targets(fps=1e9))
    open_page(browser, report)
    assert console_errors(browser) == []
    first = browser.find_elements(By.CSS_SELECTOR, "main section, section")[0]
    assert first.get_attribute("id") == "answer"
    rows = [row for row in browser.find_elements(By.CSS_SELECTOR, "#answer-table tbody tr") if row.is_displayed()]
    assert len(rows) == 6
    verdicts = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#answer-table td.verdict")}
    assert verdicts == {"misses", "unknown"}  # nothing reaches 1e9 FPS; the oom cell misses, the error cell is unknown
    assert "Nearest miss" in browser.find_element(By.ID, "answer").text


# ---- layout at a 1,400 px window (issue 33.5): nothing wider than the window, every plot loaded and inside its
# container, no plot over another ------------------------------------------------------------------------------

LAYOUT_PROBLEMS = """
const problems = [];
const width = window.innerWidth;
if (document.documentElement.scrollWidth > width) {
  problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} px in a ${width} px window`);
}
for (const element of document.querySelectorAll('body *')) {
  const box = element.getBoundingClientRect();
  const clipped = element.closest('.table-wrap, pre, details:not([open])');
  if (!clipped && box.width > 0 && box.right > width + 0.5) {
    problems.push(`${element.tagName.toLowerCase()}#${element.id}.${element.className} ends at ${box.right} px`);
  }
}
for (const table of document.querySelectorAll('.table-wrap > table')) {
  const frame = table.parentElement;  // a closed section's table folds when it is opened
  if (!table.closest('details:not([open])') && table.scrollWidth > frame.clientWidth + 1) {
    problems.push(`table#${table.id} is ${table.scrollWidth} px in a ${frame.clientWidth} px frame: columns clipped`);
  }
}
const images = [...document.querySelectorAll('img')];
for (const img of images) {
  const box = img.getBoundingClientRect(), parent = img.parentElement.getBoundingClientRect();
  if (!(img.complete && img.naturalWidth > 0)) problems.push(`${img.alt}: not loaded`);
  if (box.width === 0 || box.height === 0) problems.push(`${img.alt}: not displayed`);
  if (box.left < parent.left - 0.5 || box.right > parent.right + 0.5) {
    problems.push(`${img.alt}: ${box.left}-${box.right} px outside its container ${parent.left}-${parent.right} px`);
  }
  // Scaled below three quarters, a plot's 9-10 pt text drops under 7 pt: too small to read.
  if (box.width < 0.75 * img.naturalWidth) problems.push(`${img.alt}: shrunk to ${box.width} of ${img.naturalWidth}`);
}
for (let i = 0; i < images.length; i++) {
  for (let j = i + 1; j < images.length; j++) {
    const a = images[i].getBoundingClientRect(), b = images[j].getBoundingClientRect();
    const across = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const down = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (across > 0.5 && down > 0.5) problems.push(`${images[i].alt} overlaps ${images[j].alt}`);
  }
}
return problems;
"""

COMMITTED = Path(__file__).parents[2] / "results"
LAYOUT_RUNS = ["accuracy-demo-20261202T041955Z", "cpu-best-20261202T041047Z", "quick-20261202T035301Z"]


def assert_layout_fits(browser: Any, page: Path) -> None:
    browser.set_window_size(WIDTH, 1000)
    open_page(browser, page)
    assert browser.execute_script("return window.innerWidth") <= WIDTH
    assert browser.execute_script(LAYOUT_PROBLEMS) == []
    assert console_errors(browser) == []


def test_small_run_report_fits_a_1400px_window(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    assert_layout_fits(browser, write_report(build_small_run(tmp_path_factory), tmp_path / "report.html"))


@pytest.mark.parametrize("name", LAYOUT_RUNS, ids=lambda name: name.rsplit("-", 1)[0])
def test_committed_run_reports_fit_a_1400px_window(browser: Any, name: str, tmp_path: Path) -> None:
    """Real runs: several models (two-panel plots), labels against ground truth (the mIoU Pareto plot)."""
    assert_layout_fits(browser, write_report(COMMITTED / name, tmp_path / "report.html"))


def test_a_wide_table_folds_its_secondary_columns_and_a_button_shows_them(browser: Any, tmp_path: Path) -> None:
    """Issue 33.5: at 1,400 px the quantization table of a real run is wider than its frame. It folds its secondary
    columns first (the fp32 eager references, the fidelity note), never the ones naming the configuration; the
    button above it names what it folded and shows it."""
    page = write_report(COMMITTED / "quantization-20261202T075022Z", tmp_path / "report.html")
    assert_layout_fits(browser, page)
    table = browser.find_element(By.ID, "quantization-table")
    button = table.find_element(By.XPATH, "../preceding-sibling::button[@class='fold-toggle'][1]")
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    hidden = [h.get_attribute("textContent").strip() for h in headers if not h.is_displayed()]
    assert hidden and "fp32 eager ms" in hidden and not {"model", "precision", "backend"} & set(hidden), hidden
    assert button.text.startswith(f"show {len(hidden)} more column(s): ") and "fp32 eager ms" in button.text
    button.click()
    assert all(h.is_displayed() for h in headers) and button.get_attribute("aria-expanded") == "true"
    button.click()
    assert sum(not h.is_displayed() for h in headers) == len(hidden)


def test_a_table_in_a_closed_section_folds_when_the_section_is_opened(browser: Any, tmp_path: Path) -> None:
    page = write_report(COMMITTED / "accuracy-demo-20261202T041955Z", tmp_path / "report.html")
    browser.set_window_size(WIDTH, 1000)
    open_page(browser, page)
    table = browser.find_element(By.ID, "answer-table")
    summary = table.find_element(By.XPATH, "ancestor::details[1]/summary")
    summary.click()
    fits = "const t = arguments[0]; return t.scrollWidth <= t.parentElement.clientWidth + 1;"
    assert browser.execute_script(fits, table)
    assert table.find_elements(By.XPATH, "../preceding-sibling::button[@class='fold-toggle']")
