"""Two CPU ranks (gloo) through the same DVC stage: lockstep, equal weights, one MLflow run."""

import json
import sys

import mlflow
import yaml

from tests.conftest import TINY_STEPS, run


def test_two_gloo_ranks_train_in_lockstep(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(devices=2, device="cpu", threads=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "repro", "train@boss"], project)

    summary = json.loads((project / "reports/train/boss/summary.json").read_text())
    ranks = summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["steps"] == ranks[1]["steps"] == TINY_STEPS["steps"]
    assert ranks[0]["parameters"] == ranks[1]["parameters"], (
        "DDP must keep the ranks' weights equal"
    )
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["spkid"], output_format="list")
    assert len(found) == 1
    assert found[0].data.params["world"] == "2"
    seg = mlflow.MlflowClient().get_metric_history(found[0].info.run_id, "train/loss")
    assert [m.step for m in seg] == list(range(4, TINY_STEPS["steps"] + 1, 4))
