import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from spkid import tracking


def row(tier, top1, parameters):
    return {"tier": tier, "top1": top1, "parameters": parameters}


def champion(name):
    return MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION)


def test_the_best_tier_becomes_champion_and_only_a_better_one_moves_it(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    runs = {"simple": trained.run_id, "medium": trained.run_id, "boss": trained.run_id}
    name = "spkid_champion_test"
    monkeypatch.setenv("DVC_EXP_NAME", "first")
    first = [row("simple", 0.5, 100), row("medium", 0.7, 300), row("boss", 0.7, 200)]
    version = tracking.register_champion(trained.root, "spkid", name, first, runs)
    held = champion(name)
    assert held.version == version.version
    assert held.tags["tier"] == "boss"  # a tie on top-1: the fewer parameters
    assert held.tags["dvc.exp_name"] == "first"
    assert (
        held.tags["data.digest"] == MlflowClient().get_run(trained.run_id).data.tags["data.digest"]
    )
    monkeypatch.setenv("DVC_EXP_NAME", "worse")
    assert (
        tracking.register_champion(trained.root, "spkid", name, [row("simple", 0.6, 50)], runs)
        is None
    )
    assert champion(name).version == version.version
    monkeypatch.setenv("DVC_EXP_NAME", "better")
    better = tracking.register_champion(
        trained.root, "spkid", name, [row("medium", 0.8, 300)], runs
    )
    assert champion(name).version == better.version != version.version
    assert champion(name).tags["dvc.exp_name"] == "better"
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    path = min(trained.labels)
    assert model.predict(pd.DataFrame({"audio": [path]})).speaker[0] in set(trained.labels.values())
