import numpy as np
import pytest

from spkid.evaluate.openset import (
    detection_identification_rate,
    openset_metrics,
    openset_protocol,
    threshold_at,
)

SPEAKERS = [f"s{i % 4}" for i in range(24)]  # 4 speakers of 6 utterances, interleaved


def test_threshold_accepts_at_most_the_false_alarm_rate():
    impostors = np.arange(100) / 100  # 0.00 .. 0.99
    assert threshold_at(impostors, 0.01) == 0.98  # accepts 0.99 only: 1 %
    assert threshold_at(impostors, 0.05) == 0.94  # accepts 0.95 .. 0.99: 5 %
    assert threshold_at(impostors, 0.001) == 0.99  # accepts none
    for rate in (0.01, 0.05, 0.2):
        assert np.mean(impostors > threshold_at(impostors, rate)) <= rate


def test_dir_counts_accepted_and_right_genuine_probes():
    best, correct = np.array([0.99, 0.97, 0.995, 0.5]), np.array([True, True, False, True])
    assert detection_identification_rate(best, correct, 0.98) == 0.25
    assert detection_identification_rate(best, correct, 0.0) == 0.75


def test_protocol_halves_the_speakers_and_enrols_from_the_first_utterances():
    part = openset_protocol(SPEAKERS, enroll_count=2, seed=0)
    assert len(part["enrolled"]) == 2 and len(part["impostors"]) == 2
    assert not set(part["enrolled"]) & set(part["impostors"])
    speakers = np.array(SPEAKERS)
    for name in part["enrolled"]:
        own = np.flatnonzero(speakers == name)
        assert set(own[:2]) <= set(part["enrol"]) and set(own[2:]) <= set(part["genuine"])
    assert len(part["enrol"]) == 4 and len(part["genuine"]) == 8 and len(part["impostor"]) == 12
    assert set(speakers[part["impostor"]]) == set(part["impostors"])
    assert openset_protocol(SPEAKERS, 2, seed=0)["enrolled"] == part["enrolled"]


def test_protocol_refuses_too_few_utterances_or_speakers():
    with pytest.raises(ValueError, match="verify.enroll: s. has 6 utterances; enrolling 6"):
        openset_protocol(SPEAKERS, enroll_count=6, seed=0)
    with pytest.raises(ValueError, match="needs 2 held-out speakers, got 1"):
        openset_protocol(["a", "a", "a"], enroll_count=1, seed=0)


def test_openset_metrics_of_separable_speakers():
    rng = np.random.default_rng(0)
    emb = np.eye(4)[[int(s[1]) for s in SPEAKERS]] + rng.normal(0, 0.01, (24, 4))
    metrics = openset_metrics(emb, SPEAKERS, "m", enroll_count=2, false_alarm=0.01, seed=0)
    assert metrics["top1"] == 1.0 and metrics["dir_fa01"] == metrics["dir_fa05"] == 1.0
    assert metrics["threshold"] < 0.1  # impostors are orthogonal to every enrolled speaker
    assert (metrics["genuine_probes"], metrics["impostor_probes"]) == (8, 12)
