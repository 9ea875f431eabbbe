import csv
import shutil

import pytest
import torch

from spkid import checkpoint
from spkid.__main__ import main
from spkid.evaluate.bank import load_bank
from spkid.models import SpeakerNet
from spkid.serve.identifier import Identifier
from spkid.train.config import TierConfig
from tests.evaluate.test_embed import MODEL, RECIPE


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


def cosine_checkpoint(trained, path):
    """An untrained network with a cosine (aamsoftmax) head over the knowing model's four
    speakers, whose class weight of the third speaker is the embedding of that speaker's clip
    ``_t1``: that clip scores cosine 1 against its trained class. Returns (path, the clip, the
    speaker)."""
    speakers = sorted(set(trained.labels.values()))
    speaker2id = {s: i for i, s in enumerate(speakers)}
    torch.manual_seed(0)
    model = SpeakerNet(MODEL, 40, len(speakers)).eval()
    clip = clips(trained, speakers[2])[0]
    identifier = Identifier.from_checkpoints([trained.knowing])  # its front end
    identifier.models = [model]
    with torch.no_grad():
        model.head.weight[2] = torch.from_numpy(identifier.embed([identifier.audio(clip)])[0])
    checkpoint.save(path, model, TierConfig(MODEL, RECIPE), 40, speaker2id)
    return path, clip, speakers[2]


@pytest.fixture
def with_classes(trained, tmp_path, capsys):
    """cosine_checkpoint's model, its bank enrolling the first speaker from its ``_t0`` clip,
    and the identify arguments for that clip, the trained clip and a stranger's clip."""
    model, trained_clip, trained_speaker = cosine_checkpoint(trained, tmp_path / "cos.pt")
    speakers = sorted(set(trained.labels.values()))
    bank = tmp_path / "bank.npz"
    dirs = speaker_dirs(trained, tmp_path / "cos_enrol", speakers[:1])
    assert main(["enroll", "--model", str(model), "--bank", str(bank), *dirs]) == 0
    enrolled_clip = clips(trained, speakers[0], "_t0")[0]  # scores cosine 1 against its mean
    files = [trained_clip, enrolled_clip, clips(trained, speakers[3])[0]]
    capsys.readouterr()
    args = ["identify", "--model", str(model), "--bank", str(bank), *files]
    return args, (trained_speaker, speakers[0]), bank, model


def test_with_classes_a_voice_is_trained_enrolled_or_unknown(with_classes, capsys):
    args, (trained_speaker, enrolled), _bank, _model = with_classes
    assert main([*args, "--with-classes", "--threshold", "-1"]) == 0
    table = rows(capsys)
    assert list(table[0]) == ["file", "speaker", "kind", "score", "top_k", "error"]
    assert [(r["speaker"], r["kind"]) for r in table[:2]] == [
        (trained_speaker, "trained"),
        (enrolled, "enrolled"),
    ]
    assert float(table[0]["score"]) == pytest.approx(1.0, abs=1e-5)
    assert table[0]["top_k"].startswith(f"{trained_speaker}[trained]:1.0000")
    assert len(table[0]["top_k"].split()) == 5  # of 1 enrolled + 4 trained candidates
    cut = table[2]["score"]  # the third clip's best cosine: not above it means unknown
    assert max(float(r["score"]) for r in table[:2]) > float(cut)
    assert main([*args, "--with-classes", "--threshold", cut]) == 0
    answers = [(r["speaker"], r["kind"]) for r in rows(capsys)]
    assert answers == [(trained_speaker, "trained"), (enrolled, "enrolled"), ("unknown", "unknown")]
    assert main([*args, "--threshold", "-1"]) == 0  # without: only the enrolled speaker
    assert {(r["speaker"], r["kind"]) for r in rows(capsys)} == {(enrolled, "enrolled")}


def test_with_classes_is_refused_for_a_head_without_class_vectors(trained, enrolled):
    bank, known, *_ = enrolled
    args = ["identify", "--model", str(trained.knowing), "--bank", str(bank), "--with-classes"]
    with pytest.raises(SystemExit) as refused:
        main([*args, *clips(trained, known[0])])
    assert "needs a cosine head (amsoftmax or aamsoftmax)" in str(refused.value)
    assert "this network's MLPHead gives its classes no embedding" in str(refused.value)
    with pytest.raises(SystemExit) as refused:
        main(["identify", "--model", str(trained.knowing), "--with-classes", "x.wav"])
    assert "--with-classes needs --bank" in str(refused.value)
