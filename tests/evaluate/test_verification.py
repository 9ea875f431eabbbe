import json

import numpy as np
import pytest

from spkid.config import ConfigError, build
from spkid.data.split import SplitConfig
from spkid.evaluate.bank import normalise
from spkid.evaluate.embed import read_fused, read_meta
from spkid.evaluate.verification import (
    VerifyConfig,
    asnorm,
    cosine_scores,
    equal_error_rate,
    make_trials,
    min_dcf,
    verification_metrics,
    verify,
)
from tests.evaluate.test_embed import embedded_project, second_member


def trial_set(targets, nontargets):
    scores = np.array([*targets, *nontargets])
    return scores, np.array([True] * len(targets) + [False] * len(nontargets))


def test_eer_of_hand_computed_cases():
    # miss 1/3 and false alarm 1/3 between the scores 0.7 and 0.3
    assert equal_error_rate(*trial_set([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])) == pytest.approx(1 / 3)
    # a target and a non-target tied at 0.5: the ROC steps diagonally from (fa 0, miss 1/2)
    # to (1/2, 0) and crosses miss = fa halfway
    assert equal_error_rate(*trial_set([0.9, 0.5], [0.5, 0.1])) == pytest.approx(0.25)
    assert equal_error_rate(*trial_set([0.9, 0.8], [0.2, 0.1])) == 0.0
    assert equal_error_rate(*trial_set([0.2, 0.1], [0.9, 0.8])) == 1.0


