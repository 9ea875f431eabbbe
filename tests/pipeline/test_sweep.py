"""A queued two-point sweep: `dvc exp run --queue -S` + `dvc queue start -j 2`, checked in
DVC (`dvc exp show`) and in MLflow (one run per experiment, named and tagged after it)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient

from tests.conftest import clean_env, run

DVC = [sys.executable, "-m", "dvc"]
LRS = (0.001, 0.003)
TIMEOUT_S = 600
POLL_S = 3


def test_queued_sweep_logs_one_mlflow_run_per_experiment(project):
    # demo.recipe holds no lr (simple's demo budget inherits the course's), and DVC applies
    # -S through Hydra in struct mode: `++` adds the key or overrides it.
    sweep = "++tiers.simple.demo.recipe.lr=" + ",".join(str(lr) for lr in LRS)
    run([*DVC, "exp", "run", "--queue", "-S", sweep, "train@simple"], project)
    queued = _queue(project)
    assert len(queued) == 2 and set(queued.values()) == {"Queued"}, queued

    try:
        _start_workers(project)
        states = _wait_for_queue(project)
    finally:
        _kill_workers(project)
    assert set(states.values()) == {"Success"}, _failure(project, states)

    experiments = _experiments(project)
    assert sorted(experiments) == sorted(states)
    by_lr = {}
    for name, data in experiments.items():
        recipe = data["params"]["params.yaml"]["data"]["tiers"]["simple"]["demo"]["recipe"]
        summary = data["metrics"]["reports/train/simple/summary.json"]["data"]
        assert {"best_top1", "best_step", "steps", "run_id"} <= set(summary), summary
        assert summary["steps"] == recipe["steps"] and 0 <= summary["best_top1"] <= 1
        by_lr[recipe["lr"]] = (name, summary)
    assert sorted(by_lr) == list(LRS), "each experiment ran one point of the sweep"

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    found = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    assert len(found) == 2, [r.info.run_name for r in found]  # nothing else, no duplicates
    assert {r.data.tags["tier"] for r in found} == {"simple"}
    for lr, (name, summary) in by_lr.items():
        (r,) = [r for r in found if r.data.tags["dvc.exp_name"] == name]
        assert r.info.run_name == f"{name}/simple" and r.info.status == "FINISHED"
        assert r.info.run_id == summary["run_id"], "summary.json names the experiment's run"
        assert r.data.tags["dvc.stage"] == "train@simple"
        assert float(r.data.params["recipe.lr"]) == lr
        assert str(project) in r.info.artifact_uri, "queued runs log to the main repository"
        for key in r.data.metrics:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{name}: duplicated steps in {key}"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert steps[-1] == summary["steps"]


def _start_workers(root) -> None:
    """`dvc queue start -j 2`. Its workers are daemons that keep its stdout and stderr open,
    so these go to a file: a pipe would wait for the workers to exit."""
    log = root.parent / "queue_start.log"
    with log.open("w") as out:
        done = subprocess.run(
            [*DVC, "queue", "start", "-j", "2"],
            cwd=root,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    assert done.returncode == 0, log.read_text()


def _kill_workers(root) -> None:
    """Kill the workers still running. A worker can outlive its queue: once, dvc-task's
    monitor asked a busy worker to shut down, and after its task it hung, deaf to `dvc queue
    stop --kill`."""
    for info in (root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        worker = json.loads(info.read_text())
        if worker["returncode"] is None:  # dvc-task records it when the worker exits
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker["pid"], signal.SIGKILL)


def _queue(root) -> dict:
    """`dvc queue status` as {experiment name: status}."""
    lines = run([*DVC, "queue", "status"], root).stdout.splitlines()
    states = {}
    for line in lines[1:] if lines and lines[0].startswith("Task") else []:
        if not line.strip():  # the table ends; the worker status follows
            break
        fields = line.split()
        states[fields[1]] = fields[-1]
    return states


def _wait_for_queue(root) -> dict:
    deadline = time.time() + TIMEOUT_S
    while True:
        states = _queue(root)
        if states and not {"Queued", "Running"} & set(states.values()):
            return states
        assert time.time() < deadline, _failure(root, states)
        time.sleep(POLL_S)


def _failure(root, states) -> str:
    logs = []
    for name, state in states.items():
        done = subprocess.run(
            [*DVC, "queue", "logs", name], cwd=root, capture_output=True, text=True, check=False
        )
        logs.append(f"--- {name} ({state}):\n{done.stdout[-3000:]}{done.stderr[-1000:]}")
    return f"queue did not succeed: {states}\n" + "\n".join(logs)


def _experiments(root) -> dict:
    """`dvc exp show --json` as {experiment name: its data}."""
    shown = json.loads(run([*DVC, "exp", "show", "--json"], root).stdout)
    out = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                out[rev["name"]] = rev["data"]
    return out
