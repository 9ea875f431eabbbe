"""Shared by the serve tests: a tiny demo corpus and a short training logged to MLflow, and a
model that knows the four speakers of another demo corpus (tests/serve/data/demo4.pt, made by
tests/serve/make_model.py) with that corpus's test WAVs."""

import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile
import yaml

from spkid import checkpoint, tracking
from spkid.data.demo import WAV_SUBTYPE, DemoConfig, speaker_name, utterance
from spkid.data.features import build_features
from spkid.data.frontend import FrontEnd
from spkid.data.sources import SourceConfig
from spkid.data.split import split_indices
from spkid.data.store import open_store
from spkid.train.config import Runtime, resolve_tier
from spkid.train.run import METRICS_FILE, RUN_ID_FILE, train_tier
from tests.conftest import REPO, TINY_STEPS, tiny_params
from tests.serve.make_model import KNOWING_MODEL

DEMO = DemoConfig(
    n_speakers=4, train_per_speaker=6, test_per_speaker=1, min_seconds=1.0, max_seconds=1.5
)
KNOWN_DEMO = DemoConfig(  # the knowing model's corpus: its test WAVs are the tests' audio
    n_speakers=4, train_per_speaker=60, test_per_speaker=2, min_seconds=2.0, max_seconds=3.0
)
FRONTEND = FrontEnd(min_frames=10)


def make_demo(root, demo: DemoConfig = DEMO) -> Path:
    """``demo``'s WAVs under root/demo, its stores root/train and root/test, root/split.json."""
    root = Path(root)
    build_features(
        SourceConfig(demo=demo), FRONTEND, "fail", 0, root / "train", root / "test", root / "demo"
    )
    store = open_store(root / "train")
    train, valid = split_indices(store.speakers, store.sessions, valid_ratio=0.25, seed=0)
    (root / "split.json").write_text(json.dumps({"train": train.tolist(), "valid": valid.tolist()}))
    return root


def tier_config(tier: str, **recipe):
    """``tier`` of params.yaml's demo profile at tiny_params's sizes, ``recipe`` fields replaced."""
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    config = resolve_tier(params["tiers"], tier, "demo")
    return replace(config, recipe=replace(config.recipe, **recipe))


def known_test_wavs(folder) -> dict:
    """KNOWN_DEMO's test utterances (the knowing model never saw them) as WAV files, written
    as the demo generator writes them: {path: speaker}."""
    folder.mkdir()
    labels = {}
    for speaker in range(KNOWN_DEMO.n_speakers):
        for k in range(KNOWN_DEMO.test_per_speaker):
            path = folder / f"{speaker_name(speaker)}_t{k}.wav"
            wave = utterance(KNOWN_DEMO, speaker, KNOWN_DEMO.train_per_speaker + k)
            soundfile.write(path, wave, KNOWN_DEMO.sample_rate, subtype=WAV_SUBTYPE)
            labels[str(path)] = speaker_name(speaker)
    return labels


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The demo, a short simple-tier training (run ``run_id``, its pyfunc model logged by
    train_tier) and the knowing model logged as the pyfunc of run ``knowing_run_id``, all in
    ``root``'s MLflow store (``uri``); ``labels``: test WAV path -> speaker."""
    root = make_demo(tmp_path_factory.mktemp("serve"))
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    store = open_store(root / "train")
    digest = store.meta["digest"]
    models, known_dir = root / "models", root / "known"
    models.mkdir()
    known_dir.mkdir()
    logs = {d: (d / RUN_ID_FILE, d / METRICS_FILE) for d in (models, known_dir)}
    with tracking.tier_run(
        root, "spkid", "simple", "train@simple", digest, *logs[models], False
    ) as run:
        train_tier(
            tier_config("simple", **TINY_STEPS),
            Runtime(device="cpu"),
            root / "train",
            root / "split.json",
            root / "models",
            run,
            0,
        )
    with tracking.tier_run(
        root, "spkid", "medium", "train@medium", digest, *logs[known_dir], False
    ) as known:
        known.log_model([KNOWING_MODEL], store.meta["frontend"])
    uri = os.environ.pop("MLFLOW_TRACKING_URI", tracking.tracking_uri(root))
    if saved:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    labels = known_test_wavs(root / "wavs")
    return SimpleNamespace(
        root=root,
        run_id=run.run_id,
        knowing_run_id=known.run_id,
        checkpoint=root / "models" / checkpoint.BEST,
        knowing=KNOWING_MODEL,
        labels=labels,
        uri=uri,
    )
