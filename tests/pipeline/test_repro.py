"""End to end: `dvc repro` of the whole pipeline on a tiny demo corpus, checked in MLflow."""

import csv
import json
import re
import sys

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_STEPS, run

TIERS = ["simple", "medium", "strong", "boss", "beyond", "tdnn"]


def runs(root):
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return MlflowClient(), mlflow.search_runs(experiment_names=["spkid"], output_format="list")


def test_repro_writes_every_output(reproduced):
    root = reproduced
    meta = json.loads((root / "data/features/train/meta.json").read_text())
    assert meta["counts"]["speakers"] == 4 and meta["counts"]["utterances"] == 24
    assert meta["frontend"]["n_mels"] == 40 and meta["rejected"] == []
    for tier in TIERS:
        summary = json.loads((root / f"reports/train/{tier}/summary.json").read_text())
        assert summary["steps"] == TINY_STEPS["steps"]
        metrics = json.loads((root / f"reports/validate/{tier}/metrics.json").read_text())
        assert set(metrics) >= {"top1", "top5", "macro_f1", "loss"}
        with open(root / f"reports/predict/{tier}/submission.csv") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["Id", "Category"] and len(rows) == 1 + 8
        counts = json.loads((root / f"reports/predict/{tier}/metrics.json").read_text())
        assert counts == {"rows": 8, "rejected": 0}
        assert {r[1] for r in rows[1:]} <= {f"spk{i:03d}" for i in range(4)} | {"spk000"}
        assert (root / f"reports/validate/{tier}/worst_speakers.png").stat().st_size > 1000
    split = json.loads((root / "reports/split.json").read_text())
    assert (split["speakers"], split["heldout_speakers"], split["heldout"]) == (4, 2, 12)
    for tier in TIERS:
        embed = json.loads((root / f"data/embed/{tier}/meta.json").read_text())
        assert (embed["valid"], embed["heldout"], embed["test"]) == (split["valid"], 12, 8)
        verify = json.loads((root / f"reports/verify/{tier}/metrics.json").read_text())
        assert verify["trials"] == {"target": 30, "nontarget": 36, "speakers": 2, "utterances": 12}
        assert set(verify["cosine"]) == {"eer", "mindcf_p01", "mindcf_p05"}
        assert verify["openset"]["genuine_probes"] == 3 and "dir_fa01" in verify["openset"]
        assert (root / f"reports/verify/{tier}/det.png").stat().st_size > 1000
    fused = json.loads((root / "reports/verify/ensemble/metrics.json").read_text())
    assert fused["trials"] == verify["trials"] and set(fused["asnorm"]) >= {"eer", "mindcf_p05"}
    ensemble = json.loads((root / "reports/validate/ensemble/metrics.json").read_text())
    assert set(ensemble) >= {"top1", "loss"}
    with open(root / "reports/predict/ensemble/submission.csv") as f:
        assert len(list(csv.reader(f))) == 1 + 8
    table = (root / "reports/tiers.md").read_text()
    assert all(f"| {t} |" in table for t in [*TIERS, "ensemble"])
    assert len(re.findall(r"\| \d\.\d{3}-\d\.\d{3} \|", table)) == len(TIERS) + 1  # intervals
    assert all(f" vs {t} | " in table for t in TIERS)  # McNemar against the previous row
    eer_cells = r"\| \d+\.\d{2} \| \d\.\d{3} \| \d\.\d{3} \|"  # EER %, minDCF 0.01, 0.05
    assert len(re.findall(eer_cells, table)) == len(TIERS) + 1
    status = run([sys.executable, "-m", "dvc", "status"], root).stdout
    assert "up to date" in status


def test_repro_honours_the_mlflow_contract(reproduced):
    client, found = runs(reproduced)
    by_tier = {r.data.tags["tier"]: r for r in found}
    assert sorted(by_tier) == sorted([*TIERS, "compare", "ensemble"])
    assert len(found) == len(TIERS) + 2  # one run per tier, no duplicates
    assert {"validate/top1", "predict/rows", "verify/asnorm.eer"} <= set(
        by_tier["ensemble"].data.metrics
    )
    compared = by_tier["compare"].data.metrics
    assert {"simple/top1_low", "simple/top1_high", "ensemble/mcnemar_p"} <= set(compared)
    assert {"simple/eer", "ensemble/eer", "ensemble/mindcf_p01"} <= set(compared)
    assert "simple/mcnemar_p" not in compared  # the first row has no previous one
    assert {a.path for a in client.list_artifacts(by_tier["ensemble"].info.run_id)} >= {
        "submission.csv",
        "confusion.json",
    }
    for tier in TIERS:
        r = by_tier[tier]
        tags = r.data.tags
        assert tags["mlflow.runName"] == f"workspace/{tier}"
        assert tags["dvc.stage"] == f"train@{tier}" and tags["dvc.exp_name"] == "workspace"
        assert len(tags["data.digest"]) == 64 and len(tags["mlflow.source.git.commit"]) == 40
        assert "dvc.baseline_rev" in tags
        params = r.data.params
        assert params["recipe.steps"] == str(TINY_STEPS["steps"]) and "model.encoder" in params
        for key in (
            "train/loss",
            "train/accuracy",
            "train/lr",
            "train/segments_per_s",
            "valid/top1",
            "valid/top5",
            "valid/macro_f1",
            "validate/top1",
            "predict/rows",
            "predict/rejected",
            "verify/cosine.eer",
            "verify/asnorm.mindcf_p01",
            "verify/openset.dir_fa01",
        ):
            assert key in r.data.metrics, key
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] == TINY_STEPS["steps"]
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"checkpoints", "validate", "predict", "verify"} <= artifacts
        assert "onnx" not in artifacts  # tiny_params: mlflow.onnx false (the extra installed)
        ckpts = {a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")}
        assert ckpts == {"checkpoints/best.pt", "checkpoints/last.pt"}
        assert r.info.artifact_uri.startswith("file:///") and str(reproduced) in r.info.artifact_uri
    models = mlflow.search_logged_models(
        experiment_ids=[found[0].info.experiment_id], output_format="list"
    )
    logged = {by_tier[t].info.run_id for t in [*TIERS, "ensemble"]}
    assert {m.source_run_id for m in models} == logged
    champion = client.get_model_version_by_alias("spkid", "champion")
    assert champion.tags["dvc.exp_name"] == "workspace" and champion.tags["tier"] in by_tier


def test_logged_model_loads_and_scores(reproduced):
    import numpy as np
    import pandas as pd

    _client, found = runs(reproduced)
    boss = next(r for r in found if r.data.tags["tier"] == "boss")
    models = mlflow.search_logged_models(
        experiment_ids=[boss.info.experiment_id], output_format="list"
    )
    uri = next(m.model_uri for m in models if m.source_run_id == boss.info.run_id)
    model = mlflow.pyfunc.load_model(uri)
    feats = [np.random.default_rng(0).normal(size=(n, 40)).tolist() for n in (60, 30)]
    out = model.predict(pd.DataFrame({"features": feats}), params={"top_k": 2})
    assert len(out) == 2 and all(len(k) == 2 for k in out.top_k_speakers)
    assert len(set().union(*out.top_k_speakers)) == 2  # the trained speakers: 2 of 4 are held out


def test_params_keys_are_all_read(reproduced):
    """Every params.yaml block is named by a dvc.yaml stage or read by pipeline/."""
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    code = "".join(p.read_text() for p in (reproduced / "pipeline").glob("*.py"))
    dvc = (reproduced / "dvc.yaml").read_text()
    for key in params:
        assert f"params.{key}" in code or f"- {key}" in dvc, key
