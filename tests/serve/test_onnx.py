import numpy as np
import pytest
import torch

from spkid.models import SpeakerNet
from spkid.serve.identifier import pad
from spkid.serve.onnx import INPUTS, export
from tests.conftest import REPO
from tests.serve.conftest import tier_config

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
TIERS = ("simple", "medium", "strong", "boss", "beyond", "tdnn")
LENGTHS = (97, 12, 55, 30)  # a batch of other size and lengths than the traced one


@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_exports_to_onnx_with_pytorch_s_log_probabilities(tier, tmp_path):
    torch.manual_seed(0)
    model = SpeakerNet(tier_config(tier).model, 40, 7).eval()
    export(model, 40, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feats, lengths = pad([rng.standard_normal((n, 40)).astype(np.float32) for n in LENGTHS], "cpu")
    with torch.no_grad():
        expected = model(feats, lengths).log_softmax(-1).numpy()
    got = session.run(None, dict(zip(INPUTS, (feats.numpy(), lengths.numpy()))))[0]
    assert got.shape == (len(LENGTHS), 7)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_the_onnx_group_is_optional():
    text = (REPO / "pyproject.toml").read_text()
    core = text.split("[project.optional-dependencies]")[0]
    assert "onnx" not in core.split("dependencies = [")[1]
    assert 'onnx = ["onnx", "onnxruntime", "onnxscript"]' in text


def test_the_training_logs_its_network_as_onnx(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    from mlflow.tracking import MlflowClient

    paths = [a.path for a in MlflowClient().list_artifacts(trained.run_id, "onnx")]
    assert paths == ["onnx/best.onnx"]
