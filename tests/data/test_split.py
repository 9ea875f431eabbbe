import numpy as np
import pytest

from spkid.data.split import split_indices


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
