from dataclasses import replace

import numpy as np
import pytest
import torch

from spkid.evaluate.bank import (
    BankError,
    best_above,
    empty_bank,
    enroll,
    listing,
    load_bank,
    model_digest,
    open_bank,
    remove,
    save_bank,
    score,
)

MODEL = "a" * 64
OTHER = "b" * 64


def unit(*rows):
    x = np.array(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def two_speakers():
    bank = enroll(empty_bank(MODEL, 2), "ann", np.array([[2.0, 0.0], [0.0, 3.0]]), MODEL)
    return enroll(bank, "bob", np.array([[-1.0, 0.0]]), MODEL)


def test_enrolment_is_the_mean_of_normalised_embeddings_and_extends():
    bank = two_speakers()
    assert listing(bank) == [("ann", 2), ("bob", 1)]
    np.testing.assert_allclose(bank.means, [[0.5, 0.5], [-1.0, 0.0]])
    more = enroll(bank, "ann", np.array([[0.0, -5.0]]), MODEL)  # mean over all three
    np.testing.assert_allclose(more.means[0], [1 / 3, 0.0], atol=1e-7)
    assert listing(more) == [("ann", 3), ("bob", 1)] and listing(bank)[0] == ("ann", 2)


def test_scores_are_cosines_to_the_means_and_unknown_below_the_threshold():
    bank = two_speakers()
    probes = np.array([[1.0, 1.0], [-2.0, 0.1], [1.0, -1.0]])
    np.testing.assert_allclose(score(bank, probes, MODEL)[0], [1.0, -(2**-0.5)], atol=1e-6)
    assert best_above(score(bank, probes, MODEL), 0.5).tolist() == [0, 1, -1]  # ann, bob, none
    assert best_above(score(empty_bank(MODEL, 2), probes, MODEL), -1.0).tolist() == [-1] * 3


def test_remove_and_list():
    bank = remove(two_speakers(), "ann")
    assert listing(bank) == [("bob", 1)] and bank.means.shape == (1, 2)
    with pytest.raises(BankError, match=r"'carl' is not enrolled; enrolled: \['bob'\]"):
        remove(bank, "carl")


def test_a_bank_round_trips_through_its_file(tmp_path):
    bank = two_speakers()
    save_bank(bank, tmp_path / "lab.npz")
    back = load_bank(tmp_path / "lab.npz")
    assert (back.model, back.dim, back.names) == (MODEL, 2, ("ann", "bob"))
    np.testing.assert_array_equal(back.means, bank.means)
    np.testing.assert_array_equal(back.counts, bank.counts)
    assert [p.name for p in tmp_path.iterdir()] == ["lab.npz"]  # no temporary left
    assert listing(open_bank(tmp_path / "new.npz", MODEL, 2)) == []


def test_a_stored_threshold_survives_enrolment_removal_and_the_file(tmp_path):
    assert load_bank_saved(two_speakers(), tmp_path).threshold is None
    bank = replace(two_speakers(), threshold=0.75)
    bank = remove(enroll(bank, "cy", np.array([[1.0, 1.0]]), MODEL), "bob")
    assert load_bank_saved(bank, tmp_path).threshold == 0.75


def load_bank_saved(bank, folder):
    save_bank(bank, folder / "bank.npz")
    return load_bank(folder / "bank.npz")


def test_another_models_embeddings_are_refused(tmp_path):
    bank = two_speakers()
    with pytest.raises(BankError, match="model aaaaaaaaaaaa.*model bbbbbbbbbbbb"):
        enroll(bank, "carl", unit([1, 0]), OTHER)
    with pytest.raises(BankError, match="these come from model bbbbbbbbbbbb"):
        score(bank, unit([1, 0]), OTHER)
    with pytest.raises(BankError, match="2-wide embeddings, these are 3-wide"):
        enroll(bank, "carl", unit([1, 0, 0]), MODEL)
    save_bank(bank, tmp_path / "lab.npz")
    with pytest.raises(BankError, match=r"lab.npz: the bank holds embeddings of model aaaa"):
        open_bank(tmp_path / "lab.npz", OTHER, 2)


def test_bad_enrolment_and_bad_files_are_refused_by_name(tmp_path):
    with pytest.raises(BankError, match="ann: enrolment needs"):
        enroll(empty_bank(MODEL, 2), "ann", np.zeros((0, 2)), MODEL)
    (tmp_path / "text.npz").write_text("not a bank")
    with pytest.raises(BankError, match="text.npz: not an enrolment bank"):
        load_bank(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(BankError, match=r"other.npz: not an enrolment bank \(it lacks"):
        load_bank(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_bank(tmp_path / "missing.npz")


def test_model_digest_follows_the_weights():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert model_digest(a) != model_digest(b)
    b.load_state_dict(a.state_dict())
    assert model_digest(a) == model_digest(b) and len(model_digest(a)) == 64
    assert model_digest(a.to(torch.bfloat16)) != model_digest(b)
