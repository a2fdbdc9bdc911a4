"""The README's `mlflow ui` command, opened in headless Chromium on a small sweep: the runs table,
a run's page with its metrics and artifacts, the compare run's HTML report, each in the
model-training view the links tunelab prints open. A screenshot of each page is kept under
test-artifacts/ui/ for a person to look at.

Needs Debian's chromium and chromium-driver; without them these tests skip, unless
TUNELAB_REQUIRE_BROWSER=1 (set by .ci/run) makes a missing browser a failure."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from tests.conftest import ROOT, run_cli, train_runs
from tests.test_compare import ADAPTERS, SEEDS, store_uri, sweep_folder
from tunelab.tracking.summary import TRAINING_VIEW, run_url

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
REQUIRED = os.environ.get("TUNELAB_REQUIRE_BROWSER") == "1"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING) and not REQUIRED,
                       reason=f"needs Debian chromium and chromium-driver ({', '.join(MISSING)} "
                              "missing: apt-get install -y chromium chromium-driver)"),
]
SCREENSHOTS = ROOT / "test-artifacts" / "ui"
# Without the background-networking flags Chromium keeps calling out, which floods a closed
# network; a fresh profile per session keeps runs independent.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1000"]
STARTUP_S = 300     # the UI server imports all of MLflow; minutes on 2 busy cores
WAIT_S = 60         # the React app fetching and rendering runs


def readme_ui_command(port: int) -> list[str]:
    """The README's command as a user copies it, on a free port, with one worker to spare CPU."""
    [line] = [ln for ln in (ROOT / "README.md").read_text().splitlines()
              if ln.startswith("mlflow ui ")]
    args = shlex.split(line)
    args[args.index("--port") + 1] = str(port)
    return [str(Path(sys.executable).parent / "mlflow"), *args[1:], "--workers", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow ui exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mlflow ui not healthy after {STARTUP_S}s")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL if it lingers:
    graceful shutdown can take most of a minute on busy cores."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """The README's `mlflow ui` run in the sweep's folder: its relative store is the sweep's."""
    folder = sweep_folder(tmp_path_factory)
    port = free_port()
    log = (folder / "mlflow-ui.log").open("w")
    server = subprocess.Popen(readme_ui_command(port), cwd=folder, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url, folder
    finally:
        stop(server)
        log.close()


@pytest.fixture(scope="module")
def compare_run(ui) -> Run:
    """`tunelab-compare` after the sweep, as the user types it: its report is a run's artifact."""
    _, folder = ui
    proc = run_cli(["tunelab-compare"], cwd=folder, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run, *_] = sorted(train_runs(MlflowClient(store_uri(folder)), kind="compare"),
                       key=lambda r: -r.info.start_time)
    return run


@pytest.fixture(scope="module", autouse=True)
def browser_installed() -> None:
    """Under TUNELAB_REQUIRE_BROWSER=1 a missing browser fails at once, before the sweep."""
    if MISSING:
        pytest.fail(f"TUNELAB_REQUIRE_BROWSER=1 but {', '.join(MISSING)} missing: "
                    "apt-get install -y chromium chromium-driver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, request):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nMLflow UI screenshots: {SCREENSHOTS}")


def screenshot(driver, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def training_view(url: str) -> str:
    return f"{url}{'&' if '?' in url.rpartition('#')[2] else '?'}{TRAINING_VIEW}"


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, *texts: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: all(t in page_text(d) for t in texts),
                                        f"not on the page: {texts}")
    return page_text(driver)


def test_runs_table_lists_the_sweep_runs_under_their_parent(ui, browser):
    from selenium.webdriver.common.by import By

    url, folder = ui
    client = MlflowClient(store_uri(folder))
    [parent] = train_runs(client, kind="sweep")
    exp = parent.info.experiment_id
    only_train = urllib.parse.quote("tags.`tunelab.run_kind` = 'train'")
    browser.get(training_view(f"{url}/#/experiments/{exp}/runs?searchFilter={only_train}"))
    wait_for_text(browser, parent.info.run_name)
    link = browser.find_element(By.LINK_TEXT, parent.info.run_name)
    link.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]//button").click()
    names = [f"tiny-bert-{a}-sentiment-cpu-s{s}" for a in ADAPTERS for s in SEEDS]
    text = wait_for_text(browser, *names)
    screenshot(browser, "runs-table")
    assert all(name in text for name in names)


def test_printed_run_link_opens_the_model_training_view(ui, browser):
    """The URL a run's summary prints, with the README's UI serving the store: MLflow 3.17 would
    show its GenAI view (traces, sessions) without the link's view parameter."""
    url, folder = ui
    [run, *_] = train_runs(MlflowClient(store_uri(folder)))
    link = run_url(store_uri(folder), run)
    assert link.startswith("http://127.0.0.1:5000/#/")
    browser.get(link.replace("http://127.0.0.1:5000", url))
    text = wait_for_text(browser, run.info.run_name, "Model registry", "Metrics")
    screenshot(browser, "run-page-training-view")
    assert "Sessions" not in text.splitlines()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_run_page_shows_its_params_metrics_and_artifacts(ui, browser, adapter):
    url, folder = ui
    [run] = [r for r in train_runs(MlflowClient(store_uri(folder)))
             if r.info.run_name == f"tiny-bert-{adapter}-sentiment-cpu-s1"]
    page = f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    browser.get(training_view(page))
    lines = wait_for_text(browser, run.info.run_name, "Parameters", "Metrics",
                          "adapter.name", "val/acc").splitlines()

    def shown(key: str) -> str:
        return lines[lines.index(key) + 1]

    for key in ["adapter.name", "model.name", "task.name", "hardware.name", "seed"]:
        assert shown(key) == run.data.params[key]
    for key in ["val/acc", "test/acc", "params/trainable_pct", "time/fit_seconds"]:
        assert float(shown(key)) == pytest.approx(run.data.metrics[key])
    screenshot(browser, f"run-page-{adapter}")

    browser.get(training_view(f"{page}/artifacts"))
    listed = wait_for_text(browser, "config", "weights", "labels.json").splitlines()
    assert {"config", "weights", "labels.json"} <= set(listed)
    browser.get(training_view(f"{page}/artifacts/config/config.yaml"))
    browser.refresh()       # the viewer opens the file named in the URL only on a fresh load
    wait_for_text(browser, "config/config.yaml", f"name: {adapter}")
    screenshot(browser, f"run-artifacts-{adapter}")


def test_compare_report_renders_in_the_artifact_viewer_with_its_plots(ui, browser, compare_run):
    """report.html is self-contained: MLflow shows it in a sandboxed iframe, where only embedded
    images can load."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, folder = ui
    run = compare_run
    report = MlflowClient(store_uri(folder)).download_artifacts(
        run.info.run_id, "report/report.html", str(folder))
    expected = len(re.findall(r"<img ", Path(report).read_text()))
    assert expected >= 2, "the report has plots"
    browser.get(training_view(f"{url}/#/experiments/{run.info.experiment_id}/runs/"
                              f"{run.info.run_id}/artifacts/report/report.html"))
    frame = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "iframe.mlflow-html-iframe"))[0]
    browser.switch_to.frame(frame)
    try:
        wait_for_text(browser, "Comparison: tunelab", "val/acc")
        images = WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(
            "const imgs = Array.from(document.images);"
            "return imgs.every(i => i.complete) && imgs.map(i => [i.alt, i.naturalWidth]);"))
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "compare-report")
    assert len(images) == expected
    assert all(width > 0 for _, width in images), images
