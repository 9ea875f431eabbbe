import numpy as np
import pytest

from spkid.data.split import (
    SplitConfig,
    heldout_speakers,
    split_indices,
    split_utterances,
    trained_mapping,
)


def test_split_is_stratified_per_speaker_and_deterministic():
    speakers = [f"s{i // 20}" for i in range(100)]
    train, valid = split_indices(speakers, speakers, 0.1, seed=3)
    assert len(np.intersect1d(train, valid)) == 0 and len(train) + len(valid) == 100
    per = np.bincount([int(speakers[i][1:]) for i in valid])
    assert (per == 2).all()
    again = split_indices(speakers, speakers, 0.1, seed=3)
    assert (again[1] == valid).all()
    assert not (split_indices(speakers, speakers, 0.1, seed=4)[1] == valid).all()


def test_split_groups_sessions():
    speakers = [f"s{i // 20}" for i in range(60)]
    sessions = [f"{speakers[i]}-v{(i % 20) // 4}" for i in range(60)]  # 5 sessions of 4
    train, valid = split_indices(speakers, sessions, 0.2, seed=0)
    train_sessions = {sessions[i] for i in train}
    valid_sessions = {sessions[i] for i in valid}
    assert not train_sessions & valid_sessions
    assert len(valid) == 12


def test_split_keeps_a_training_utterance_for_every_speaker():
    speakers = ["a", "b", "b", "c", "c", "c"]
    train, _valid = split_indices(speakers, speakers, 0.9, seed=0)
    assert {speakers[i] for i in train} == {"a", "b", "c"}


def test_split_rejects_bad_ratio():
    with pytest.raises(ValueError, match="valid_ratio"):
        split_indices(["a"], ["a"], 1.0, seed=0)


@pytest.mark.parametrize("ratio", [0.0, 0.01])
def test_split_rejects_a_ratio_that_leaves_valid_empty(ratio):
    speakers = ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="split.valid_ratio"):
        split_indices(speakers, speakers, ratio, seed=0)


def test_heldout_speakers_are_wholly_out_of_train_and_valid_and_recorded():
    speakers = [f"s{i // 10}" for i in range(100)]  # 10 speakers of 10 utterances
    config = SplitConfig(valid_ratio=0.2, heldout_speakers=0.3)
    split = split_utterances(speakers, speakers, config, seed=1)
    held = set(split["heldout_speakers"])
    assert len(held) == 3 and held == {speakers[i] for i in split["heldout"]}
    assert not held & {speakers[i] for i in split["train"] + split["valid"]}
    assert sorted(split["train"] + split["valid"] + split["heldout"]) == list(range(100))
    assert len(split["heldout"]) == 30 and len(split["valid"]) == 14  # 2 of each trained speaker
    assert split_utterances(speakers, speakers, config, seed=1) == split
    other = split_utterances(speakers, speakers, config, seed=2)
    assert other["heldout_speakers"] != split["heldout_speakers"]


def test_no_heldout_speakers_is_the_closed_set_split():
    speakers = [f"s{i // 20}" for i in range(100)]
    split = split_utterances(speakers, speakers, SplitConfig(valid_ratio=0.1), seed=3)
    train, valid = split_indices(speakers, speakers, 0.1, seed=3)
    assert split == {
        "train": train.tolist(),
        "valid": valid.tolist(),
        "heldout": [],
        "heldout_speakers": [],
    }


@pytest.mark.parametrize("fraction, speakers", [(0.1, 10), (0.9, 10), (0.3, 3)])
def test_too_few_heldout_or_trained_speakers_is_refused(fraction, speakers):
    names = [f"s{i}" for i in range(speakers)]
    with pytest.raises(ValueError, match="split.heldout_speakers"):
        heldout_speakers(names, fraction, seed=0)


def test_trained_mapping_renumbers_the_trained_speakers_in_store_order():
    store = {"a": 0, "b": 1, "c": 2, "d": 3}
    assert trained_mapping(store, ["d", "a", "b", "c", "a"]) == store
    assert trained_mapping(store, ["d", "b", "d"]) == {"b": 0, "d": 1}
