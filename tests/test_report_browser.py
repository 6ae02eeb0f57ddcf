"""The HTML report of a tiny real run (two rounds on the sandbox web, evaluated at its end),
drawn by headless Chromium: no console error, every section and image there. Debian's
`chromium` and `chromium-driver` are used as installed (.ci/run installs them); Selenium is
never left to find or download a browser itself."""
import json
from pathlib import Path

import pytest
from rich.console import Console

from explorer.config import SANDBOX_PRESET, Config, apply_overrides
from explorer.run import html_report
from explorer.run.assemble import run_exploration
from explorer.session import RunDir

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SECTIONS = ("summary", "curves", "leaderboard", "gallery", "queries", "outcomes", "eval",
            "test-copies", "config")
TINY = ["crawl.queries_per_round=4", "crawl.results_per_query=8", "train.steps_per_round=3",
        "train.batch_size=8", "eval.progress_max_train=60", "eval.progress_max_test=40"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-round sandbox run driven like `explore run`, with every report write recorded."""
    tmp = tmp_path_factory.mktemp("report")
    run = RunDir(tmp / "run")
    cfg = apply_overrides(Config(), SANDBOX_PRESET + TINY + [
        f"run.run_dir={run.root}", "run.rounds=2", "run.hours=1", f"run.data_root={tmp / 'data'}",
        "run.target=sandbox-flowers"])
    run.save_config(cfg)
    written = []
    original = html_report.write_report

    def recorded(run_, out=None, state=None):
        written.append(state)
        return original(run_, out, state)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(html_report, "write_report", recorded)
        run_exploration(run, console=Console(quiet=True), quiet=True)
    return run, written


def chrome():
    """Headless Chromium through its Debian driver, console messages kept; skips without them."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"no {CHROMIUM} or {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # a driver path given: Selenium Manager is never asked (it would download one)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_the_run_rewrites_its_report_each_round_and_at_its_end(tiny_run):
    run, written = tiny_run
    assert written == ["running (round 0 done)", "running (round 1 done)", "finished"]
    assert (run.root / "eval.json").exists()
    page = (run.root / "report.html").read_text()
    ev = page[page.index('id="eval"'):page.index('id="test-copies"')]
    assert "linear probe" in ev and "100% labels" in ev and "10% labels" in ev


def test_the_report_draws_in_a_browser(tiny_run, tmp_path):
    run, _ = tiny_run
    page = run.root / "report.html"
    driver = chrome()
    try:
        driver.get(page.resolve().as_uri())
        ids = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
        assert ids == list(SECTIONS)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert images, "no image in the gallery"
        assert all(done and w > 0 and h > 0 for done, w, h in images), images
        charts = driver.execute_script(
            "return Array.from(document.querySelectorAll('svg')).map(s => s.getBoundingClientRect().width)")
        assert len(charts) == 5 and all(w > 100 for w in charts), charts
        points = driver.execute_script("return document.querySelectorAll('svg polyline').length")
        assert points >= 4                       # reward, k-NN, losses, queries, kept: drawn, not empty
        assert "linear probe" in driver.find_element("id", "eval").text
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height + 100, 8000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], json.dumps(errors, indent=1)
    finally:
        driver.quit()
