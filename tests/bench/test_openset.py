import numpy as np
import pytest

from bench import openset, so762
from spkid import checkpoint
from spkid.data.store import open_store
from spkid.evaluate.bank import empty_bank, enroll, normalise
from spkid.evaluate.verification import asnorm, cohort_stats
from tests.conftest import make_store

SPEAKERS, PER_SPEAKER = 7, 20
TRAINED, HELD = SPEAKERS // 2, SPEAKERS - SPEAKERS // 2  # 3 and 4


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openset") / "store"
    return open_store(make_store(folder, n_speakers=SPEAKERS, per_speaker=PER_SPEAKER))


def speaker_embeddings(store, noise: float, width=16, seed=0) -> np.ndarray:
    """(U, width) unit rows: each speaker's own direction plus noise, in store order."""
    rng = np.random.default_rng(seed)
    names = sorted(set(store.speakers))
    centres = rng.normal(size=(len(names), width))
    rows = [centres[names.index(s)] + noise * rng.normal(size=width) for s in store.speakers]
    return normalise(np.array(rows))


def test_protocol_trains_the_first_half_and_holds_out_the_rest(store):
    part = openset.protocol(store)
    names = sorted(set(store.speakers))
    assert part["trained"] == names[:TRAINED] and part["heldout"] == names[TRAINED:]
    speakers = np.asarray(store.speakers)
    pool = so762.POOL_PER_SPEAKER
    for key, who in (("train", "trained"), ("valid", "trained"), ("cohort", "trained")):
        assert set(speakers[part[key]]) == set(part[who])
    for key, who in (("impostor", "trained"), ("enrol", "heldout"), ("genuine", "heldout")):
        assert set(speakers[part[key]]) == set(part[who])
    counts = {k: len(v) for k, v in part.items()}
    assert counts == {
        "trained": TRAINED,
        "heldout": HELD,
        "train": TRAINED * (pool - 1),
        "valid": TRAINED,
        "cohort": TRAINED * pool,
        "impostor": TRAINED * (PER_SPEAKER - pool),
        "enrol": HELD * pool,
        "genuine": HELD * (PER_SPEAKER - pool),
    }
    assert np.array_equal(np.sort(np.r_[part["train"], part["valid"]]), part["cohort"])
    for name in part["heldout"]:  # enrolment: the speaker's first 8 utterances by name
        own = sorted(store.uids[i] for i in np.flatnonzero(speakers == name))
        assert sorted(store.uids[i] for i in part["enrol"] if speakers[i] == name) == own[:pool]
    every = np.concatenate([part[k] for k in ("cohort", "impostor", "enrol", "genuine")])
    assert sorted(every) == list(range(len(store.uids)))


def test_separable_speakers_score_perfectly_and_noise_does_not(store):
    clean = {w: [speaker_embeddings(store, 0.05)] for w in openset.WINDOWS}
    result = openset.score_embeddings(clean, store, "m", centring=False)
    for window in openset.WINDOWS:
        cosine, normed = (result[window][s] for s in openset.SCORINGS)
        assert (cosine["top1"], cosine["dir_fa01"], cosine["dir_fa05"], cosine["eer"]) == (
            1,
            1,
            1,
            0,
        )
        assert (normed["top1"], normed["dir_fa01"]) == (1, 1) and normed[
            "eer"
        ] < 0.01  # 3 in the cohort
    counts = result["counts"]
    held = HELD * PER_SPEAKER
    assert counts["target_trials"] == HELD * PER_SPEAKER * (PER_SPEAKER - 1) // 2
    assert counts["nontarget_trials"] == (held * held - HELD * PER_SPEAKER**2) // 2
    assert (counts["cohort_speakers"], counts["cohort_top"]) == (TRAINED, TRAINED)
    noisy = {w: [speaker_embeddings(store, 3.0)] for w in openset.WINDOWS}
    row = openset.score_embeddings(noisy, store, "m", centring=True)["full"]["cosine"]
    assert row["top1"] < 1 and row["eer"] > 0 and row["dir_fa01"] <= row["dir_fa05"]


