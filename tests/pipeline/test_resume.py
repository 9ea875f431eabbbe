"""A training killed with SIGKILL restarts from its last checkpoint and continues its run;
changed params or a changed split train afresh in a new run; a missing GPU fails first."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import torch
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_STEPS, clean_env, run

STEPS = 240
KILL_AFTER_STEP = 48
TIMEOUT_S = 300


def test_sigkill_then_repro_finishes_the_same_run(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tiers"]["simple"]["demo"]["recipe"].update(
        steps=STEPS, checkpoint_every=12, valid_every=60
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "repro", "split"], project)

    env = clean_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@simple"],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = project / "models/simple/last.pt"
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        if last.exists() and _step(last) >= KILL_AFTER_STEP:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _step(last)
    assert KILL_AFTER_STEP <= killed_at < STEPS

    run([sys.executable, "-m", "dvc", "repro", "train@simple"], project)
    assert _step(last) == STEPS
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    assert len(found) == 1, "the resumed training must continue the same MLflow run"
    client = MlflowClient()
    for key in ("train/loss", "valid/top1"):
        steps = [m.step for m in client.get_metric_history(found[0].info.run_id, key)]
        assert len(steps) == len(set(steps)), f"duplicated steps in {key}"
        assert max(steps) == STEPS
    assert [m.step for m in client.get_metric_history(found[0].info.run_id, "train/loss")] == list(
        range(4, STEPS + 1, 4)
    )

    params["tiers"]["simple"]["demo"]["recipe"]["lr"] = 2e-3  # another training: no resume
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "repro", "train@simple"], project)
    found = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    assert len(found) == 2, "changed params must start a new MLflow run"
    new = next(r for r in found if r.data.params["recipe.lr"] == "0.002")
    steps = [m.step for m in client.get_metric_history(new.info.run_id, "train/loss")]
    assert steps == list(range(4, STEPS + 1, 4)), "it must train from step 0"


def test_a_split_change_trains_afresh_and_a_missing_gpu_fails_before_mlflow(project):
    run([sys.executable, "-m", "dvc", "repro", "train@simple"], project)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (first,) = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    params = yaml.safe_load((project / "params.yaml").read_text())

    params["train"]["device"] = f"cuda:{torch.cuda.device_count()}"  # a GPU this machine lacks
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.train", "simple"],
        check=False,
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "train.device" in done.stderr, done.stderr[-2000:]
    (same,) = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    assert same.info.run_id == first.info.run_id and same.info.status == "FINISHED"

    params["train"]["device"] = "auto"
    params["split"]["demo"]["valid_ratio"] = 0.5  # the same params otherwise: another training
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "repro", "train@simple"], project)
    found = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    assert len(found) == 2, "a changed split must start a new MLflow run"
    new = next(r for r in found if r.info.run_id != first.info.run_id)
    steps = [m.step for m in MlflowClient().get_metric_history(new.info.run_id, "train/loss")]
    every = TINY_STEPS["log_every"]
    assert steps == list(range(every, TINY_STEPS["steps"] + 1, every)), "it must train from 0"


def _step(path) -> int:
    for _ in range(20):
        try:
            return torch.load(path, weights_only=True)["state"]["step"]
        except (RuntimeError, EOFError, FileNotFoundError):
            time.sleep(0.05)
    raise AssertionError(f"cannot read {path}")
