import csv
import json

import numpy as np
import pytest
import torch

from spkid import checkpoint
from spkid.data.store import open_store
from spkid.evaluate.report import predict, validate
from spkid.models import ModelConfig, SpeakerNet
from spkid.runtime import DeviceData, predict_logits
from spkid.train.config import Recipe, TierConfig
from tests.conftest import make_store

MODEL = ModelConfig(
    encoder="transformer", d_model=16, layers=1, heads=2, ffn=32, pooling="mean", head="mlp"
)
RECIPE = Recipe(segment=32, batch=4, lr=1e-3, weight_decay=0.0, warmup=0, steps=1, valid_every=1)


def save_model(path, store, seed):
    torch.manual_seed(seed)
    model = SpeakerNet(MODEL, store.n_mels, len(store.speaker2id)).eval()
    checkpoint.save(path, model, TierConfig(MODEL, RECIPE), store.n_mels, store.speaker2id)
    return model


def test_an_ensemble_scores_the_mean_log_probability(tiny_store, tmp_path):
    store = open_store(tiny_store)
    models = [save_model(tmp_path / f"m{k}.pt", store, k) for k in range(2)]
    valid = list(range(0, len(store), 3))
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "valid": valid}))
    data = DeviceData(store, valid, torch.device("cpu"))
    mean = sum(predict_logits(m, data, 4096) for m in models) / 2
    expected = mean.log_softmax(-1)
    paths = [tmp_path / "m0.pt", tmp_path / "m1.pt"]
    metrics = validate(paths, tiny_store, tmp_path / "split.json", tmp_path / "v", "cpu")
    loss = torch.nn.functional.nll_loss(expected, data.labels).item()
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["top1"] == pytest.approx(
        (expected.argmax(1) == data.labels).float().mean().item()
    )
    single = validate(paths[:1], tiny_store, tmp_path / "split.json", tmp_path / "s", "cpu")
    assert single["loss"] != pytest.approx(metrics["loss"])
    assert predict(paths, tiny_store, tmp_path / "sub.csv", "cpu") == {
        "rows": len(store),
        "rejected": 0,
    }
    with open(tmp_path / "sub.csv") as f:
        rows = list(csv.reader(f))[1:]
    all_data = DeviceData(store, np.arange(len(store)), torch.device("cpu"))
    names = {i: s for s, i in store.speaker2id.items()}
    full = sum(predict_logits(m, all_data, 4096) for m in models)
    assert [r[1] for r in rows] == [names[int(k)] for k in full.argmax(1)]


def test_an_ensemble_of_other_speakers_is_refused_by_name(tiny_store, tmp_path):
    store = open_store(tiny_store)
    other = open_store(make_store(tmp_path / "other", n_speakers=3))
    save_model(tmp_path / "a.pt", store, 0)
    save_model(tmp_path / "b.pt", other, 1)
    with pytest.raises(ValueError, match=r"b\.pt: its speakers differ"):
        predict([tmp_path / "a.pt", tmp_path / "b.pt"], tiny_store, tmp_path / "sub.csv", "cpu")
    assert not (tmp_path / "sub.csv").exists()


def test_validate_and_predict_score_at_train_precision(tiny_store, tmp_path, monkeypatch):
    store = open_store(tiny_store)
    save_model(tmp_path / "m.pt", store, 0)
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "valid": [0, 1, 2]}))
    seen = []

    def scoring(model, data, max_frames, precision, crops, segment):
        seen.append(precision)
        return predict_logits(model, data, max_frames, precision, crops, segment)

    monkeypatch.setattr("spkid.evaluate.report.predict_logits", scoring)
    validate(
        [tmp_path / "m.pt"],
        tiny_store,
        tmp_path / "split.json",
        tmp_path / "v",
        "cpu",
        precision="fp16",
    )
    predict([tmp_path / "m.pt"], tiny_store, tmp_path / "sub.csv", "cpu", precision="bf16")
    assert seen == ["fp16", "bf16"]  # passed on; resolve_precision makes them fp32 on CPUs
