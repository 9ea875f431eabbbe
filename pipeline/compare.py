"""Stage `compare`: every tier side by side (reports/tiers.md, reports/tiers.png)."""

import json
from pathlib import Path

from pipeline.params import load_params, repo_root
from spkid import tracking
from spkid.evaluate.compare import paired, read_correct, tier_rows, write_comparison


def main() -> None:
    params = load_params()
    reports = Path(params["paths"]["reports"])
    tiers = list(params["tiers"])
    train = {t: json.loads((reports / "train" / t / "summary.json").read_text()) for t in tiers}
    members = params["ensemble"]["members"]
    train["ensemble"] = {
        k: sum(train[m][k] for m in members) for k in ("parameters", "train_seconds", "steps")
    }
    tiers.append("ensemble")  # its cost: the sum of its members'
    valid = {t: json.loads((reports / "validate" / t / "metrics.json").read_text()) for t in tiers}
    sources = {t: reports / "validate" / t / "predictions.csv" for t in tiers}
    right = paired({t: read_correct(f) for t, f in sources.items()}, tiers, sources)
    rows = tier_rows(tiers, train, valid, right, params["compare"]["course_kaggle"])
    title = f"spkid tiers: source {params['source']['name']}, profile {params['profile']}"
    utterances = len(right[tiers[0]])
    write_comparison(rows, title, utterances, reports / "tiers.md", reports / "tiers.png")
    tracking.log_comparison(
        repo_root(),
        params["mlflow"]["experiment"],
        rows,
        [reports / "tiers.md", reports / "tiers.png"],
    )


if __name__ == "__main__":
    main()
