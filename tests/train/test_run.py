import json

from spkid.train import checkpoint
from spkid.train.run import RUN_ID_FILE, SETTINGS_FILE, discard_if_changed


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
