"""Stage `compare`: every tier side by side, verification figures included (reports/tiers.md,
reports/tiers.png); registers the champion."""

import json

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.compare import (
    paired,
    read_correct,
    read_verification,
    tier_rows,
    write_comparison,
)
from spkid.params import ENSEMBLE, SUMMARY_FILE


def main() -> None:
    params = load_params()
    paths = params.paths
    tiers = list(params.tiers)
    train = {t: json.loads((paths.train_reports(t) / SUMMARY_FILE).read_text()) for t in tiers}
    members = params.ensemble.members
    train[ENSEMBLE] = {
        k: sum(train[m][k] for m in members) for k in ("parameters", "train_seconds", "steps")
    }
    tiers.append(ENSEMBLE)  # its cost: the sum of its members'
    valid = {t: json.loads((paths.validate_reports(t) / "metrics.json").read_text()) for t in tiers}
    sources = {t: paths.validate_reports(t) / "predictions.csv" for t in tiers}
    right = paired({t: read_correct(f) for t, f in sources.items()}, tiers, sources)
    verified = {t: read_verification(paths.verify_reports(t) / "metrics.json") for t in tiers}
    rows = tier_rows(tiers, train, valid, right, verified, params.compare.course_kaggle)
    title = f"spkid tiers: source {params.source.name}, profile {params.profile}"
    write_comparison(rows, title, len(right[tiers[0]]), *paths.comparison)
    tracking.log_comparison(repo_root(), params.mlflow.experiment, rows, list(paths.comparison))
    tracking.register_champion(
        repo_root(),
        params.mlflow.experiment,
        params.compare.registered_model,
        rows,
        {t: train[t].get("run_id") for t in tiers},
    )


if __name__ == "__main__":
    main()
