import tomllib

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from spkid import checkpoint
from spkid.models import SpeakerNet
from spkid.serve.identifier import pad
from spkid.serve.onnx import INPUTS, export
from spkid.train.config import resolve_tier
from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
N_MELS = PARAMS["features"]["frontend"]["n_mels"]
SPEAKERS = 40  # the demo's trained speakers
BATCHES = ((97, 12, 55, 30), (23,))  # other sizes and lengths than the traced batch's


def onnx_log_probs(path, feats: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """onnxruntime's (CPU) output of the ONNX file ``path``: (B, speakers)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(INPUTS, (feats.numpy(), lengths.numpy()))))[0]


def assert_matches(path, model, batch_lengths) -> None:
    """The ONNX file gives ``model``'s log-probabilities on a padded random batch."""
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((n, N_MELS)).astype(np.float32) for n in batch_lengths]
    feats, lengths = pad(features, "cpu")
    with torch.no_grad():
        expected = model(feats, lengths).log_softmax(-1).numpy()
    got = onnx_log_probs(path, feats, lengths)
    assert got.shape == expected.shape and len(got) == len(batch_lengths)
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("tier", PARAMS["tiers"])
def test_every_tier_exports_to_onnx_with_pytorch_s_log_probabilities(tier, tmp_path):
    torch.manual_seed(0)
    config = resolve_tier(PARAMS["tiers"], tier, "demo")  # the demo profile's sizes
    model = SpeakerNet(config.model, N_MELS, SPEAKERS).eval()
    export(model, N_MELS, tmp_path / "model.onnx")
    for batch_lengths in BATCHES:
        assert_matches(tmp_path / "model.onnx", model, batch_lengths)


def test_the_onnx_group_is_optional_and_the_tests_install_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert not [d for d in project["project"]["dependencies"] if d.startswith("onnx")]
    assert project["project"]["optional-dependencies"]["onnx"] == [
        "onnx",
        "onnxruntime",
        "onnxscript",
    ]
    assert "spkid[onnx]" in project["dependency-groups"]["dev"]


def test_the_training_logs_its_network_as_onnx(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    from mlflow.artifacts import download_artifacts

    folder = download_artifacts(run_id=trained.run_id, artifact_path="onnx", dst_path=tmp_path)
    assert sorted(p.name for p in tmp_path.joinpath("onnx").iterdir()) == ["best.onnx"]
    model, _ = checkpoint.load_model(trained.checkpoint)
    assert_matches(f"{folder}/best.onnx", model, BATCHES[0])
