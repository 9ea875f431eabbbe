"""params.yaml is checked where it enters: every block, unknown keys and bad values named by
their dotted key with the valid choices; every key is read by the code."""

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from pipeline.params import load_params

from spkid.config import ConfigError
from spkid.params import Params, parse_params

REPO = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

# (a block's dotted name, the valid keys the message must list) for every mapping block
BLOCKS = [
    ("", ["compare", "ensemble", "evaluate", "features", "mlflow", "paths", "profile", "seed"]),
    ("paths", ["embed", "features", "models", "reports", "split"]),
    ("source", ["demo", "dir", "name", "test_dir"]),
    ("source.demo", ["max_seconds", "min_seconds", "n_speakers", "seed"]),
    ("features", ["frontend", "on_error", "workers"]),
    ("features.frontend", ["hop_length", "n_fft", "n_mels", "sample_rate"]),
    ("split", ["heldout_speakers", "valid_ratio"]),
    ("train", ["compile", "device", "devices", "precision", "threads"]),
    ("mlflow", ["experiment", "onnx"]),
    ("tiers.boss", ["model", "recipe"]),
    ("tiers.boss.model", ["d_model", "encoder", "pooling"]),
    ("tiers.boss.recipe", ["segment", "specaug", "steps"]),
    ("tiers.boss.recipe.specaug", ["freq_masks", "time_width"]),
    ("ensemble", ["members"]),
    ("evaluate", ["crop_segment", "max_frames", "test_crops"]),
    ("verify", ["cohort_top", "enroll", "false_alarm", "nontarget_trials", "target_trials"]),
]

# (dotted key, bad value, what the message must say after "<key>: "); a tier's key is named
# in its block as resolved for the profile (the demo profile's overrides merged in)
BAD_VALUES = [
    ("profile", "laptop", "'laptop' is not one of ['demo', 'course']"),
    ("seed", "zero", "expected int, got 'zero'"),
    ("seed", -1, "must be >= 0 (numpy's seeds are), got -1"),
    ("tiers.ensemble", {}, "the name is the ensemble stage's"),
    ("paths.models", "", "must not be empty"),
    ("paths.reports", 3, "expected str, got 3"),
    ("source.name", "wav", "'wav' is not one of ['demo', 'hw4', 'audio_dir']"),
    ("source.demo.n_speakers", 0, "must be positive, got 0"),
    ("source.demo.min_seconds", 5.0, "must be in (0, max_seconds = 2.0], got 5.0"),
    ("features.on_error", "ignore", "'ignore' is not one of ['fail', 'skip']"),
    ("features.workers", -1, "must be >= 0 (0: every core), got -1"),
    ("features.frontend.n_mels", 0, "must be in [1, n_fft // 2 + 1 = 201], got 0"),
    ("features.frontend.n_mels", -40, "must be in [1, n_fft // 2 + 1 = 201], got -40"),
    ("features.frontend.n_mels", 4000, "must be in [1, n_fft // 2 + 1 = 201], got 4000"),
    ("features.frontend.n_mels", 40.5, "expected int, got 40.5"),
    ("features.frontend.hop_length", 0, "must be positive, got 0"),
    ("features.frontend.f_min", 9000.0, "must be in [0, 8000.0) Hz, got 9000.0"),
    ("features.frontend.silence_threshold", 150.0, "must be in [0, 100] percent, got 150.0"),
    ("features.frontend.trim_silence", "yes", "expected bool, got 'yes'"),
    ("split.valid_ratio", 1.5, "must be in [0, 1), got 1.5"),
    ("split.demo.heldout_speakers", 1.0, "must be in [0, 1), got 1.0"),
    ("split.demo", 0.2, "expected a mapping, got float"),
    ("train.precision", "fp8", "'fp8' is not one of ['auto', 'bf16', 'fp16', 'fp32']"),
    ("mlflow.experiment", "", "must not be empty"),
    ("mlflow.onnx", "yes", "expected bool, got 'yes'"),
    ("tiers.boss.model.pooling", "max", "'max' is not one of ['mean', 'sap', 'asp', 'casp']"),
    ("tiers.boss.demo.model.kernel", 4, "must be odd, got 4"),
    ("tiers.boss.demo.recipe.warmup", 5000, "must be in [0, steps=900)"),
    ("tiers.boss.recipe.lr", "fast", "expected float, got 'fast'"),
    ("tiers.boss.recipe.select", "first", "'first' is not one of ['best', 'last']"),
    ("ensemble.members", ["boss", "nope"], "needs two or more of the tiers"),
    ("ensemble.members", ["boss", "boss"], "needs two or more of the tiers"),
    ("ensemble.members", "boss", "expected a list, got 'boss'"),
    ("ensemble.members.1", 3, "expected str, got 3"),
    ("evaluate.max_frames", 0, "must be positive, got 0"),
    ("evaluate.test_crops", -2, "must be >= 0 (0: full length), got -2"),
    ("verify.false_alarm", 1.5, "must be in (0, 1), got 1.5"),
    ("verify.enroll", 0, "must be at least 1"),
    ("verify.cohort_top", "many", "expected int, got 'many'"),
    ("compare.course_kaggle", {"giant": 0.9}, "unknown tier(s) ['giant']; valid: ["),
    ("compare.course_kaggle.boss", 86.5, "must be in [0, 1], got 86.5"),
    ("compare.registered_model", "", "must not be empty"),
    ("compare.course_kaggle.boss", "high", "expected float, got 'high'"),
]