def test_min_dcf_of_a_hand_computed_case():
    # descending: .9T .8N .6T .5N .4T .3T .2N .1N; (fa, miss) at each cut:
    # (0,1) (0,.75) (.25,.75) (.25,.5) (.5,.5) (.5,.25) (.5,0) (.75,0) (1,0)
    trials = trial_set([0.9, 0.6, 0.4, 0.3], [0.8, 0.5, 0.2, 0.1])
    assert min_dcf(*trials, 0.05) == pytest.approx(0.05 * 0.75 / 0.05)  # at (0, .75)
    assert min_dcf(*trials, 0.5) == pytest.approx(0.5 * 0.5 / 0.5)  # at (.5, 0)
    assert min_dcf(*trials, 0.5, c_miss=1.0, c_fa=3.0) == pytest.approx(0.375 / 0.5)  # (0,.75)
    assert set(verification_metrics(*trials)) == {"eer", "mindcf_p01", "mindcf_p05"}
    assert verification_metrics(*trials)["eer"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both target and non-target"):
        min_dcf(np.array([0.1, 0.2]), np.array([True, True]), 0.01)


def test_asnorm_equals_its_formula_on_a_tiny_cohort():
    rng = np.random.default_rng(0)
    emb, cohort = normalise(rng.normal(size=(4, 3))), normalise(rng.normal(size=(5, 3)))
    trials = np.array([[0, 1], [0, 2], [2, 3], [1, 3]])
    raw = cosine_scores(emb, trials)
    expected = []
    for (a, b), s in zip(trials, raw):
        sides = []
        for u in (a, b):
            top = sorted((float(emb[u] @ c) for c in cohort), reverse=True)[:2]
            mean = sum(top) / 2
            std = (sum((t - mean) ** 2 for t in top) / 2) ** 0.5
            sides.append((s - mean) / std)
        expected.append(sum(sides) / 2)
    np.testing.assert_allclose(asnorm(raw, emb, trials, cohort, top=2), expected, rtol=1e-5)
    np.testing.assert_allclose(raw, [emb[a] @ emb[b] for a, b in trials], rtol=1e-6)


def test_trials_are_every_pair_when_under_the_caps():
    speakers = ["a", "a", "a", "b", "b", "c"]
    trials, target = make_trials(speakers, 100, 100, seed=0)
    assert (target.sum(), (~target).sum()) == (3 + 1, 15 - 4)
    assert len({tuple(t) for t in trials}) == 15 and (trials[:, 0] < trials[:, 1]).all()
    same = np.array([speakers[i] == speakers[j] for i, j in trials])
    assert (same == target).all() and target[:4].all()


def test_trials_are_drawn_by_seed_to_the_caps():
    speakers = [f"s{i // 5}" for i in range(100)]  # 20 speakers: 200 target, 4750 non-target
    trials, target = make_trials(speakers, 50, 300, seed=0)
    assert (target.sum(), (~target).sum()) == (50, 300)
    assert len({tuple(t) for t in trials}) == 350 and (trials[:, 0] < trials[:, 1]).all()
    same = np.array([speakers[i] == speakers[j] for i, j in trials])
    assert (same == target).all()
    np.testing.assert_array_equal(make_trials(speakers, 50, 300, seed=0)[0], trials)
    assert not np.array_equal(make_trials(speakers, 50, 300, seed=1)[0], trials)


def test_verify_config_rejects_bad_values_and_unknown_keys():
    assert build(VerifyConfig, {"enroll": 3}, "verify").enroll == 3
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['trials'\]"):
        build(VerifyConfig, {"trials": 3}, "verify")
    with pytest.raises(ConfigError, match="verify.false_alarm: must be in"):
        VerifyConfig(false_alarm=1.0)
    with pytest.raises(ConfigError, match="verify.cohort_top"):
        VerifyConfig(cohort_top=1)
    with pytest.raises(ConfigError, match="verify.enroll"):
        VerifyConfig(enroll=0)


def test_verify_writes_metrics_and_a_det_curve(tmp_path):
    folder, _store, split, _model = embedded_project(tmp_path)
    config = VerifyConfig(target_trials=20, enroll=3)
    metrics = verify([folder], tmp_path / "v", config, seed=0)
    # 2 held-out speakers of 8 utterances: 2 * 28 same-speaker pairs, cut to 20; 64 others
    assert metrics["trials"] == {"target": 20, "nontarget": 64, "speakers": 2, "utterances": 16}
    assert metrics["asnorm"]["cohort"] == 4 and metrics["asnorm"]["top"] == 4
    for kind in ("cosine", "asnorm"):
        assert 0.0 <= metrics[kind]["eer"] <= 1.0 and metrics[kind]["mindcf_p01"] >= 0.0
    openset = metrics["openset"]
    assert (openset["enrolled_speakers"], openset["genuine_probes"]) == (1, 5)
    assert (openset["impostor_speakers"], openset["impostor_probes"]) == (1, 8)
    assert json.loads((tmp_path / "v/metrics.json").read_text()) == metrics
    assert (tmp_path / "v/det.png").stat().st_size > 1000
    assert len(split["heldout_speakers"]) == 2


def test_verify_without_heldout_speakers_says_so(tmp_path):
    folder, store, split, _model = embedded_project(tmp_path, SplitConfig(valid_ratio=0.25))
    assert read_meta(folder)["heldout"] == 0
    assert verify([folder], tmp_path / "v", VerifyConfig(), seed=0) == {"heldout_speakers": 0}
    assert (tmp_path / "v/det.png").exists()
    both = [folder, second_member(tmp_path, store, split)]  # an ensemble: the same answer
    assert verify(both, tmp_path / "e", VerifyConfig(), seed=0) == {"heldout_speakers": 0}
    assert json.loads((tmp_path / "e/metrics.json").read_text()) == {"heldout_speakers": 0}


def test_verify_of_an_ensemble_scores_the_mean_of_its_members_cosines(tmp_path):
    first, store, split, _model = embedded_project(tmp_path)
    second = second_member(tmp_path, store, split)
    config = VerifyConfig(target_trials=20, enroll=3)
    fused = verify([first, second], tmp_path / "v", config, seed=0)
    alone = [verify([f], tmp_path / f"v{i}", config, seed=0) for i, f in enumerate([first, second])]
    assert fused["trials"] == alone[0]["trials"]  # the same trials, other scores
    emb, _uids, speakers = read_fused([first, second], "heldout")
    trials, target = make_trials(speakers, 20, config.nontarget_trials, seed=0)
    mean = sum(cosine_scores(read_fused([f], "heldout")[0], trials) for f in (first, second)) / 2
    np.testing.assert_allclose(cosine_scores(emb, trials), mean, atol=1e-6)
    assert fused["cosine"]["eer"] == pytest.approx(equal_error_rate(mean, target), abs=1e-6)
    assert fused["openset"]["genuine_probes"] == alone[0]["openset"]["genuine_probes"]
