import errno
import os
from pathlib import Path

import pytest
import torch

from spkid import checkpoint
from spkid.models import ModelConfig, SpeakerNet
from spkid.train.config import Recipe, TierConfig

CONFIG = TierConfig(
    ModelConfig(
        encoder="transformer", pooling="mean", head="mlp", d_model=8, layers=1, heads=2, ffn=8
    ),
    Recipe(segment=8, batch=2, lr=1e-3, weight_decay=0.0, warmup=0, steps=2, valid_every=1),
)


def save(path, step):
    model = SpeakerNet(CONFIG.model, 4, 2)
    checkpoint.save(path, model, CONFIG, 4, {"a": 0, "b": 1}, step=step)


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / checkpoint.LAST
    save(path, 1)

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=f"{path}.*disk is full") as err:
        save(path, 2)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.LAST]  # no temporary left


class Payload:
    def __reduce__(self):
        return (os.system, ("echo poisoned",))


def test_a_poisoned_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / checkpoint.BEST
    torch.save({"model": Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}.*unsafe") as err:
        checkpoint.load_model(path)
    assert "weights_only" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize("keep", [0, 0.5])
def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path, keep):
    path = tmp_path / checkpoint.BEST
    save(path, 1)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}.*truncated"):
        checkpoint.load_model(path)
