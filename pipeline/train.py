"""Stage `train@<tier>`: train one tier, logging to MLflow; resumes after a kill (the same
training only: changed params, data, split or training code start afresh, in a new MLflow run).

With ``train.devices > 1`` the stage re-launches itself under torchrun (data-parallel).
"""

import contextlib
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.atomic import write_csv, write_json, write_text
from spkid.params import SUMMARY_FILE
from spkid.train import distributed
from spkid.train.run import (
    RUN_ID_FILE,
    TRAINING_CODE,
    code_digest,
    discard_if_changed,
    read_run_id,
    train_tier,
)


def main(tier: str) -> None:
    params = load_params()
    paths = params.paths
    config = params.tier(tier)
    runtime = params.train
    out_dir = paths.tier_models(tier)
    store = paths.train_store
    digest = json.loads(Path(store, "meta.json").read_text())["digest"]
    if not distributed.under_torchrun():  # changed params, data or code: no resume, a new run
        code = code_digest(TRAINING_CODE)
        split = hashlib.sha256(Path(paths.split).read_bytes()).hexdigest()  # the classes too
        settings = {
            "tier": asdict(config),
            "seed": params.seed,
            "digest": digest,
            "split": split,
            "code": code,
        }
        discard_if_changed(out_dir, settings)
    if runtime.devices > 1 and not distributed.under_torchrun():
        sys.exit(distributed.relaunch(runtime.devices, "pipeline.train", [tier]))
    rank = distributed.init(runtime.device)
    stage = f"train@{tier}"
    with (
        tracking.tier_run(
            repo_root(), params.mlflow.experiment, tier, stage, digest, read_run_id(out_dir)
        )
        if rank.rank == 0
        else contextlib.nullcontext(tracking.NullRun())
    ) as run:
        if rank.rank == 0:
            write_text(out_dir / RUN_ID_FILE, run.run_id)
        summary = train_tier(config, runtime, store, paths.split, out_dir, run, params.seed, rank)
    if rank.rank == 0:
        reports = paths.train_reports(tier)
        write_json(reports / SUMMARY_FILE, {**summary, "run_id": run.run_id})
        for part in ("train", "valid"):
            names, rows = run.history(part)
            write_csv(reports / f"{part}_curve.csv", ["step", *names], rows)


if __name__ == "__main__":
    main(sys.argv[1])
