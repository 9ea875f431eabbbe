"""Stage `ensemble`: the averaged log-probabilities of several tiers' kept checkpoints (`best.pt`),
validated and predicted like one more tier (reports/{validate,predict}/ensemble); its MLflow
run's id in reports/validate/ensemble/run_id, for verify_ensemble."""

import json

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.atomic import write_text
from spkid.data.store import META_FILE
from spkid.evaluate.report import VALIDATE_FILES, predict, validate
from spkid.params import ENSEMBLE


def main() -> None:
    params = load_params()
    paths, block = params.paths, params.evaluate
    checkpoints = [paths.best(m) for m in params.ensemble.members]
    out_dir, out_file = paths.validate_reports(ENSEMBLE), paths.submission(ENSEMBLE)
    device = params.train.device
    metrics = validate(
        checkpoints,
        paths.train_store,
        paths.split,
        out_dir,
        device,
        block.max_frames,
        precision=params.train.precision,
    )
    counts = predict(
        checkpoints,
        paths.test_store,
        out_file,
        device,
        block.max_frames,
        crops=block.test_crops,
        segment=block.crop_segment,
        metrics_file=out_file.with_name("metrics.json"),
        precision=params.train.precision,
    )
    files = [out_dir / n for n in VALIDATE_FILES]
    run_id = tracking.log_stage_run(
        repo_root(),
        params.mlflow.experiment,
        ENSEMBLE,
        {
            **{f"validate/{k}": v for k, v in metrics.items()},
            **{f"predict/{k}": v for k, v in counts.items()},
        },
        [*files, out_file],
        checkpoints,
        json.loads((paths.train_store / META_FILE).read_text()),
    )
    write_text(paths.run_id(ENSEMBLE), run_id + "\n")


if __name__ == "__main__":
    main()
