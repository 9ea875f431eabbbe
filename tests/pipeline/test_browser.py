"""The MLflow UI in a real (headless) Chromium after a full `dvc repro`: every tier's run is
listed and a run's metric chart renders. Needs Debian's chromium (never downloads one)."""

import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import TINY_STEPS
from tests.pipeline.test_repro import TIERS
from tests.pipeline.test_server import Server

CHROMIUM = "/usr/bin/chromium"
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
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM} (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def ui(reproduced):
    """`mlflow ui` on the reproduced project's store; yields (base URL, experiment id)."""
    store = f"sqlite:///{reproduced / 'mlflow.db'}"
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    args = [mlflow_bin, "ui", "--backend-store-uri", store, "--workers", "1"]
    server = Server(args, reproduced, reproduced.parent / "ui.log")
    try:
        url = server.wait_ready()
        mlflow.set_tracking_uri(store)
        yield url, mlflow.get_experiment_by_name("spkid").experiment_id
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; fails the test on any uncaught error in the UI's JavaScript."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the MLflow UI: {errors}"


def test_runs_list_names_every_tier(ui, page, tmp_path):
    url, experiment = ui
    page.goto(f"{url}/#/experiments/{experiment}/runs")
    for name in [*(f"workspace/{t}" for t in TIERS), "workspace/compare"]:
        link = page.get_by_role("link", name=name, exact=True)
        link.wait_for()
        assert link.count() == 1, f"{name} listed {link.count()} times"
    page.screenshot(path=tmp_path / "runs.png")


def test_run_metric_chart_renders(ui, page, tmp_path):
    url, experiment = ui
    page.goto(f"{url}/#/experiments/{experiment}/runs")
    page.get_by_role("link", name="workspace/simple", exact=True).click()
    page.get_by_role("tab", name="Model metrics").click()
    assert "/model-metrics" in page.url

    legend = page.get_by_text("workspace/simple (train/loss)", exact=True)
    legend.wait_for()
    chart = page.locator("div", has=legend).filter(has=page.locator(".js-plotly-plot")).last
    svg = chart.locator(".js-plotly-plot svg.main-svg").first
    svg.wait_for()
    box = svg.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, box
    line = chart.locator(".scatterlayer path.js-line").first
    assert line.get_attribute("d").count("L") >= 2, "the loss curve has no line"
    points = chart.locator(".scatterlayer path.point")
    assert points.count() == TINY_STEPS["steps"] // TINY_STEPS["log_every"], "one per step"
    page.screenshot(path=tmp_path / "model_metrics.png")
    chart.screenshot(path=tmp_path / "train_loss.png")
    assert (tmp_path / "train_loss.png").stat().st_size > 1000
