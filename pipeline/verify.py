"""Stage `verify@<tier>`: verification trials (cosine, AS-norm) and open-set identification on
the held-out speakers' embeddings; metrics into the tier's MLflow run."""

import sys
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.config import build
from spkid.evaluate.verification import VERIFY_FILES, VerifyConfig, verify
from spkid.train.run import RUN_ID_FILE


def main(tier: str) -> None:
    params = load_params()
    paths = params["paths"]
    out_dir = Path(paths["reports"]) / "verify" / tier
    metrics = verify(
        Path(paths["embed"]) / tier,
        out_dir,
        build(VerifyConfig, params["verify"], "verify"),
        seed=params["seed"],
    )
    run_id = (Path(paths["models"]) / tier / RUN_ID_FILE).read_text().strip()
    run = tracking.connect(repo_root(), run_id)
    run.log_metrics({f"verify/{k}": v for k, v in tracking.flatten(metrics).items()}, step=0)
    for name in VERIFY_FILES:
        run.log_artifact(out_dir / name, "verify")


if __name__ == "__main__":
    main(sys.argv[1])