def edited(key: str, value) -> dict:
    """The repo's params with ``key`` (dotted; a list index as a number) set to ``value``."""
    params = copy.deepcopy(PARAMS)
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return params


def test_the_repos_params_load_checked():
    params = load_params()
    assert isinstance(params, Params)
    assert params.features.frontend.n_mels == 40 and params.tier("boss").recipe.segment == 64
    assert params.paths.best("boss") == Path("models/boss/best.pt")
    assert params.paths.train_store == Path("data/features/train")
    assert params.ensemble.members == ("beyond", "tdnn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.split.valid_ratio = 0.5


@pytest.mark.parametrize("block, valid", BLOCKS, ids=[b or "top" for b, _ in BLOCKS])
def test_an_unknown_key_is_named_with_the_valid_keys(block, valid):
    key = f"{block}.colour" if block else "colour"
    with pytest.raises(ConfigError) as caught:
        parse_params(edited(key, 1))
    message = str(caught.value)
    assert message.startswith(f"{block or 'params.yaml'}: unknown key(s) ['colour']; valid keys: [")
    listed = re.search(r"valid keys: (\[.*\])", message).group(1)
    assert all(repr(k) in listed for k in valid), message


@pytest.mark.parametrize("key, value, reason", BAD_VALUES)
def test_a_bad_value_is_named_by_its_dotted_key(key, value, reason):
    with pytest.raises(ConfigError) as caught:
        parse_params(edited(key, value))
    named = re.sub(r"^(tiers\.\w+|split)\.demo\.", r"\1.", key)
    assert str(caught.value).startswith(f"{named}: {reason}"), str(caught.value)


def test_a_block_that_is_not_a_mapping_is_named():
    with pytest.raises(ConfigError, match=r"^features\.frontend: expected a mapping, got int"):
        parse_params(edited("features.frontend", 40))
    with pytest.raises(ConfigError, match=r"^tiers\.boss: expected a mapping"):
        parse_params(edited("tiers.boss", "big"))


def test_a_missing_block_or_key_is_named():
    params = copy.deepcopy(PARAMS)
    del params["evaluate"]
    with pytest.raises(ConfigError, match="^params.yaml: .*missing 1 required .*'evaluate'"):
        parse_params(params)
    params = copy.deepcopy(PARAMS)
    del params["evaluate"]["max_frames"]
    with pytest.raises(ConfigError, match="^evaluate: .*missing 1 required .*'max_frames'"):
        parse_params(params)


def _leaves(cls, prefix=""):
    """Dotted names of a dataclass's fields that are not themselves dataclasses."""
    for f in dataclasses.fields(cls):
        hint = f.type
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_every_params_key_is_checked_and_read():
    """Every key of params.yaml is a field of the checked Params (parse_params rejects any
    other), and every field is read as an attribute by the stages or the library."""
    parse_params(PARAMS)
    code = "".join(
        p.read_text() for folder in ("pipeline", "src") for p in (REPO / folder).rglob("*.py")
    )
    tier = load_params().tier("boss")
    fields = [*_leaves(Params), *(f"tier.{k}" for k in _leaves(type(tier)))]
    read = r"\.{}\b(?!\s*:)(?!\s*=[^=])"  # an attribute, neither declared nor assigned
    unread = [k for k in fields if not re.search(read.format(k.rpartition(".")[2]), code)]
    assert not unread


def test_the_split_block_takes_its_profile():
    assert parse_params(PARAMS).split.heldout_speakers == 0.2  # the demo's held-out speakers
    assert parse_params({**PARAMS, "profile": "course"}).split.heldout_speakers == 0.0
    assert parse_params(PARAMS).paths.embeddings("boss") == Path("data/embed/boss")
