"""A tiny trained tier shared by the serve tests: a demo corpus of four speakers, its
feature store and a simple-tier training of a few hundred steps, logged to an MLflow store."""

import csv
import json
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest
import yaml

from spkid import tracking
from spkid.data.demo import DemoConfig
from spkid.data.features import build_features
from spkid.data.frontend import FrontEnd
from spkid.data.sources import SourceConfig
from spkid.data.split import split_indices
from spkid.data.store import open_store
from spkid.train import checkpoint
from spkid.train.config import Runtime, resolve_tier
from spkid.train.run import train_tier
from tests.conftest import REPO, TINY_STEPS, tiny_params

DEMO = DemoConfig(
    n_speakers=4, train_per_speaker=8, test_per_speaker=2, min_seconds=2.0, max_seconds=3.0
)
STEPS = {**TINY_STEPS, "steps": 150, "valid_every": 50, "checkpoint_every": 50}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(root, run id, checkpoint, demo folder, test labels {wav path: speaker}) of a tiny
    simple-tier training logged to ``root``'s MLflow store."""
    root = tmp_path_factory.mktemp("serve")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    fe = FrontEnd(min_frames=10)
    build_features(
        SourceConfig(demo=DEMO), fe, "fail", 1, root / "train", root / "test", root / "demo"
    )
    store = open_store(root / "train")
    train, valid = split_indices(store.speakers, store.sessions, valid_ratio=0.25, seed=0)
    (root / "split.json").write_text(json.dumps({"train": train.tolist(), "valid": valid.tolist()}))
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    config = resolve_tier(params["tiers"], "simple", "demo")
    config = replace(config, recipe=replace(config.recipe, **STEPS))
    digest = store.meta["digest"]
    with tracking.tier_run(root, "spkid", "simple", "train@simple", digest, None, False) as run:
        train_tier(
            config,
            Runtime(device="cpu"),
            root / "train",
            root / "split.json",
            root / "models",
            run,
            0,
        )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    with open(root / "demo" / "test_labels.csv") as f:
        labels = {str(root / "demo" / "test" / r["file"]): r["speaker"] for r in csv.DictReader(f)}
    return SimpleNamespace(
        root=root,
        run_id=run.run_id,
        checkpoint=root / "models" / checkpoint.BEST,
        labels=labels,
        uri=tracking.tracking_uri(root),
    )
