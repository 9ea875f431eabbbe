import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile
from mlflow.exceptions import MlflowException

from tests.conftest import REPO, clean_env

LOAD_AND_PREDICT = """
import json, sys, mlflow, pandas
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pandas.DataFrame({"audio": json.loads(sys.argv[2])}), params={"top_k": 3})
import spkid
print(spkid.__file__)
print(out.to_json(orient="records"))
"""


@pytest.fixture
def model(trained):
    """The pyfunc model that train_tier logged."""
    mlflow.set_tracking_uri(trained.uri)
    return mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")


def test_a_logged_model_names_the_speakers_in_a_fresh_process(trained, tmp_path):
    files = sorted(trained.labels)
    env = {**clean_env(), "MLFLOW_TRACKING_URI": trained.uri}
    env.pop("PYTHONPATH", None)  # spkid comes from the model's code
    uri = f"runs:/{trained.knowing_run_id}/model"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, uri, json.dumps(files)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *_, package, answer = done.stdout.strip().splitlines()
    assert "/code/spkid/" in package and not package.startswith(str(REPO))  # the model's copy
    rows = json.loads(answer)
    assert len(rows) == len(files)
    right = sum(r["speaker"] == trained.labels[f] for r, f in zip(rows, files))
    assert right >= len(files) - 1, rows
    for r in rows:
        assert len(r["top_k_speakers"]) == 3 and r["top_k_speakers"][0] == r["speaker"]
        assert r["top_k_probabilities"] == sorted(r["top_k_probabilities"], reverse=True)
        assert 0 < r["probability"] == r["top_k_probabilities"][0] <= 1


def test_the_training_s_model_has_a_signature_an_example_and_top_k_param(model):
    meta = model.metadata
    assert {c.name for c in meta.get_input_schema().inputs} == {"audio", "features"}
    assert meta.get_params_schema().params[0].name == "top_k"
    assert meta.saved_input_example_info is not None


def test_features_and_base64_audio_give_the_file_path_s_answer(model, trained):
    path = min(trained.labels)
    identifier = model.unwrap_python_model().identifier
    feats = identifier.audio(path)
    by_path = model.predict(pd.DataFrame({"audio": [path]}))
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    by_bytes = model.predict(pd.DataFrame({"audio": [encoded]}))
    by_feats = model.predict(pd.DataFrame({"features": [feats.tolist()]}), params={"top_k": 2})
    assert len(by_path.top_k_speakers[0]) == 4  # top 5 of 4 speakers: all of them
    assert by_path.speaker[0] == by_bytes.speaker[0] == by_feats.speaker[0]
    assert by_feats.probability[0] == pytest.approx(by_path.probability[0], abs=1e-5)
    assert len(by_feats.top_k_speakers[0]) == 2


def wav_base64(seconds: float) -> str:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * rng.standard_normal(int(16000 * seconds)), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


BAD = {
    "not audio": ({"audio": [base64.b64encode(b"hello, not audio").decode()]}, "unreadable audio"),
    "0.05 s clip": ({"audio": [wav_base64(0.05)]}, "too short"),
    "wrong width": ({"features": [np.zeros((50, 13)).tolist()]}, "need (frames, 40)"),
    "unreadable path": ({"audio": ["/no/such/file.wav"]}, "no such file"),
    "no column": ({"wave": ["x.wav"]}, "needs a column audio or features"),
}


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_raises_invalid_parameter_value_saying_what(model, kind):
    data, reason = BAD[kind]
    with pytest.raises(MlflowException) as error:
        model.predict(pd.DataFrame(data))
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"
    assert reason in error.value.message
