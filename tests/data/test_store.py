import json
from functools import partial

import numpy as np
import pytest

from spkid.data.errors import InputError
from spkid.data.store import MAX_CHUNK, chunk_size, extract, open_store, write_store
from spkid.data.utterance import Utterance
from tests.conftest import make_store


def _load(path, fail_on=()):
    if path in fail_on:
        raise InputError(path, "broken on purpose")
    return np.full((int(path.split("-")[-1]), 3), 1.5, dtype=np.float32)


def test_store_round_trip(tmp_path):
    folder = make_store(tmp_path / "s", n_speakers=3, per_speaker=4, n_mels=8)
    store = open_store(folder)
    assert len(store) == 12 and store.n_mels == 8
    assert store.frames.dtype == np.float16
    assert store.offsets[0] == 0 and (np.diff(store.offsets) == store.lengths[:-1]).all()
    assert store.frames.shape[0] == store.lengths.sum()
    assert list(store.labels[:4]) == [0] * 4 and store.labels[-1] == 2
    mapping = json.loads((folder / "mapping.json").read_text())
    assert mapping["id2speaker"] == {"0": "spk0", "1": "spk1", "2": "spk2"}
    meta = store.meta
    assert meta["counts"] == {"utterances": 12, "speakers": 3, "frames": int(store.lengths.sum())}
    assert len(meta["digest"]) == 64


def test_store_digest_follows_content(tmp_path):
    a = open_store(make_store(tmp_path / "a", seed=0)).meta["digest"]
    b = open_store(make_store(tmp_path / "b", seed=0)).meta["digest"]
    c = open_store(make_store(tmp_path / "c", seed=1)).meta["digest"]
    assert a == b != c


def test_extract_fail_names_the_file_and_skip_lists_it():
    utts = [Utterance(f"u{i}", "s", "s", f"/f/u-{i + 2}") for i in range(5)]
    loader = partial(_load, fail_on=("/f/u-4",))
    with pytest.raises(InputError, match="/f/u-4: broken on purpose"):
        extract(utts, loader, 2, "fail", "t")
    kept, arrays, rejected = extract(utts, loader, 2, "skip", "t")
    assert [u.uid for u in kept] == ["u0", "u1", "u3", "u4"]
    assert [len(a) for a in arrays] == [2, 3, 5, 6]
    assert rejected == [{"path": "/f/u-4", "reason": "broken on purpose"}]


def test_write_store_replaces_whole_folder_atomically(tmp_path):
    folder = make_store(tmp_path / "s", n_speakers=2, per_speaker=2)
    (folder / "stale.txt").write_text("x")
    utts = [Utterance("a", "x", "x", "/a")]
    write_store(folder, utts, [np.zeros((4, 40), np.float32)], {"x": 0}, {})
    assert not (folder / "stale.txt").exists()
    assert len(open_store(folder)) == 1
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_chunk_size_spreads_paths_over_every_worker():
    assert chunk_size(3, 8) == 1
    assert chunk_size(64_666, 16) == MAX_CHUNK
    for n, workers in ((1_000, 16), (10_000, 2), (40, 2)):
        size = chunk_size(n, workers)
        assert 1 <= size <= MAX_CHUNK and -(-n // size) >= 4 * workers
