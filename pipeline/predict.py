"""Stage `predict@<tier>`: the test set to a Kaggle submission (Id,Category)."""

import sys

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.report import predict


def main(tier: str) -> None:
    params = load_params()
    paths, block = params.paths, params.evaluate
    out_file = paths.submission(tier)
    predict(
        [paths.best(tier)],
        paths.test_store,
        out_file,
        device=params.train.device,
        max_frames=block.max_frames,
        crops=block.test_crops,
        segment=block.crop_segment,
    )
    run = tracking.connect(repo_root(), paths.run_id(tier).read_text().strip())
    run.log_artifact(out_file, "predict")


if __name__ == "__main__":
    main(sys.argv[1])
