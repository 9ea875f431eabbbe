"""`dvc repro train@simple` against a real `mlflow server` (MLFLOW_TRACKING_URI=http://...):
the run, its metrics and its checkpoints are all reachable through the server, and a server
that goes away does not stop the training nor lose what it logs."""

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
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_STEPS, clean_env, run

DVC = [sys.executable, "-m", "dvc"]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An `mlflow` server subprocess (its own process group), started but maybe not ready."""

    def __init__(self, args: list, cwd, log: Path, port: int | None = None):
        self.args, self.cwd = args, cwd
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(log, "a") as out:
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

    def restart(self) -> "Server":
        """The same server again, on the same port and store."""
        return Server(self.args, self.cwd, self.log, self.port)

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
    request.addfinalizer(lambda: srv.stop())
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


OUTAGE_STEPS = 240
DOWN_AT_STEP, UP_AT_STEP = 60, 180
TRAIN_TIMEOUT_S = 600


def set_recipe(project, **recipe) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tiers"]["simple"]["demo"]["recipe"].update(recipe)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def logged(project) -> list:
    """The training's metric log (models/simple/metrics.jsonl) as lines so far."""
    path = project / "models/simple/metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait_for_step(project, step: int, proc) -> float:
    """Wait until the metric log reaches ``step``; return the time (ms)."""
    deadline = time.time() + TRAIN_TIMEOUT_S
    while time.time() < deadline:
        assert proc.poll() is None, "the training ended early"
        if any(line["step"] >= step for line in logged(project)):
            return time.time() * 1000
        time.sleep(0.2)
    pytest.fail(f"no step {step} in {TRAIN_TIMEOUT_S}s")


def steps_per_s(lines, start_ms: float, end_ms: float) -> float:
    """Mean training speed logged between two times (train/segments_per_s over the batch:
    the loop's own clock, validation excluded)."""
    rates = [
        line["metrics"]["train/segments_per_s"]
        for line in lines
        if start_ms <= line["time"] <= end_ms and "train/segments_per_s" in line["metrics"]
    ]
    if not rates:  # a fast machine can finish before the window (e.g. before the restart)
        return float("nan")
    return sum(rates) / len(rates) / TINY_STEPS["batch"]


def test_training_goes_on_through_a_server_outage(project, server, tmp_path, request, capsys):
    set_recipe(project, steps=OUTAGE_STEPS, checkpoint_every=12, valid_every=60)
    run([*DVC, "repro", "split"], project)
    uri = server.wait_ready()
    out = tmp_path / "train.log"
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [*DVC, "repro", "train@simple"],
            cwd=project,
            env={**clean_env(), "MLFLOW_TRACKING_URI": uri},
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    request.addfinalizer(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
    started = wait_for_step(project, 4, proc)
    down = wait_for_step(project, DOWN_AT_STEP, proc)
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    up = wait_for_step(project, UP_AT_STEP, proc)
    last = torch.load(project / "models/simple/last.pt", weights_only=True)["state"]["step"]
    assert last >= UP_AT_STEP - 12, "checkpoints must keep being written while the server is away"
    back = server.restart()
    request.addfinalizer(back.stop)
    back.wait_ready()
    assert proc.wait(TRAIN_TIMEOUT_S) == 0, out.read_text()[-3000:]
    log = out.read_text()
    assert f"tracking store {uri} unreachable" in log and "reached again" in log

    client = MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("spkid").experiment_id])
    assert r.info.status == "FINISHED"
    assert r.data.params["recipe.steps"] == str(OUTAGE_STEPS)
    for key, every in (("train/loss", 4), ("train/lr", 4), ("valid/top1", 60)):
        steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
        assert sorted(steps) == list(range(every, OUTAGE_STEPS + 1, every)), key
    ckpts = {a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")}
    assert ckpts == {"checkpoints/best.pt", "checkpoints/last.pt"}

    lines = logged(project)
    speeds = {
        "up": steps_per_s(lines, started, down),
        "down": steps_per_s(lines, down, up),
        "up_again": steps_per_s(lines, up, float("inf")),
    }
    with capsys.disabled():
        print(f"\ntraining steps/s with the server up, down, up again: {speeds}")
    assert speeds["down"] > 0.3 * speeds["up"], speeds  # not stalled (2 shared CPU cores)


def test_a_server_down_throughout_fails_after_saving_then_the_next_run_finishes(
    project, server, tmp_path, request
):
    run([*DVC, "repro", "split"], project)
    uri = server.wait_ready()
    server.stop()
    env = {**clean_env(), "MLFLOW_TRACKING_URI": uri}
    failed = subprocess.run(
        [*DVC, "repro", "train@simple"],
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    assert f"the tracking store {uri} is unreachable" in failed.stdout + failed.stderr
    last = project / "models/simple/last.pt"
    trained = last.read_bytes()
    assert torch.load(last, weights_only=True)["state"]["step"] == TINY_STEPS["steps"]
    assert (project / "models/simple/best.pt").exists()

    back = server.restart()
    request.addfinalizer(back.stop)
    back.wait_ready()
    run([*DVC, "repro", "train@simple"], project, env={"MLFLOW_TRACKING_URI": uri})
    assert last.read_bytes() == trained, "the finished training must not train again"
    client = MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("spkid").experiment_id])
    assert r.info.status == "FINISHED"
    assert r.info.run_id == (project / "models/simple/run_id").read_text()
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
    every = TINY_STEPS["log_every"]
    assert steps == list(range(every, TINY_STEPS["steps"] + 1, every))
    ckpts = {a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")}
    assert ckpts == {"checkpoints/best.pt", "checkpoints/last.pt"}
    assert (
        json.loads((project / "reports/train/simple/summary.json").read_text())["steps"]
        == (TINY_STEPS["steps"])
    )
