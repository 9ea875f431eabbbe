"""A recipe.segment longer than every training utterance warns with the numbers."""

import json
import re
import warnings

import pytest

from spkid.config import merge
from spkid.data.store import open_store
from spkid.train.config import Runtime, resolve_tier
from spkid.train.run import train_tier
from tests.train.test_loop import TIERS


class Tracker:
    def log_metrics(self, metrics, step):
        pass

    def log_params(self, params):
        pass

    def log_artifact(self, path, folder):
        pass

    def log_model(self, model):
        pass


def train(store_dir, tmp_path, segment):
    tmp_path.mkdir()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": list(range(30)), "valid": list(range(30, 40))}))
    recipe = {"segment": segment, "steps": 2, "warmup": 0, "valid_every": 2, "log_every": 1}
    cfg = resolve_tier({"t": merge(TIERS["t"], {"demo": {"recipe": recipe}})}, "t", "demo")
    runtime = Runtime(device="cpu")
    return train_tier(cfg, runtime, store_dir, split, tmp_path / "out", Tracker(), seed=0)


def test_a_segment_longer_than_every_utterance_warns(tiny_store, tmp_path):
    longest = int(open_store(tiny_store).lengths[:30].max())
    expected = (
        f"recipe.segment: {longest + 1} frames is longer than every training utterance "
        f"(the longest has {longest} frames): every crop is padded"
    )
    with pytest.warns(UserWarning, match=re.escape(expected)):
        train(tiny_store, tmp_path / "long", longest + 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="recipe.segment")
        train(tiny_store, tmp_path / "fits", longest)
