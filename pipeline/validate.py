"""Stage `validate@<tier>`: the kept checkpoint (`best.pt`, see `recipe.select`) on the valid
split at full length."""

import sys
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.report import VALIDATE_FILES, validate
from spkid.train.run import RUN_ID_FILE


def main(tier: str) -> None:
    params = load_params()
    paths, block = params["paths"], params["evaluate"]
    model_dir = Path(paths["models"]) / tier
    out_dir = Path(paths["reports"]) / "validate" / tier
    metrics = validate(
        [model_dir / "best.pt"],
        paths["features"] + "/train",
        paths["split"],
        out_dir,
        device=params["train"]["device"],
        precision=params["train"]["precision"],
        max_frames=block["max_frames"],
    )
    run = tracking.connect(repo_root(), (model_dir / RUN_ID_FILE).read_text().strip())
    run.log_metrics({f"validate/{k}": v for k, v in metrics.items()}, step=0)
    for name in VALIDATE_FILES:
        run.log_artifact(out_dir / name, "validate")


if __name__ == "__main__":
    main(sys.argv[1])
