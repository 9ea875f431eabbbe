import json
from pathlib import Path

from spkid.train import checkpoint
from spkid.train.run import (
    RUN_ID_FILE,
    SETTINGS_FILE,
    TRAINING_CODE,
    code_digest,
    discard_if_changed,
)


def leave_training(folder):
    folder.mkdir(exist_ok=True)
    for name in (checkpoint.LAST, checkpoint.BEST, RUN_ID_FILE):
        (folder / name).write_text("x")


def test_only_the_same_training_keeps_its_checkpoints(tmp_path):
    a, b = {"tier": {"lr": 1e-3, "sizes": (1, 2)}, "seed": 0}, {"tier": {"lr": 2e-3}, "seed": 0}
    leave_training(tmp_path)
    assert discard_if_changed(tmp_path, a)  # left by an unknown training: not resumed
    assert not (tmp_path / checkpoint.LAST).exists() and not (tmp_path / RUN_ID_FILE).exists()
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["tier"]["sizes"] == [1, 2]
    leave_training(tmp_path)
    assert not discard_if_changed(tmp_path, a)  # the same settings (tuples as JSON lists)
    assert (tmp_path / checkpoint.LAST).exists()
    assert discard_if_changed(tmp_path, b)
    assert not (tmp_path / checkpoint.BEST).exists()
    (tmp_path / "new").mkdir()
    assert not discard_if_changed(tmp_path / "new", a)  # nothing to discard


def test_code_digest_follows_python_sources_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = code_digest([pkg])
    (pkg / "notes.txt").write_text("not code")
    assert code_digest([pkg]) == before
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_digest([pkg]) != before
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert code_digest([pkg]) == before
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # same bytes, another module
    assert code_digest([pkg]) != before


def test_training_code_is_the_train_and_models_packages():
    import spkid.models
    import spkid.train

    assert {p.resolve() for p in TRAINING_CODE} == {
        Path(spkid.train.__file__).parent.resolve(),
        Path(spkid.models.__file__).parent.resolve(),
    }