def test_bank_scores_asnorm_each_probe_against_each_speaker_mean(store):
    emb = speaker_embeddings(store, 1.0)
    part = openset.protocol(store)
    bank = empty_bank("m", emb.shape[1])
    for name in part["heldout"]:
        rows = [i for i in part["enrol"] if store.speakers[i] == name]
        bank = enroll(bank, name, emb[rows], "m")
    cohort = normalise(emb[part["cohort"]][:5])
    probes = emb[part["genuine"][:4]]
    normed = openset.bank_scores(bank, probes, "m", cohort, top=3)
    means = normalise(bank.means)
    raw = probes @ means.T
    (pm, ps), (mm, ms) = cohort_stats(probes, cohort, 3), cohort_stats(means, cohort, 3)
    expect = 0.5 * ((raw - pm[:, None]) / ps[:, None] + (raw - mm[None]) / ms[None])
    assert np.allclose(normed, expect, atol=1e-5)
    one = asnorm(raw[1:2, 2], np.stack([probes[1], means[2]]), np.array([[0, 1]]), cohort, 3)
    assert np.isclose(normed[1, 2], one[0], atol=1e-5)
    assert np.allclose(openset.bank_scores(bank, probes, "m", None, 3), raw, atol=1e-6)


def test_ensemble_concatenates_unit_embeddings_so_trials_average_cosines(store, tmp_path):
    a, b = speaker_embeddings(store, 1.0, seed=1), speaker_embeddings(store, 1.0, 8, seed=2)
    for name, emb in (("a", a), ("b", 3 * b)):
        openset.save_embeddings(tmp_path / f"{name}.npz", {"full": emb, "window": emb}, store, name)
    members, model = openset.load_embeddings([tmp_path / "a.npz", tmp_path / "b.npz"], store)
    assert model == "a+b" and [m.shape[1] for m in members["full"]] == [16, 8]
    cohort = openset.protocol(store)["cohort"]
    joint = openset.fuse(members["full"], cohort, centring=False)
    assert joint.shape == (len(store.uids), 24)
    assert np.allclose(
        joint[:7] @ joint[7:9].T, (a[:7] @ a[7:9].T + b[:7] @ b[7:9].T) / 2, atol=1e-6
    )
    centred = openset.fuse(members["full"], cohort, centring=True)
    a0, b0 = (normalise(x - x[cohort].mean(0)) for x in (a, b))  # each member on its own
    assert np.allclose(
        centred[:7] @ centred[7:9].T, (a0[:7] @ a0[7:9].T + b0[:7] @ b0[7:9].T) / 2, atol=1e-5
    )
    bad = tmp_path / "bad.npz"
    np.savez(bad, uids=np.array(store.uids[::-1]), model=np.array("c"), full=a, window=a)
    with pytest.raises(ValueError, match="bad.npz: its utterances are not the store's"):
        openset.load_embeddings([bad], store)


def test_a_trained_model_knows_only_the_trained_speakers(store, tmp_path, monkeypatch):
    monkeypatch.setattr(so762, "STEPS", 8)
    monkeypatch.setitem(openset.WINDOWS, "window", 32)  # the store's utterances: 40-160 frames
    tiny = {
        "model": {"d_model": 16, "layers": 1, "heads": 2, "ffn": 32, "prenet": "linear"},
        "recipe": {"batch": 8, "valid_every": 4, "log_every": 4},
    }
    result, emb, digest = openset.train_and_embed("boss", tiny, 0, store, tmp_path / "w")
    best = checkpoint.load(tmp_path / "w" / checkpoint.BEST)
    trained = openset.protocol(store)["trained"]
    assert sorted(best["speaker2id"]) == trained and best["model_args"]["n_classes"] == TRAINED
    assert result["steps"] == 8 and result["set"] == tiny and len(digest) == 64
    assert {w: e.shape for w, e in emb.items()} == {
        w: (len(store.uids), result["dim"]) for w in openset.WINDOWS
    }
    assert np.allclose(np.linalg.norm(emb["window"], axis=1), 1, atol=1e-4)
    assert not np.allclose(emb["window"], emb["full"])  # utterances longer than the window
    assert set(result["closed_top1"]) == set(openset.WINDOWS)
