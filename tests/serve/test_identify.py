import csv
import subprocess
import sys

import numpy as np
import soundfile

from spkid.serve.identifier import length_batches
from tests.conftest import clean_env


def identify(args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "spkid", "identify", *args],
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def test_help_documents_the_command(tmp_path):
    done = identify(["--help"], tmp_path)
    assert done.returncode == 0
    for word in (
        "--model",
        "models:/spkid@champion",
        "--top-k",
        "--out",
        "FILE_OR_FOLDER",
        "error",
    ):
        assert word in done.stdout


def test_identify_a_folder_and_bad_files_from_a_checkpoint(trained, tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    soundfile.write(tmp_path / "short.wav", np.full(800, 0.3), 16000)  # 0.05 s
    folder = str(trained.root / "wavs")
    bad = [str(tmp_path / "text.wav"), str(tmp_path / "short.wav"), str(tmp_path / "missing.wav")]
    out = tmp_path / "result.csv"
    done = identify(
        ["--model", str(trained.knowing), folder, *bad, "--top-k", "2", "--out", str(out)],
        tmp_path,
    )
    assert done.returncode == 1, done.stderr  # some files failed, the rest were identified
    rows = {r["file"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == set(trained.labels) | set(bad)
    right = sum(rows[f]["speaker"] == s for f, s in trained.labels.items())
    assert right >= len(trained.labels) - 1
    for f in trained.labels:
        assert len(rows[f]["top_k"].split()) == 2 and rows[f]["error"] == ""
    assert "unreadable audio" in rows[bad[0]]["error"]
    assert "too short" in rows[bad[1]]["error"]
    assert "no such file" in rows[bad[2]]["error"]
    assert "skipped" in done.stderr and "identify" in done.stderr  # the reasons, the progress bar


def test_identify_through_the_run_s_mlflow_model_writes_the_same_speakers(trained, tmp_path):
    files = sorted(trained.labels)[:3]
    env = {"MLFLOW_TRACKING_URI": trained.uri}
    by_run = identify(["--model", f"runs:/{trained.knowing_run_id}/model", *files], tmp_path, env)
    by_file = identify(["--model", str(trained.knowing), *files], tmp_path)
    assert by_run.returncode == 0, by_run.stderr[-2000:]
    speakers = [[r["file"], r["speaker"]] for r in csv.DictReader(by_run.stdout.splitlines())]
    assert speakers == [
        [r["file"], r["speaker"]] for r in csv.DictReader(by_file.stdout.splitlines())
    ]
    assert len(speakers) == 3


def test_length_batches_group_similar_lengths_within_the_frame_budget():
    lengths = [5, 100, 7, 90, 6, 300]
    batches = length_batches(lengths, max_frames=200)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [5]  # the longest alone: 300 frames > 200
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1
    assert batches[1] == [1, 3]
