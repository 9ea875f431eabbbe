import base64
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml
from mlflow.exceptions import MlflowException

from tests.conftest import REPO, run

LOAD_AND_PREDICT = """
import json, sys, mlflow, pandas
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pandas.DataFrame({"audio": json.loads(sys.argv[2])}), params={"top_k": 3})
import spkid, torch
print(spkid.__file__, torch.__file__)
print(out.to_json(orient="records"))
"""


@pytest.fixture
def model(trained):
    """The pyfunc model that train_tier logged."""
    mlflow.set_tracking_uri(trained.uri)
    return mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")


def uv() -> str:
    """run.sh's uv (.tools/bin/uv), else the one on PATH."""
    found = shutil.which("uv", path=f"{REPO / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert found, "no uv: ./run.sh installs it at .tools/bin/uv"
    return found


def model_environment(uri: str, venv: Path) -> Path:
    """A new virtual environment ``venv`` holding only the logged requirements of the model
    at ``uri`` (MLflow's requirements.txt, installed as MLflow's uv env manager does; the
    versions they leave open pinned to uv.lock's, so that uv's cache has them): its python."""
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri))
    python_env = yaml.safe_load(requirements.with_name("python_env.yaml").read_text())
    assert python_env["python"] == platform.python_version()
    assert not requirements.with_name("uv.lock").exists()  # else MLflow's uv env manager syncs it
    locked = venv.with_name("locked.txt")
    export = ["export", "--frozen", "--no-hashes", "--no-emit-project", "--all-groups"]
    run([uv(), *export, "-q", "-o", str(locked)], REPO)
    run([uv(), "venv", "-q", str(venv), "--python", sys.executable], venv.parent)
    python = venv / "bin" / "python"
    install = ["pip", "install", "-q", "--python", str(python), "-r", str(requirements)]
    run([uv(), *install, "--constraint", str(locked)], venv.parent)
    return python


def test_a_logged_model_names_the_speakers_in_an_environment_of_its_requirements(
    trained, tmp_path, monkeypatch
):
    uri = f"runs:/{trained.knowing_run_id}/model"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    python = model_environment(uri, tmp_path / "venv")
    files = sorted(trained.labels)
    env = {"PATH": f"{python.parent}{os.pathsep}/usr/bin:/bin", "MLFLOW_TRACKING_URI": trained.uri}
    done = subprocess.run(
        [str(python), "-c", LOAD_AND_PREDICT, uri, json.dumps(files)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *_, modules, answer = done.stdout.strip().splitlines()
    package, torch_file = modules.split()
    assert "/code/spkid/" in package and not package.startswith(str(REPO))  # the model's copy
    assert torch_file.startswith(str(tmp_path / "venv"))
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
