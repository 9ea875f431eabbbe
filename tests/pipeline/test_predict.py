"""The predict stage under `features.on_error: skip`: a rejected test utterance still gets
its submission row, with a warning naming the file and a count in DVC's and MLflow's
metrics."""

import csv
import json
import sys

import numpy as np
import torch

from spkid import tracking
from spkid.data.features import build_features
from spkid.data.frontend import FrontEnd
from spkid.data.hw4 import write_hw4
from spkid.data.sources import SourceConfig
from spkid.data.store import open_store
from spkid.train.run import METRICS_FILE, RUN_ID_FILE
from tests.conftest import run
from tests.evaluate.test_report import save_model


def _stores_with_a_rejected_test_file(project):
    """Features of an HW4 folder whose second of three test tensors holds NaN, built under
    skip into the project's stores; returns the rejected file."""
    rng = np.random.default_rng(0)
    pool = [(s, rng.standard_normal((20, 40)).astype(np.float32)) for s in ["a", "b", "b"]]
    test = [rng.standard_normal((20, 40)).astype(np.float32) for _ in range(3)]
    root = project / "Dataset"
    write_hw4(root, pool, test, {"a": 0, "b": 1})
    entries = json.loads((root / "testdata.json").read_text())["utterances"]
    bad = root / entries[1]["feature_path"]
    torch.save(torch.full((20, 40), float("nan")), bad)
    build_features(
        SourceConfig(name="hw4", dir=str(root)),
        FrontEnd(),
        "skip",
        1,
        project / "data/features/train",
        project / "data/features/test",
        project / "work",
    )
    return bad, [e["feature_path"] for e in entries]


def test_predict_fills_a_rejected_test_row_and_counts_it(project):
    bad, uids = _stores_with_a_rejected_test_file(project)
    train = open_store(project / "data/features/train")
    model_dir = project / "models/simple"
    model_dir.mkdir(parents=True)
    save_model(model_dir / "best.pt", train, 0)
    logs = (model_dir / RUN_ID_FILE, model_dir / METRICS_FILE)
    with tracking.tier_run(project, "spkid", "simple", "train", "d", *logs, False) as tier:
        pass  # the run opens (and names itself in RUN_ID_FILE) as the block ends
    run_id = tier.run_id

    done = run([sys.executable, "-m", "pipeline.predict", "simple"], project)
    assert f"warning: {bad}: rejected by the features stage (tensor holds NaN values)" in (
        done.stderr
    )
    assert "says b, the training pool's most frequent speaker" in done.stderr
    out = project / "reports/predict/simple"
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert sorted(r[0] for r in rows) == sorted(uids)
    assert dict(rows)[uids[1]] == "b"
    assert json.loads((out / "metrics.json").read_text()) == {"rows": 3, "rejected": 1}
    metrics = tracking.connect(project, run_id).client.get_run(run_id).data.metrics
    assert (metrics["predict/rows"], metrics["predict/rejected"]) == (3, 1)
