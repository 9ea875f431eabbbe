import json

from mlflow.tracking import MlflowClient

from spkid.data.store import open_store


def test_the_training_run_records_its_training_and_validation_data(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    inputs = MlflowClient().get_run(trained.run_id).inputs.dataset_inputs
    split = json.loads((trained.root / "split.json").read_text())
    store = open_store(trained.root / "train")
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs
    }
    assert set(by_context) == {"training", "validation"}
    for context, part in (("training", "train"), ("validation", "valid")):
        dataset = by_context[context].dataset
        profile = json.loads(dataset.profile)
        assert dataset.name == f"demo/{context}"
        assert profile["utterances"] == len(split[part])
        assert profile["frames"] == int(store.lengths[split[part]].sum())
        assert json.loads(dataset.source)["uri"] == str((trained.root / "train").resolve())
        tags = {t.key: t.value for t in by_context[context].tags}
        assert tags["data.digest"] == store.meta["digest"]
    assert by_context["training"].dataset.digest != by_context["validation"].dataset.digest
