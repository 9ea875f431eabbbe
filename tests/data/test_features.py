"""Tests of the features stage's library call on an HW4 folder: both stores change together,
bad inputs of either set are named, and skip keeps every store consistent."""

import json
import shutil

import numpy as np
import pytest
import torch

from spkid.data.errors import InputError
from spkid.data.features import build_features
from spkid.data.frontend import FrontEnd
from spkid.data.hw4 import METADATA_FILE, TESTDATA_FILE, write_hw4
from spkid.data.sources import SourceConfig
from spkid.data.store import open_store

SPEAKER2ID = {"id10001": 0, "id10002": 1, "id10003": 2}


@pytest.fixture
def dataset(tmp_path):
    """An HW4 folder: id10002 has three utterances, the others two; three test utterances."""
    rng = np.random.default_rng(0)
    speakers = ["id10001", "id10001", "id10002", "id10002", "id10002", "id10003", "id10003"]
    pool = [
        (s, rng.standard_normal((6 + i, 40)).astype(np.float32)) for i, s in enumerate(speakers)
    ]
    test = [rng.standard_normal((5 + i, 40)).astype(np.float32) for i in range(3)]
    write_hw4(tmp_path / "Dataset", pool, test, SPEAKER2ID)
    return tmp_path / "Dataset"


def _build(root, on_error="fail"):
    out = root.parent / "features"
    return build_features(
        SourceConfig(name="hw4", dir=str(root)),
        FrontEnd(),
        on_error,
        1,
        out / "train",
        out / "test",
        root.parent / "work",
    )


def _listing(root, name):
    return json.loads((root / name).read_text())


def _test_entries(root):
    return _listing(root, TESTDATA_FILE)["utterances"]


def _train_entries(root, speaker):
    return _listing(root, METADATA_FILE)["speakers"][speaker]


def _snapshot(root):
    out = root.parent / "features"
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _poison(path, value=float("nan")):
    t = torch.zeros(5, 40)
    t[1, 3] = value
    torch.save(t, path)


def test_a_failing_test_set_leaves_the_old_pair(dataset):
    """The changed pool loads fine, then a test tensor fails: neither store changes."""
    _build(dataset)
    before = _snapshot(dataset)
    changed = dataset / _train_entries(dataset, "id10001")[0]["feature_path"]
    torch.save(torch.load(changed, weights_only=True) + 1, changed)
    bad = dataset / _test_entries(dataset)[2]["feature_path"]
    _poison(bad)
    with pytest.raises(InputError) as info:
        _build(dataset)
    assert (info.value.path, info.value.reason) == (str(bad), "tensor holds NaN values")
    assert _snapshot(dataset) == before
    assert sorted(p.name for p in (dataset.parent / "features").iterdir()) == ["test", "train"]


def test_skip_lists_each_set_s_rejects_in_its_own_store(dataset):
    entries = _test_entries(dataset)
    _poison(dataset / entries[0]["feature_path"], 1e5)
    (dataset / entries[1]["feature_path"]).unlink()
    expanded = dataset.resolve() / _train_entries(dataset, "id10001")[0]["feature_path"]
    torch.save(torch.zeros(1, 40).expand(10**9, 40), expanded)  # 160 bytes claiming 160 GB
    written = _build(dataset, on_error="skip")
    (train_reject,) = written["train"]["rejected"]
    assert train_reject["path"] == str(expanded)
    assert train_reject["reason"].endswith("but its storage holds 160 bytes")
    rejected = written["test"]["rejected"]
    assert [(r["uid"], r["path"]) for r in rejected] == [
        (entries[1]["feature_path"], str(dataset.resolve() / entries[1]["feature_path"])),
        (entries[0]["feature_path"], str(dataset.resolve() / entries[0]["feature_path"])),
    ]
    assert rejected[0]["reason"] == "listed in testdata.json: feature file is missing"
    assert (
        "value 100000 at frame 1, mel 3 is beyond the store's float16 range"
        in (rejected[1]["reason"])
    )
    test = open_store(dataset.parent / "features/test")
    assert test.uids == [entries[2]["feature_path"]] and test.meta == written["test"]
    assert test.meta["fallback_speaker"] == "id10002"  # the pool's most frequent speaker


def test_skip_drops_a_speaker_whose_every_file_was_rejected(dataset, capsys):
    for entry in _train_entries(dataset, "id10002"):
        _poison(dataset / entry["feature_path"])
    written = _build(dataset, on_error="skip")
    assert "dropped 1 speakers with no usable utterance from mapping.json: id10002" in (
        capsys.readouterr().err
    )
    assert written["train"]["dropped_speakers"] == ["id10002"]
    assert len(written["train"]["rejected"]) == 3
    features = dataset.parent / "features"
    for name in ("train", "test"):
        mapping = json.loads((features / name / "mapping.json").read_text())
        assert mapping == {
            "speaker2id": {"id10001": 0, "id10003": 1},
            "id2speaker": {"0": "id10001", "1": "id10003"},
        }
    train = open_store(features / "train")
    assert list(train.labels) == [0, 0, 1, 1]
    assert written["test"]["fallback_speaker"] == "id10001"  # a tie goes to the lower id


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_training_file_in_the_test_listing_is_an_error_naming_both(dataset, on_error):
    _build(dataset)
    before = _snapshot(dataset)
    train_uid = _train_entries(dataset, "id10003")[1]["feature_path"]
    test_uid = _test_entries(dataset)[1]["feature_path"]
    data = _listing(dataset, TESTDATA_FILE)
    data["utterances"][1]["feature_path"] = f"./{train_uid}"
    (dataset / TESTDATA_FILE).write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        _build(dataset, on_error)
    assert info.value.path == str(dataset.resolve() / train_uid)
    assert info.value.reason == (
        f"test entry './{train_uid}' is the same file as training entry {train_uid!r}"
    )
    assert test_uid not in info.value.reason
    assert _snapshot(dataset) == before


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_training_utterance_copied_into_the_test_set_is_an_error_naming_both(dataset, on_error):
    _build(dataset)
    before = _snapshot(dataset)
    train_uid = _train_entries(dataset, "id10001")[0]["feature_path"]
    test_uid = _test_entries(dataset)[2]["feature_path"]
    shutil.copy(dataset / train_uid, dataset / test_uid)
    data = _listing(dataset, TESTDATA_FILE)
    data["utterances"][2]["mel_len"] = _train_entries(dataset, "id10001")[0]["mel_len"]
    (dataset / TESTDATA_FILE).write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        _build(dataset, on_error)
    assert info.value.path == str(dataset.resolve() / test_uid)
    assert info.value.reason == (
        f"test entry {test_uid!r} has the same content as training entry {train_uid!r} "
        f"({dataset.resolve() / train_uid})"
    )
    assert _snapshot(dataset) == before


def test_a_mel_len_the_tensor_does_not_have_names_the_file(dataset):
    entry = _train_entries(dataset, "id10003")[0]
    data = _listing(dataset, METADATA_FILE)
    data["speakers"]["id10003"][0]["mel_len"] = entry["mel_len"] + 2
    (dataset / METADATA_FILE).write_text(json.dumps(data))
    reason = (
        f"tensor has {entry['mel_len']} frames, but its listing's mel_len is {entry['mel_len'] + 2}"
    )
    with pytest.raises(InputError) as info:
        _build(dataset)
    assert (info.value.path, info.value.reason) == (
        str(dataset.resolve() / entry["feature_path"]),
        reason,
    )
    written = _build(dataset, on_error="skip")
    assert [r["reason"] for r in written["train"]["rejected"]] == [reason]
    assert written["train"]["dropped_speakers"] == []
