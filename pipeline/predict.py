"""Stage `predict@<tier>`: the test set to a Kaggle submission (Id,Category)."""

import sys
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.report import predict
from spkid.train.run import RUN_ID_FILE


def main(tier: str) -> None:
    params = load_params()
    paths, block = params["paths"], params["evaluate"]
    model_dir = Path(paths["models"]) / tier
    out_file = Path(paths["reports"]) / "predict" / tier / "submission.csv"
    predict(
        [model_dir / "best.pt"],
        paths["features"] + "/test",
        out_file,
        device=params["train"]["device"],
        precision=params["train"]["precision"],
        max_frames=block["max_frames"],
        crops=block["test_crops"],
        segment=block["crop_segment"],
    )
    run = tracking.connect(repo_root(), (model_dir / RUN_ID_FILE).read_text().strip())
    run.log_artifact(out_file, "predict")


if __name__ == "__main__":
    main(sys.argv[1])
