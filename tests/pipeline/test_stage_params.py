"""A stage fed a bad params.yaml stops before it writes, naming the dotted key."""

import sys

import pytest
import yaml

from tests.conftest import attempt

CASES = [
    ("features", ("features", "frontend", "n_mels"), 0, "features.frontend.n_mels: must be in"),
    ("split", ("split", "colour"), 1, "split: unknown key(s) ['colour']; valid keys: ["),
]


@pytest.mark.parametrize("stage, key, value, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_key_stops_the_stage_and_keeps_earlier_outputs(project, stage, key, value, message):
    params = yaml.safe_load((project / "params.yaml").read_text())
    *parents, last = key
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    earlier = project / "data/features/train/meta.json"  # stands for an earlier run's output
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    done = attempt([sys.executable, "-m", f"pipeline.{stage}"], project)
    assert done.returncode != 0
    assert f"spkid.config.ConfigError: {message}" in done.stderr
    assert earlier.read_text() == "{}" and not (project / "data/split.json").exists()
