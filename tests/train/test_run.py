import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spkid import checkpoint
from spkid.data.split import SplitConfig, split_utterances
from spkid.data.store import open_store
from spkid.evaluate.report import validate
from spkid.models import ModelConfig
from spkid.runtime import DeviceData, predict_logits
from spkid.tracking import NullRun
from spkid.train.config import Recipe, Runtime, TierConfig
from spkid.train.run import (
    METRICS_FILE,
    RUN_ID_FILE,
    SETTINGS_FILE,
    SRC,
    code_digest,
    discard_if_changed,
    prepare,
    train_tier,
    training_code,
    training_settings,
)
from tests.conftest import REPO, make_store

LEFTOVERS = (checkpoint.LAST, checkpoint.BEST, RUN_ID_FILE, METRICS_FILE)


def leave_training(folder):
    folder.mkdir(exist_ok=True)
    for name in LEFTOVERS:
        (folder / name).write_text("x")


def test_only_the_same_training_keeps_its_checkpoints(tmp_path):
    a, b = {"tier": {"lr": 1e-3, "sizes": (1, 2)}, "seed": 0}, {"tier": {"lr": 2e-3}, "seed": 0}
    leave_training(tmp_path)
    assert discard_if_changed(tmp_path, a)  # left by an unknown training: not resumed
    assert not any((tmp_path / n).exists() for n in LEFTOVERS)
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["tier"]["sizes"] == [1, 2]
    leave_training(tmp_path)
    assert not discard_if_changed(tmp_path, a)  # the same settings (tuples as JSON lists)
    assert (tmp_path / checkpoint.LAST).exists()
    assert discard_if_changed(tmp_path, b)
    assert not (tmp_path / checkpoint.BEST).exists()
    (tmp_path / "new").mkdir()
    assert not discard_if_changed(tmp_path / "new", a)  # nothing to discard


def test_code_digest_follows_the_named_sources(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    files = [pkg / "a.py", pkg / "sub" / "b.py"]
    before = code_digest(files, tmp_path)
    assert code_digest(files[::-1], tmp_path) == before
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_digest(files, tmp_path) != before
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert code_digest(files, tmp_path) == before
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # same bytes, another module
    assert code_digest([pkg / "a.py", pkg / "b.py"], tmp_path) != before


def test_training_code_is_every_spkid_module_the_training_loads():
    """What importing the training loads (in a fresh interpreter), the validation code
    included, is digested; nothing else of spkid is."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys, spkid.train.run; "
                "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
                "if n.split('.')[0] == 'spkid'))"
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    code = training_code()
    assert {Path(f).resolve() for f in loaded} == {p.resolve() for p in code}
    assert SRC / "spkid" / "runtime.py" in code  # full-length inference, which validation runs
    assert SRC / "spkid" / "tracking.py" not in code


def test_dvc_train_deps_cover_the_digested_code():
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    covered = [REPO / d for d in deps]
    for path in training_code():
        assert any(path == c or c in path.parents for c in covered), f"{path} not in train deps"


def tiny_config():
    recipe = Recipe(segment=8, batch=2, lr=1e-3, weight_decay=0.0, warmup=0, steps=2, valid_every=1)
    return TierConfig(
        ModelConfig(
            encoder="transformer", pooling="mean", head="mlp", d_model=8, layers=1, heads=2, ffn=8
        ),
        recipe,
    )


def test_settings_follow_the_split_content(tmp_path, tiny_store):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [0, 1, 2], "valid": [3]}))
    first = training_settings(tiny_config(), Runtime(), 0, tiny_store, split)
    assert training_settings(tiny_config(), Runtime(threads=3), 0, tiny_store, split) == first
    split.write_text(json.dumps({"train": [0, 1], "valid": [2, 3]}))
    assert training_settings(tiny_config(), Runtime(), 0, tiny_store, split) != first


def test_a_truncated_last_checkpoint_is_set_aside_and_training_starts_over(tmp_path, capsys):
    settings = {"seed": 0}
    discard_if_changed(tmp_path, settings)
    leave_training(tmp_path)
    torch.save({"step": torch.zeros(100)}, tmp_path / checkpoint.LAST)
    data = (tmp_path / checkpoint.LAST).read_bytes()
    (tmp_path / checkpoint.LAST).write_bytes(data[: len(data) // 2])
    prepare(tmp_path, settings)
    (aside,) = tmp_path.glob("last.pt.corrupt-*")
    assert aside.read_bytes() == data[: len(data) // 2]
    assert not (tmp_path / checkpoint.LAST).exists()
    assert not (tmp_path / RUN_ID_FILE).exists() and not (tmp_path / METRICS_FILE).exists()
    err = capsys.readouterr().err
    assert str(tmp_path / checkpoint.LAST) in err and "starts over" in err
    assert "weights_only" not in err


def test_a_readable_last_checkpoint_resumes(tmp_path):
    discard_if_changed(tmp_path, {})
    leave_training(tmp_path)
    torch.save({"format": checkpoint.FORMAT, "step": 3}, tmp_path / checkpoint.LAST)
    prepare(tmp_path, {})
    assert all((tmp_path / n).exists() for n in LEFTOVERS)


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
    train_tier(config, Runtime(device="cpu"), store_dir, split_file, best, NullRun(), seed=0)
    best = best / checkpoint.BEST
    net, ckpt = checkpoint.load_model(best)
    assert ckpt["speaker2id"] == {"spk0": 0, "spk2": 1, "spk4": 2}
    assert ckpt["model_args"]["n_classes"] == 3
    data = DeviceData(store, split["valid"], torch.device("cpu"), ckpt["speaker2id"])
    assert sorted(set(data.labels.tolist())) == [0, 1, 2]
    metrics = validate([best], store_dir, split_file, tmp_path / "v", "cpu")
    pred = predict_logits(net, data, 4096).argmax(1)
    assert metrics["top1"] == pytest.approx((pred == data.labels).double().mean().item())
