"""Shared fixtures: a tiny feature store, a tiny copy of the DVC project."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spkid.data.store import build_store
from spkid.data.utterance import Utterance


def make_store(folder, n_speakers=4, per_speaker=10, n_mels=40, seed=0, sessions=1):
    """A store whose speakers differ by a mean offset (learnable in a few steps), built
    through build_store from .npy files in a temporary folder."""
    rng = np.random.default_rng(seed)
    utts = []
    speaker2id = {f"spk{s}": s for s in range(n_speakers)}
    with tempfile.TemporaryDirectory() as src:
        for name in speaker2id:
            centre = rng.normal(0, 2, n_mels)
            for k in range(per_speaker):
                n = int(rng.integers(40, 160))
                path = f"{src}/{name}-u{k}.npy"
                np.save(path, (centre + rng.normal(0, 1, (n, n_mels))).astype(np.float32) - 5)
                utts.append(Utterance(f"{name}/u{k}.wav", name, f"{name}-s{k % sessions}", path))
        meta = {"source": {"name": "make_store"}, "frontend": {"n_mels": n_mels}}
        build_store(folder, utts, np.load, speaker2id, meta, 1, "fail", "make_store")
    return folder


# Session fixtures that cost a whole pipeline or a training, and where their tests live. Under
# pytest-xdist (./run.sh test: -n 2) each group runs on one worker, so each fixture is built
# once; every other test is handed out alone.
SHARED = {
    "reproduced": ("tests/pipeline/test_repro.py", "tests/pipeline/test_browser.py"),
    "trained": ("tests/serve/",),  # defined in tests/serve/conftest.py
}


def shared_group(nodeid: str) -> str | None:
    """The SHARED fixture whose tests include ``nodeid``'s file, if any."""
    path = nodeid.split("::")[0]
    return next((name for name, files in SHARED.items() if path.startswith(files)), None)


def pytest_collection_modifyitems(items):
    """A test of a SHARED fixture outside that fixture's files would build it again."""
    for item in items:
        for name in SHARED:
            if name in item.fixturenames and shared_group(item.nodeid) != name:
                raise pytest.UsageError(f"{item.nodeid} uses {name}: add its file to SHARED")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Load scheduling by scope: a SHARED group is one scope, every other test its own."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_group(nodeid) or nodeid

    return SharedFixtureScheduling(config, log)


if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on a few cores: one torch thread each
    torch.set_num_threads(1)  # (the pipeline stages they start keep train.threads)


@pytest.fixture(autouse=True)
def no_tracking_uri(monkeypatch):
    """No test inherits a tracking URI: mlflow.set_tracking_uri in an earlier test exports
    MLFLOW_TRACKING_URI, which tracking.tracking_uri prefers to the project's store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def tiny_store(tmp_path):
    return make_store(tmp_path / "store")


REPO = Path(__file__).resolve().parent.parent
TINY_STEPS = {
    "steps": 24,
    "warmup": 4,
    "valid_every": 12,
    "checkpoint_every": 12,
    "log_every": 4,
    "batch": 8,
}


def tiny_params(params: dict) -> dict:
    """params.yaml shrunk to seconds: 4 demo speakers, tiny models, a few steps."""
    params["source"]["demo"].update(
        n_speakers=4, train_per_speaker=6, test_per_speaker=2, min_seconds=1.0, max_seconds=1.5
    )
    params["split"]["demo"].update(
        valid_ratio=0.25, heldout_speakers=0.5
    )  # 2 trained, 2 for verify
    params["verify"]["enroll"] = 3  # of each held-out speaker's 6 utterances
    params["mlflow"]["onnx"] = False  # 3-5 s a training; tests/serve logs and checks one
    for tier in params["tiers"].values():
        tier["demo"]["recipe"].update(TINY_STEPS, segment=48)
        tiny = {"d_model": 16, "layers": 1}
        if tier["model"]["encoder"] != "ecapa":  # no heads or ffn there
            tiny.update(heads=2, ffn=32)
        tier["demo"].setdefault("model", {}).update(tiny)
        tier["demo"]["model"].pop("embedding", None)
    return params


def clean_env() -> dict:
    """This environment with the venv first on PATH and no tracking URI (mlflow's
    set_tracking_uri in an earlier test exports one)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def attempt(cmd, cwd, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with this venv first on PATH, whatever its exit status."""
    env = {**clean_env(), **kw.pop("env", {})}
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, **kw)


def run(cmd, cwd, **kw):
    """Run ``cmd`` in ``cwd`` with this venv first on PATH; fail loudly with its output."""
    done = attempt(cmd, cwd, **kw)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def project(tmp_path):
    """A git + DVC copy of the pipeline (dvc.yaml, pipeline/, tiny params.yaml)."""
    return make_project(tmp_path)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """A tiny project after a whole `dvc repro` (shared by the tests that read it)."""
    root = make_project(tmp_path_factory.mktemp("repro"))
    run([sys.executable, "-m", "dvc", "repro"], root)
    return root


def make_project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copytree(
        REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".gitignore", root)
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
        root,
    )
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # analytics off, plots
    shutil.copytree(REPO / "plots", root / "plots", ignore=shutil.ignore_patterns("vendor"))
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project"], root)
    return root
