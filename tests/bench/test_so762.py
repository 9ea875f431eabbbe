import copy
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from bench import so762, speed


@pytest.fixture
def params(tmp_path, monkeypatch):
    """Write params.yaml's tiers, with boss at 32 x 70,000 crops, "small" at a quarter of its
    segments and "large" at twice, to a params.yaml the benchmark reads instead."""
    params = yaml.safe_load((so762.ROOT / "params.yaml").read_text())
    tiers = params["tiers"]
    tiers["boss"]["recipe"].update(batch=32, steps=70000)
    for name, batch, steps in (("small", 16, 35000), ("large", 64, 70000)):
        tiers[name] = copy.deepcopy(tiers["boss"])
        tiers[name]["recipe"].update(batch=batch, steps=steps)

    def write():
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    write()
    for module in (so762, speed):
        monkeypatch.setattr(module, "ROOT", tmp_path)
    return tiers, write


def test_each_tier_trains_its_share_of_boss_segments(params):
    assert (so762.budget("small"), so762.budget("large"), so762.budget("boss")) == (0.25, 2, 1)
    steps = {name: so762.bench_config(name, {}).recipe for name in ("small", "large", "boss")}
    assert steps["small"].steps == so762.STEPS // 4 and steps["large"].steps == 2 * so762.STEPS
    assert {r.batch for r in steps.values()} == {so762.BATCH}
    assert {(r.warmup, r.valid_every) for r in steps.values()} == {
        (so762.STEPS // 10, so762.STEPS // 8)
    }


def test_the_ecapa_peer_trains_with_boss_crops_and_steps(params):
    tiers, write = params
    tiers["boss"]["recipe"]["segment"] = 96
    write()
    peer, boss = (so762.bench_config(name, {}).recipe for name in ("ecapa", "boss"))
    assert peer == boss and peer.segment == 96 and peer.steps == so762.STEPS


def test_set_overrides_the_scaled_recipe(params):
    recipe = so762.bench_config("large", so762.overrides(["recipe.steps=1000"])).recipe
    assert recipe.steps == 1000 and recipe.batch == so762.BATCH


def test_protocol_pools_the_first_eight_per_speaker_and_can_train_on_all_of_them():
    rng = np.random.default_rng(0)
    names = [(s, f"{s}/{u:02d}") for s in "abc" for u in range(20)]
    order = rng.permutation(len(names))
    store = SimpleNamespace(
        speakers=[names[i][0] for i in order],
        uids=[names[i][1] for i in order],
        sessions=[names[i][1] for i in order],
    )
    train, valid, test = so762.protocol(store)
    pool = {i for i, u in enumerate(store.uids) if int(u[-2:]) < so762.POOL_PER_SPEAKER}
    assert set(train) | set(valid) == pool and not set(train) & set(valid)
    assert set(test) == set(range(60)) - pool and len(valid) == 3
    whole, same_valid, same_test = so762.protocol(store, whole_pool=True)
    assert set(whole) == pool and np.array_equal(same_valid, valid)
    assert np.array_equal(same_test, test)
