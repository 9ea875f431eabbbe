"""Stage `verify@<tier>` (and `verify_ensemble`): verification trials (cosine, AS-norm) and
open-set identification on the held-out speakers' embeddings (the ensemble's: its members'
embeddings fused, their cosines averaged); metrics into the tier's (the ensemble's) MLflow run."""

import sys

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.verification import VERIFY_FILES, verify
from spkid.params import ENSEMBLE


def main(tier: str) -> None:
    params = load_params()
    paths = params.paths
    members = params.ensemble.members if tier == ENSEMBLE else (tier,)
    out_dir = paths.verify_reports(tier)
    folders = [paths.embeddings(m) for m in members]
    metrics = verify(folders, out_dir, params.verify, seed=params.seed)
    run = tracking.connect(repo_root(), paths.run_id(tier).read_text().strip())
    run.log_metrics({f"verify/{k}": v for k, v in tracking.flatten(metrics).items()}, step=0)
    for name in VERIFY_FILES:
        run.log_artifact(out_dir / name, "verify")


if __name__ == "__main__":
    main(sys.argv[1])
