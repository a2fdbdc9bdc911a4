"""The README's `mlflow ui` command, opened in headless Chromium, shows a sweep's runs."""

from __future__ import annotations

import os
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

from tests.conftest import ROOT, train_runs
from tests.test_compare import ADAPTERS, SEEDS, store_uri, sweep_folder

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian chromium and chromium-driver"),
]
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
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                 "--window-size=1600,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


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
    browser.get(f"{url}/#/experiments/{exp}/runs?searchFilter={only_train}")
    wait_for_text(browser, parent.info.run_name)
    link = browser.find_element(By.LINK_TEXT, parent.info.run_name)
    link.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]//button").click()
    names = [f"tiny-bert-{a}-sentiment-cpu-s{s}" for a in ADAPTERS for s in SEEDS]
    text = wait_for_text(browser, *names)
    assert all(name in text for name in names)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_run_page_shows_its_params_and_metrics(ui, browser, adapter):
    url, folder = ui
    [run] = [r for r in train_runs(MlflowClient(store_uri(folder)))
             if r.info.run_name == f"tiny-bert-{adapter}-sentiment-cpu-s1"]
    browser.get(f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    lines = wait_for_text(browser, run.info.run_name, "Parameters", "Metrics",
                          "adapter.name", "val/acc").splitlines()

    def shown(key: str) -> str:
        return lines[lines.index(key) + 1]

    for key in ["adapter.name", "model.name", "task.name", "hardware.name", "seed"]:
        assert shown(key) == run.data.params[key]
    for key in ["val/acc", "test/acc", "params/trainable_pct", "time/fit_seconds"]:
        assert float(shown(key)) == pytest.approx(run.data.metrics[key])
