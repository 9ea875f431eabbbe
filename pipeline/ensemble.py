"""Stage `ensemble`: the averaged log-probabilities of several tiers' kept checkpoints (`best.pt`),
validated and predicted like one more tier (reports/{validate,predict}/ensemble)."""

import json
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.config import check
from spkid.data.store import META_FILE
from spkid.evaluate.report import VALIDATE_FILES, predict, validate


def main() -> None:
    params = load_params()
    paths, block = params["paths"], params["evaluate"]
    members = params["ensemble"]["members"]
    check(
        isinstance(members, list) and len(members) >= 2 and set(members) <= set(params["tiers"]),
        "ensemble.members",
        f"needs two or more of the tiers {sorted(params['tiers'])}, got {members!r}",
    )
    checkpoints = [Path(paths["models"]) / m / "best.pt" for m in members]
    reports = Path(paths["reports"])
    out_dir, out_file = (
        reports / "validate" / "ensemble",
        reports / "predict" / "ensemble" / "submission.csv",
    )
    device = params["train"]["device"]
    metrics = validate(
        checkpoints,
        paths["features"] + "/train",
        paths["split"],
        out_dir,
        device,
        block["max_frames"],
    )
    predict(
        checkpoints,
        paths["features"] + "/test",
        out_file,
        device,
        block["max_frames"],
        crops=block["test_crops"],
        segment=block["crop_segment"],
    )
    files = [out_dir / n for n in VALIDATE_FILES]
    tracking.log_stage_run(
        repo_root(),
        params["mlflow"]["experiment"],
        "ensemble",
        {f"validate/{k}": v for k, v in metrics.items()},
        [*files, out_file],
        checkpoints,
        json.loads(Path(paths["features"], "train", META_FILE).read_text()),
    )


if __name__ == "__main__":
    main()
