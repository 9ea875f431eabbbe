"""A real (headless) Chromium after a full `dvc repro`: the MLflow UI lists every tier's run
and renders a run's metric chart; `dvc plots show` and `dvc plots diff` pages render every plot
from disk with the network off. Needs Debian's chromium (never downloads one)."""

import re
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import TINY_STEPS, run
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
    assert not errors, f"JavaScript errors on the page: {errors}"


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


PLOTS_PER_TIER = 4  # dvc.yaml: train and valid curves, per-speaker bars, confusion
PLOTS_ENSEMBLE = 2  # per-speaker bars, confusion


@pytest.mark.parametrize("command", [["show"], ["diff"]])
def test_dvc_plots_render_offline(reproduced, page, tmp_path, command):
    """The page DVC writes with the project's template (.dvc/config plots.html_template)
    draws every plot with the network off: each plot's div holds a non-empty canvas or SVG."""
    out = tmp_path / "plots"
    run([sys.executable, "-m", "dvc", "plots", *command, "-o", str(out)], reproduced)
    html = (out / "index.html").read_text()
    assert "<script src=" not in html, "the page loads a script from elsewhere"
    requests = []
    page.context.set_offline(True)
    page.on("request", lambda r: requests.append(r.url))
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    plots = re.findall(r"vegaEmbed\('#([^']+)'", html)  # dvc-render's call, one per plot
    assert len(plots) == len(TIERS) * PLOTS_PER_TIER + PLOTS_ENSEMBLE
    for name in plots:  # vegaEmbed replaces the div's script with the chart
        drawn = page.locator(f"[id='{name}']").locator("canvas, svg.marks").first
        drawn.wait_for()
        box = drawn.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, f"{name} not drawn: {box}"
    assert all(u.startswith("file://") for u in requests), requests
    page.screenshot(path=tmp_path / "plots.png", full_page=True)
