import json
from pathlib import Path

import pytest
import torch

from spkid.data.split import SplitConfig, split_utterances
from spkid.data.store import open_store
from spkid.evaluate.infer import predict_logits
from spkid.evaluate.report import validate
from spkid.models import ModelConfig
from spkid.train import checkpoint
from spkid.train.config import Recipe, Runtime, TierConfig
from spkid.train.data import DeviceData
from spkid.train.run import (
    RUN_ID_FILE,
    SETTINGS_FILE,
    TRAINING_CODE,
    code_digest,
    discard_if_changed,
    train_tier,
)
from tests.conftest import make_store


def leave_training(folder):
    folder.mkdir(exist_ok=True)
    for name in (checkpoint.LAST, checkpoint.BEST, RUN_ID_FILE):
        (folder / name).write_text("x")


def test_only_the_same_training_keeps_its_checkpoints(tmp_path):
    a, b = {"tier": {"lr": 1e-3, "sizes": (1, 2)}, "seed": 0}, {"tier": {"lr": 2e-3}, "seed": 0}
    leave_training(tmp_path)
    assert discard_if_changed(tmp_path, a)  # left by an unknown training: not resumed
    assert not (tmp_path / checkpoint.LAST).exists() and not (tmp_path / RUN_ID_FILE).exists()
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["tier"]["sizes"] == [1, 2]
    leave_training(tmp_path)
    assert not discard_if_changed(tmp_path, a)  # the same settings (tuples as JSON lists)
    assert (tmp_path / checkpoint.LAST).exists()
    assert discard_if_changed(tmp_path, b)
    assert not (tmp_path / checkpoint.BEST).exists()
    (tmp_path / "new").mkdir()
    assert not discard_if_changed(tmp_path / "new", a)  # nothing to discard


def test_code_digest_follows_python_sources_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = code_digest([pkg])
    (pkg / "notes.txt").write_text("not code")
    assert code_digest([pkg]) == before
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_digest([pkg]) != before
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert code_digest([pkg]) == before
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # same bytes, another module
    assert code_digest([pkg]) != before


def test_training_code_is_the_train_and_models_packages():
    import spkid.models
    import spkid.train

    assert {p.resolve() for p in TRAINING_CODE} == {
        Path(spkid.train.__file__).parent.resolve(),
        Path(spkid.models.__file__).parent.resolve(),
    }


class Tracker:
    """Takes what train_tier logs, keeps nothing."""

    def log_metrics(self, metrics, step):
        pass

    def log_params(self, params):
        pass

    def log_artifact(self, path, folder=None):
        pass

    def log_model(self, model):
        pass


def test_a_model_knows_only_its_trained_speakers(tmp_path):
    """Held-out speakers are no class of the model; valid labels are the model's class ids."""
    store_dir = make_store(tmp_path / "store", n_speakers=5, per_speaker=6)
    store = open_store(store_dir)
    split = split_utterances(store.speakers, store.sessions, SplitConfig(0.34, 0.4), seed=2)
    assert split["heldout_speakers"] == ["spk1", "spk3"]  # so the trained ids are renumbered
    (tmp_path / "split.json").write_text(json.dumps(split))
    model = ModelConfig(
        encoder="transformer", d_model=16, layers=1, heads=2, ffn=32, pooling="mean", head="mlp"
    )
    recipe = Recipe(
        segment=32, batch=4, lr=1e-3, weight_decay=0.0, warmup=0, steps=2, valid_every=2
    )
    config, split_file, best = TierConfig(model, recipe), tmp_path / "split.json", tmp_path / "m"
    train_tier(config, Runtime(device="cpu"), store_dir, split_file, best, Tracker(), seed=0)
    best = best / checkpoint.BEST
    net, ckpt = checkpoint.load_model(best)
    assert ckpt["speaker2id"] == {"spk0": 0, "spk2": 1, "spk4": 2}
    assert ckpt["model_args"]["n_classes"] == 3
    data = DeviceData(store, split["valid"], torch.device("cpu"), ckpt["speaker2id"])
    assert sorted(set(data.labels.tolist())) == [0, 1, 2]
    metrics = validate([best], store_dir, split_file, tmp_path / "v", "cpu")
    pred = predict_logits(net, data, 4096).argmax(1)
    assert metrics["top1"] == pytest.approx((pred == data.labels).double().mean().item())
