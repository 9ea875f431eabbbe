"""Trainings of one sweep logging the same dataset input at once (tracking.TrainingRun)."""

import multiprocessing

from mlflow.tracking import MlflowClient

from spkid.data.store import open_store
from spkid.tracking import tier_run, tracking_uri
from tests.conftest import make_store

RUNS, ROUNDS = 4, 4  # each round a new split: a new dataset for the processes to race on


def _train_and_log_data(root, store_dir, tier, barrier) -> None:
    """One training's tracking: open its run, then log ROUNDS splits of the store as its
    inputs, each the moment every other process is ready too (a child process)."""
    folder = root / tier
    folder.mkdir()
    with tier_run(
        root,
        "race",
        tier,
        f"train@{tier}",
        "digest",
        folder / "run_id",
        folder / "metrics.jsonl",
        system_metrics=False,
        onnx=False,
    ) as run:
        run.log_params({"tier": tier})
        run.finish()  # the run is open before the race starts
        for r in range(ROUNDS):
            barrier.wait(timeout=120)
            run.log_data(store_dir, {"train": list(range(r, 30)), "valid": list(range(30, 40 - r))})


def test_concurrent_trainings_each_log_the_shared_dataset_once(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store_dir = make_store(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RUNS)
    procs = [
        context.Process(target=_train_and_log_data, args=(tmp_path, store_dir, f"t{i}", barrier))
        for i in range(RUNS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * RUNS  # a lost race raises in its process

    client = MlflowClient(tracking_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == RUNS
    digest = open_store(store_dir).meta["digest"]
    digests = set()
    for run in runs:
        inputs = run.inputs.dataset_inputs
        contexts = sorted(t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context")
        assert contexts == ["training"] * ROUNDS + ["validation"] * ROUNDS, run.info.run_name
        assert all({t.key: t.value for t in i.tags}["data.digest"] == digest for i in inputs)
        digests |= {i.dataset.digest for i in inputs}
    assert len(digests) == 2 * ROUNDS  # every run points at the same datasets
