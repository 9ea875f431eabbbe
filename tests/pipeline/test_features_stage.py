"""`dvc repro features` changes both stores or neither: a test set that fails after the
pool loaded leaves the old pair in the workspace (DVC must not delete it first)."""

import json
import sys

import numpy as np
import torch
import yaml

from spkid.data.hw4 import write_hw4
from tests.conftest import attempt, run


def _files(project):
    return {
        p: p.read_bytes() for p in sorted((project / "data/features").rglob("*")) if p.is_file()
    }


def test_a_failing_features_stage_leaves_the_old_pair(project):
    rng = np.random.default_rng(0)
    pool = [(s, rng.standard_normal((20, 40)).astype(np.float32)) for s in ["a", "b", "b"]]
    test = [rng.standard_normal((20, 40)).astype(np.float32) for _ in range(2)]
    dataset = project / "Dataset"
    write_hw4(dataset, pool, test, {"a": 0, "b": 1})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["source"].update(name="hw4", dir="Dataset")
    params["features"]["workers"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "repro", "features"], project)
    before = _files(project)

    listing = json.loads((dataset / "metadata.json").read_text())["speakers"]["a"][0]
    changed = dataset / listing["feature_path"]
    torch.save(torch.load(changed, weights_only=True) + 1, changed)  # a new pool...
    bad = (
        dataset
        / json.loads((dataset / "testdata.json").read_text())["utterances"][1]["feature_path"]
    )
    torch.save(torch.full((20, 40), float("nan")), bad)  # ...and a test tensor that fails
    done = attempt([sys.executable, "-m", "dvc", "repro", "-f", "features"], project)
    assert done.returncode != 0
    assert f"{bad}: tensor holds NaN values" in done.stdout + done.stderr
    assert _files(project) == before
    assert sorted(p.name for p in (project / "data/features").iterdir()) == ["test", "train"]

    torch.save(torch.zeros(20, 40), bad)
    run([sys.executable, "-m", "dvc", "repro", "-f", "features"], project)
    after = _files(project)
    for name in ("train", "test"):
        frames = project / "data/features" / name / "frames.npy"
        assert after[frames] != before[frames]
