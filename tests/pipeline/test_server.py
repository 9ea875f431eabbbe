"""`dvc repro train@simple` against a real `mlflow server` (MLFLOW_TRACKING_URI=http://...):
the run, its metrics and its checkpoints are all reachable through the server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_STEPS, run

DVC = [sys.executable, "-m", "dvc"]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An `mlflow` server subprocess (its own process group), started but maybe not ready."""

    def __init__(self, args: list, cwd, log: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [*args, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> str:
        """Wait until GET /health answers; return the URI."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.uri
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow did not answer /health in {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def server(tmp_path, request):
    """`mlflow server` with a SQLite store and proxied artifacts under tmp_path/server."""
    home = tmp_path / "server"
    home.mkdir()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    args = [
        mlflow_bin,
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'server.db'}",
        "--artifacts-destination",
        str(home / "artifacts"),
        "--workers",
        "1",
    ]
    srv = Server(args, home, home / "server.log")
    request.addfinalizer(srv.stop)
    return srv


def test_repro_logs_run_metrics_and_checkpoints_through_a_server(project, server, tmp_path):
    run([*DVC, "repro", "split"], project)  # no MLflow yet: overlaps the server's start
    uri = server.wait_ready()
    run([*DVC, "repro", "train@simple"], project, env={"MLFLOW_TRACKING_URI": uri})

    assert not (project / "mlflow.db").exists(), "the local store must stay unused"
    assert not (project / "mlartifacts").exists(), "artifacts must go through the server"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("spkid")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    (r,) = client.search_runs([experiment.experiment_id])
    summary = json.loads((project / "reports/train/simple/summary.json").read_text())
    assert r.info.run_id == summary["run_id"] == (project / "models/simple/run_id").read_text()
    assert r.info.run_name == "workspace/simple" and r.info.status == "FINISHED"
    assert r.data.tags["tier"] == "simple" and r.data.tags["dvc.stage"] == "train@simple"
    assert r.data.params["recipe.steps"] == str(TINY_STEPS["steps"])

    def steps(key):
        return [m.step for m in client.get_metric_history(r.info.run_id, key)]

    for key in ("train/loss", "train/accuracy", "train/lr", "valid/top1", "valid/macro_f1"):
        assert key in r.data.metrics, key
    every = TINY_STEPS["log_every"]
    assert steps("train/loss") == list(range(every, TINY_STEPS["steps"] + 1, every))
    valid = TINY_STEPS["valid_every"]
    assert steps("valid/top1") == list(range(valid, TINY_STEPS["steps"] + 1, valid))
    top1 = [m.value for m in client.get_metric_history(r.info.run_id, "valid/top1")]
    assert summary["best_top1"] == pytest.approx(max(top1))

    ckpts = {a.path: a for a in client.list_artifacts(r.info.run_id, "checkpoints")}
    assert set(ckpts) == {"checkpoints/best.pt", "checkpoints/last.pt"}
    assert all(a.file_size > 0 for a in ckpts.values())
    stored = server.log.parent / "artifacts"
    assert len(list(stored.rglob("checkpoints/best.pt"))) == 1, "not in the server's store"
    got = client.download_artifacts(r.info.run_id, "checkpoints/best.pt", str(tmp_path))
    downloaded = torch.load(got, weights_only=True)
    assert "model" in downloaded
    local = torch.load(project / "models/simple/best.pt", weights_only=True)["model"]
    assert downloaded["model"].keys() == local.keys()
    assert all(torch.equal(downloaded["model"][k], local[k]) for k in local)
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert [m.source_run_id for m in models] == [r.info.run_id]
