import pytest
import torch
import yaml

from spkid import checkpoint
from spkid.data.errors import InputError
from spkid.models import SpeakerNet
from spkid.train.config import resolve_tier
from tests.conftest import REPO, tiny_params


def saved(path):
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    config = resolve_tier(params["tiers"], "simple", "demo")
    checkpoint.save(path, SpeakerNet(config.model, 40, 3), config, 40, {"a": 0, "b": 1, "c": 2})
    return path


def test_a_checkpoint_carries_its_format_version_and_loads(tmp_path):
    path = saved(tmp_path / "best.pt")
    model, ckpt = checkpoint.load_model(path)
    assert ckpt["format"] == checkpoint.FORMAT and isinstance(model, SpeakerNet)


@pytest.mark.parametrize("version", [None, checkpoint.FORMAT + 1, "1"])
def test_an_older_or_unknown_format_is_refused_naming_the_file(tmp_path, version):
    path = saved(tmp_path / "best.pt")
    payload = torch.load(path, weights_only=True)
    if version is None:
        del payload["format"]  # written before checkpoints had a version
    else:
        payload["format"] = version
    torch.save(payload, path)
    with pytest.raises(InputError, match="format") as error:
        checkpoint.load(path)
    assert error.value.path == str(path)
