"""Stage `verify@<tier>`: verification trials (cosine, AS-norm) and open-set identification on
the held-out speakers' embeddings; metrics into the tier's MLflow run."""

import sys

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.verification import VERIFY_FILES, verify


def main(tier: str) -> None:
    params = load_params()
    paths = params.paths
    out_dir = paths.verify_reports(tier)
    metrics = verify(paths.embeddings(tier), out_dir, params.verify, seed=params.seed)
    run = tracking.connect(repo_root(), paths.run_id(tier).read_text().strip())
    run.log_metrics({f"verify/{k}": v for k, v in tracking.flatten(metrics).items()}, step=0)
    for name in VERIFY_FILES:
        run.log_artifact(out_dir / name, "verify")


if __name__ == "__main__":
    main(sys.argv[1])
