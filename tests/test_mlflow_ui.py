"""The MLflow UI as the comparison workbench, checked in a real browser: a tiny finished sweep (and
its `focustune compare`), served by `focustune ui` on 127.0.0.1, opened in headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and the `selenium` package
(the `test` extra). Screenshots are saved under the pytest tmp folder, or $FOCUSTUNE_SCREENSHOTS;
the path is printed (`-s`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from servers import free_port, start, stop_group, sweep_command, tiny_npz, wait_until

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1000")
EXPERIMENT = "ui-demo"
WAIT_S = 90


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    """A finished two-method sweep (sqlite store, system metrics on) and its compare report."""
    folder = tmp_path_factory.mktemp("ui-sweep")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tiny = tiny_npz(folder / "tiny.npz")
    log = folder / "sweep.log"
    proc = start(sweep_command("--dataset", str(tiny), "--methods", "erm,focal", "--trials", "2", "--seeds", "2",
                               "--epochs", "2", "--set", "batch_size=16", "--system-metrics",
                               "--tracking-uri", uri, "--experiment", EXPERIMENT), log, cwd=folder)
    try:
        proc.wait(timeout=420)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    compare = subprocess.run([sys.executable, "-m", "focustune.cli", "compare", "--experiment", EXPERIMENT,
                              "--tracking-uri", uri, "--out", str(folder / "report")],
                             capture_output=True, text=True, cwd=folder, timeout=300)
    assert compare.returncode == 0, compare.stderr[-3000:]
    return {"folder": folder, "uri": uri}


@pytest.fixture(scope="module")
def ui(sweep) -> dict:
    """`focustune ui` on the sweep's store: its address and the experiment link it prints."""
    log = sweep["folder"] / "ui.log"
    proc = start([sys.executable, "-m", "focustune.cli", "ui", "--tracking-uri", sweep["uri"],
                  "--port", str(free_port())], log, cwd=sweep["folder"])
    try:
        assert wait_until(lambda: "ready at" in log.read_text() or proc.poll() is not None, 240), log.read_text()
        text = log.read_text()
        address = re.search(r"ready at (http://127\.0\.0\.1:\d+)", text)
        link = re.search(rf"^\s+{EXPERIMENT}: (\S+)$", text, flags=re.M)
        assert address and link, text[-3000:]
        yield {"address": address.group(1), "link": link.group(1)}
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.TemporaryDirectory(prefix="ft-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile.name}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """$FOCUSTUNE_SCREENSHOTS, else a folder under the pytest tmp folder (which pytest prunes)."""
    folder = Path(os.environ["FOCUSTUNE_SCREENSHOTS"]) if os.environ.get("FOCUSTUNE_SCREENSHOTS") \
        else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the MLflow UI: {folder}")
    return folder


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def open_page(driver, url: str, *texts: str) -> str:
    """Open ``url`` and wait until every one of ``texts`` is on the page; returns the page's text."""
    driver.get(url)
    assert wait_until(lambda: all(t in page_text(driver) for t in texts), WAIT_S, 0.5), \
        f"{url}: {[t for t in texts if t not in page_text(driver)]} not shown; page:\n{page_text(driver)[:2000]}"
    close_assistant(driver)
    return page_text(driver)


def close_assistant(driver) -> None:
    """MLflow 3.17 opens its Assistant panel beside every page; close it so the runs have the room."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):
        if button.is_displayed():
            button.click()


def click_text(driver, text: str) -> None:
    """Click the element showing exactly ``text`` (MLflow keeps hidden copies of some)."""
    from selenium.webdriver.common.by import By

    shown = lambda: [e for e in driver.find_elements(By.XPATH, f"//*[text()='{text}']") if e.is_displayed()]  # noqa: E731
    assert wait_until(lambda: bool(shown()), WAIT_S, 0.5), f"{text!r} is not shown"
    shown()[0].click()


def run_of(sweep: dict, name: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=sweep["uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return run


def digest_of(run) -> str:
    return run.inputs.dataset_inputs[0].dataset.digest


def test_experiment_page_lists_the_study_runs_with_their_trials_nested(sweep, ui, browser, screenshots):
    from selenium.webdriver.common.by import By

    parent = run_of(sweep, "tiny-erm")
    text = open_page(browser, ui["link"], "tiny-erm", "tiny-focal", f"tiny ({digest_of(parent)})")
    assert "Model training" in text and "focustune sweep of erm, focal on tiny" in text
    assert "tiny-erm-seed1" not in text  # nested: shown once the study run is expanded
    browser.save_screenshot(str(screenshots / "experiment.png"))
    row = browser.find_element(By.LINK_TEXT, "tiny-erm").find_element(By.XPATH, "./ancestor::*[@role='row'][1]")
    row.find_element(By.TAG_NAME, "button").click()
    assert wait_until(lambda: "tiny-erm-seed1" in page_text(browser) and "tiny-erm-seed2" in page_text(browser),
                      WAIT_S, 0.5), page_text(browser)[:2000]
    trials = re.findall(r"tiny-erm-[0-9a-f]{5}", page_text(browser))
    assert len(trials) == 2, page_text(browser)[:2000]  # the two search trials, under their study
    assert "focustune sweep" in page_text(browser)  # the Source column
    browser.save_screenshot(str(screenshots / "experiment_expanded.png"))


def test_study_run_shows_its_description_dataset_and_figures(sweep, ui, browser, screenshots):
    from selenium.webdriver.common.by import By

    parent = run_of(sweep, "tiny-focal")
    page = ui["link"].replace("/runs?", f"/runs/{parent.info.run_id}?")
    text = open_page(browser, page, "Best configuration (by validation balanced_acc",
                     "Seed re-runs of that configuration (n=2 of 2), test mean ± SE", f"tiny ({digest_of(parent)})")
    assert "tiny-focal-seed1" in text and "tiny-focal-seed2" in text  # child runs
    browser.save_screenshot(str(screenshots / "study_run.png"))
    open_page(browser, page.replace("?", "/artifacts?", 1), "figures", "study.json")
    click_text(browser, "figures")
    assert wait_until(lambda: "validation_curves.png" in page_text(browser), WAIT_S, 0.5)
    assert {"per_class_recall.png", "search_best_so_far.png"} <= set(page_text(browser).split())
    click_text(browser, "validation_curves.png")
    shown = lambda: [i for i in browser.find_elements(By.TAG_NAME, "img") if i.is_displayed()  # noqa: E731
                     and (i.get_attribute("src") or "").startswith("blob:")
                     and int(i.get_attribute("naturalWidth") or 0) >= 400]
    assert wait_until(lambda: bool(shown()), WAIT_S, 0.5), "the figure is not displayed"
    browser.save_screenshot(str(screenshots / "study_figure.png"))


def test_trial_run_shows_its_system_metrics(sweep, ui, browser, screenshots):
    trial = run_of(sweep, "tiny-erm-seed1")
    page = ui["link"].replace("/runs?", f"/runs/{trial.info.run_id}/system-metrics?")
    open_page(browser, page, "system/trial_cpu_utilization_percentage", "system/trial_memory_rss_megabytes")
    browser.save_screenshot(str(screenshots / "system_metrics.png"))


def check_model_is_listed(browser, ui: dict, study_run_name: str) -> None:
    """The study run's selected model is listed on the experiment's Models page (its logged model)."""
    open_page(browser, ui["link"].replace("/runs?", "/models?"), study_run_name)


def test_the_selected_model_is_listed(ui, browser, screenshots):
    check_model_is_listed(browser, ui, "tiny-erm")
    browser.save_screenshot(str(screenshots / "models.png"))
