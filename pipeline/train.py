"""Stage `train@<tier>`: train one tier, logging to MLflow; resumes after a kill."""

import json
import sys
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.atomic import write_csv, write_json, write_text
from spkid.config import build
from spkid.train.config import Runtime, resolve_tier
from spkid.train.run import RUN_ID_FILE, read_run_id, train_tier


def main(tier: str) -> None:
    params = load_params()
    paths = params["paths"]
    config = resolve_tier(params["tiers"], tier, params["profile"])
    runtime = build(Runtime, params["train"], "train")
    out_dir = Path(paths["models"]) / tier
    store = paths["features"] + "/train"
    digest = json.loads(Path(store, "meta.json").read_text())["digest"]
    run_id = read_run_id(out_dir)
    with tracking.tier_run(
        repo_root(), params["mlflow"]["experiment"], tier, f"train@{tier}", digest, run_id
    ) as run:
        write_text(out_dir / RUN_ID_FILE, run.run_id)
        summary = train_tier(config, runtime, store, paths["split"], out_dir, run, params["seed"])
    reports = Path(paths["reports"]) / "train" / tier
    write_json(reports / "summary.json", {**summary, "run_id": run.run_id})
    for part in ("train", "valid"):
        names, rows = run.history(part)
        write_csv(reports / f"{part}_curve.csv", ["step", *names], rows)


if __name__ == "__main__":
    main(sys.argv[1])
