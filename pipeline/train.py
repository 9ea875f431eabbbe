"""Stage `train@<tier>`: train one tier, logging to MLflow; resumes after a kill (the same
training only: changed params, data, split or training code start afresh, in a new MLflow
run). A tracking store that is away does not stop the training (spkid.tracking.TrainingRun);
still away at the end, the stage fails with everything saved, and runs again without training.

With ``train.devices > 1`` the stage re-launches itself under torchrun (data-parallel).
"""

import contextlib
import sys

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.atomic import write_csv, write_json
from spkid.params import SUMMARY_FILE
from spkid.runtime import check_device
from spkid.train import distributed
from spkid.train.run import (
    METRICS_FILE,
    RUN_ID_FILE,
    prepare,
    train_tier,
    training_settings,
)


def main(tier: str) -> None:
    params = load_params()
    paths = params.paths
    config = params.tier(tier)
    runtime = params.train
    check_device(runtime.device)  # before any MLflow run is started or resumed
    out_dir = paths.tier_models(tier)
    store = paths.train_store
    settings = training_settings(config, runtime, params.seed, store, paths.split)
    if not distributed.under_torchrun():  # another training: no resume, a new run
        prepare(out_dir, settings)
    if runtime.devices > 1 and not distributed.under_torchrun():
        sys.exit(distributed.relaunch(runtime.devices, "pipeline.train", [tier]))
    rank = distributed.init(runtime.device)
    stage = f"train@{tier}"
    with (
        tracking.tier_run(
            repo_root(),
            params.mlflow.experiment,
            tier,
            stage,
            settings["digest"],
            out_dir / RUN_ID_FILE,
            out_dir / METRICS_FILE,
            onnx=params.mlflow.onnx,
        )
        if rank.rank == 0
        else contextlib.nullcontext(tracking.NullRun())
    ) as run:
        summary = train_tier(config, runtime, store, paths.split, out_dir, run, params.seed, rank)
    if rank.rank == 0:
        reports = paths.train_reports(tier)
        write_json(reports / SUMMARY_FILE, {**summary, "run_id": run.run_id})
        for part in ("train", "valid"):
            names, rows = run.history(part)
            write_csv(reports / f"{part}_curve.csv", ["step", *names], rows)


if __name__ == "__main__":
    main(sys.argv[1])
