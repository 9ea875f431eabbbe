import csv
import shutil

import pytest

from spkid.__main__ import main
from spkid.evaluate.bank import load_bank


def speaker_dirs(trained, root, speakers, take="_t0"):
    """One folder per speaker of ``speakers`` holding its ``take`` test WAV(s)."""
    dirs = []
    for speaker in speakers:
        folder = root / speaker
        folder.mkdir(parents=True)
        for path in trained.labels:
            if trained.labels[path] == speaker and take in path:
                shutil.copy(path, folder)
        dirs.append(str(folder))
    return dirs


def clips(trained, speaker, take="_t1"):
    return [p for p, s in trained.labels.items() if s == speaker and take in p]


def rows(capsys):
    return list(csv.DictReader(capsys.readouterr().out.splitlines()))


@pytest.fixture
def enrolled(trained, tmp_path, capsys):
    """Two of the knowing model's speakers enrolled from their first test WAV (a text file
    posing as a WAV beside one): (bank path, the two speakers, a third, main's status and
    standard error)."""
    speakers = sorted(set(trained.labels.values()))
    dirs = speaker_dirs(trained, tmp_path / "enrol", speakers[:2])
    (tmp_path / "enrol" / speakers[0] / "text.wav").write_text("not audio")
    bank = tmp_path / "lab.npz"
    status = main(["enroll", "--model", str(trained.knowing), "--bank", str(bank), *dirs])
    return bank, speakers[:2], speakers[2], status, capsys.readouterr().err


def test_enrolled_speakers_are_named_and_a_stranger_is_unknown(trained, enrolled, capsys):
    bank, known, stranger, status, err = enrolled
    assert status == 1  # the text file failed, the rest were enrolled
    assert "text.wav: unreadable audio" in err and f"enrolled {known[0]} from 1 files" in err
    assert [(s, int(n)) for s, n in zip(load_bank(bank).names, load_bank(bank).counts)] == [
        (known[0], 1),
        (known[1], 1),
    ]
    files = [*clips(trained, known[0]), *clips(trained, known[1]), *clips(trained, stranger)]
    args = ["identify", "--model", str(trained.knowing), "--bank", str(bank), *files]
    assert main([*args, "--threshold", "-1"]) == 0
    table = rows(capsys)
    assert [r["speaker"] for r in table[:2]] == known  # their unseen clips, named right
    assert table[2]["speaker"] in known  # -1: everyone is somebody
    cut = table[2]["score"]  # the stranger's best cosine: not above it means unknown
    assert main([*args, "--threshold", cut]) == 0
    answers = [r["speaker"] for r in rows(capsys)]
    assert answers[2] == "unknown"
    for row, answer in zip(table[:2], answers):
        assert answer == (row["speaker"] if float(row["score"]) > float(cut) else "unknown")
    assert table[2]["top_k"].split()[0].split(":")[0] in known  # the cosines are listed


def test_a_threshold_stored_in_the_bank_is_identify_s_default(trained, enrolled, tmp_path):
    bank, _known, stranger, *_ = enrolled
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"openset": {"threshold": 0.999999}}')
    assert main(["enroll", "--bank", str(bank), "--threshold", str(metrics)]) == 0
    assert load_bank(bank).threshold == 0.999999
    out = tmp_path / "out.csv"
    files = clips(trained, stranger)
    args = ["identify", "--model", str(trained.knowing), "--bank", str(bank), "--out", str(out)]
    assert main([*args, *files]) == 0
    assert [r["speaker"] for r in csv.DictReader(out.open())] == ["unknown"]


def test_another_model_s_bank_is_refused_naming_the_file(trained, enrolled):
    bank, known, _stranger, *_ = enrolled
    before = bank.read_bytes()
    other = ["--model", str(trained.checkpoint), "--bank", str(bank)]
    with pytest.raises(SystemExit) as refused:
        main(["identify", *other, *clips(trained, known[0])])
    assert str(bank) in str(refused.value) and "scores across models mean nothing" in str(
        refused.value
    )
    with pytest.raises(SystemExit) as refused:
        main(["enroll", *other, "--name", "x", str(bank.parent / "enrol" / known[0])])
    assert str(bank) in str(refused.value) and "enrol into a new bank" in str(refused.value)
    assert bank.read_bytes() == before  # nothing written


def test_list_and_remove_round_trip(enrolled, capsys):
    bank, known, _stranger, *_ = enrolled
    capsys.readouterr()
    assert main(["enroll", "--bank", str(bank), "--remove", known[0], "--list"]) == 0
    assert rows(capsys) == [{"speaker": known[1], "utterances": "1"}]
    with pytest.raises(SystemExit) as refused:
        main(["enroll", "--bank", str(bank), "--remove", known[0]])
    assert f"{known[0]!r} is not enrolled" in str(refused.value)


def test_a_folder_of_bad_files_enrols_nobody_and_writes_no_bank(trained, tmp_path, capsys):
    (tmp_path / "mute").mkdir()
    (tmp_path / "mute" / "text.wav").write_text("not audio")
    bank = tmp_path / "bank.npz"
    assert (
        main(
            ["enroll", "--model", str(trained.knowing), "--bank", str(bank), str(tmp_path / "mute")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "text.wav: unreadable audio" in err and "mute not enrolled" in err
    assert not bank.exists()
