"""Stage `validate@<tier>`: the kept checkpoint (`best.pt`, see `recipe.select`) on the valid
split at full length."""

import sys

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.report import VALIDATE_FILES, validate


def main(tier: str) -> None:
    params = load_params()
    paths = params.paths
    out_dir = paths.validate_reports(tier)
    metrics = validate(
        [paths.best(tier)],
        paths.train_store,
        paths.split,
        out_dir,
        device=params.train.device,
        max_frames=params.evaluate.max_frames,
    )
    run = tracking.connect(repo_root(), paths.run_id(tier).read_text().strip())
    run.log_metrics({f"validate/{k}": v for k, v in metrics.items()}, step=0)
    for name in VALIDATE_FILES:
        run.log_artifact(out_dir / name, "validate")


if __name__ == "__main__":
    main(sys.argv[1])
