"""The submission has one row per test listing entry, rejected ones included."""

import csv

import pytest

from spkid.evaluate.submission import write_submission

KNOWN = {"spk0": 0, "spk1": 1}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_rejected_test_utterances_get_the_fallback_speaker_with_a_warning(tmp_path, capsys):
    meta = {
        "fallback_speaker": "spk1",
        "rejected": [
            {"path": "/d/c.pt", "reason": "tensor holds NaN values", "uid": "c.pt"},
            {"path": "/d/testdata.json", "reason": "utterances[4] has no feature_path"},
            {"path": "/d/./a.pt", "reason": "listed twice", "uid": "a.pt"},  # in the store
            {"path": "/d/d.pt", "reason": "feature file is missing", "uid": "d.pt"},
            {"path": "/d/d.pt", "reason": "listed twice", "uid": "d.pt"},
        ],
    }
    counts = write_submission(tmp_path / "s.csv", ["a.pt", "b.pt"], ["spk0", "spk0"], meta, KNOWN)
    assert counts == {"rows": 4, "rejected": 2}
    assert _rows(tmp_path / "s.csv") == [
        ["Id", "Category"],
        ["a.pt", "spk0"],
        ["b.pt", "spk0"],
        ["c.pt", "spk1"],
        ["d.pt", "spk1"],
    ]
    err = capsys.readouterr().err
    assert "warning: /d/c.pt: rejected by the features stage (tensor holds NaN values)" in err
    assert "warning: /d/d.pt: rejected by the features stage (feature file is missing)" in err
    assert "'c.pt' says spk1, the training pool's most frequent speaker" in err
    assert err.count("warning:") == 2


@pytest.mark.parametrize("fallback", [None, "spk9"])
def test_rejected_rows_without_a_known_fallback_are_refused(tmp_path, fallback):
    meta = {"fallback_speaker": fallback, "rejected": [{"path": "p", "reason": "r", "uid": "c"}]}
    with pytest.raises(ValueError, match=f"fallback_speaker {fallback!r} is not a speaker"):
        write_submission(tmp_path / "s.csv", ["a"], ["spk0"], meta, KNOWN)
    assert not (tmp_path / "s.csv").exists()


def test_without_rejects_the_rows_are_the_predictions(tmp_path):
    assert write_submission(tmp_path / "s.csv", ["a"], ["spk1"], {"rejected": []}, KNOWN) == {
        "rows": 1,
        "rejected": 0,
    }
    assert _rows(tmp_path / "s.csv") == [["Id", "Category"], ["a", "spk1"]]
