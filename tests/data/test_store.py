import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from spkid.data.errors import InputError
from spkid.data.store import (
    MAX_CHUNK,
    build_store,
    chunk_size,
    dense_mapping,
    load_store,
    open_store,
    staging,
    write_store,
)
from spkid.data.utterance import Utterance
from tests.conftest import make_store


def _load(path, fail_on=()):
    if path in fail_on:
        raise InputError(path, "broken on purpose")
    return np.load(path)


def _sources(folder, n=40, n_mels=3, seed=0):
    """``n`` utterances of 1..60 random frames saved as .npy files; their float32 arrays."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    utts, arrays = [], []
    for i in range(n):
        arrays.append(rng.normal(0, 4, (int(rng.integers(1, 60)), n_mels)).astype(np.float32))
        np.save(folder / f"u{i}.npy", arrays[-1])
        utts.append(Utterance(f"u{i}", f"s{i % 3}", f"s{i % 3}", str(folder / f"u{i}.npy")))
    return utts, arrays


def _build(folder, utts, workers=2, on_error="fail", fail_on=(), **kw):
    loader = partial(_load, fail_on=fail_on)
    speaker2id = {"s0": 0, "s1": 1, "s2": 2}
    return build_store(folder, utts, loader, speaker2id, {}, workers, on_error, "t", **kw)


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
    assert len(meta["digest"]) == 64 and meta["rejected"] == []


def test_store_digest_follows_content(tmp_path):
    a = open_store(make_store(tmp_path / "a", seed=0)).meta["digest"]
    b = open_store(make_store(tmp_path / "b", seed=0)).meta["digest"]
    c = open_store(make_store(tmp_path / "c", seed=1)).meta["digest"]
    assert a == b != c


def test_frames_are_the_loaded_arrays_in_input_order(tmp_path):
    utts, arrays = _sources(tmp_path / "src")
    _build(tmp_path / "s", utts)
    store = open_store(tmp_path / "s")
    assert store.uids == [u.uid for u in utts]
    assert list(store.lengths) == [len(a) for a in arrays]
    for i, array in enumerate(arrays):
        assert np.array_equal(store.features(i), array.astype(np.float16))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_digest_and_frames_do_not_depend_on_the_worker_count(tmp_path):
    utts, _ = _sources(tmp_path / "src")
    assert chunk_size(len(utts), 1) != chunk_size(len(utts), 2)
    one = _build(tmp_path / "one", utts, workers=1)
    two = _build(tmp_path / "two", utts, workers=2)
    assert one["digest"] == two["digest"]
    assert (tmp_path / "one/frames.npy").read_bytes() == (tmp_path / "two/frames.npy").read_bytes()


def test_fail_names_the_file_and_leaves_the_old_store(tmp_path):
    utts, _ = _sources(tmp_path / "src")
    folder = tmp_path / "s"
    _build(folder, utts[:5])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(InputError, match=f"{utts[30].path}: broken on purpose"):
        _build(folder, utts, fail_on=(utts[30].path, utts[35].path))
    broken = [u.path for u in utts[:2]]
    with pytest.raises(InputError, match="nothing kept"):
        no_kept = InputError(tmp_path, "nothing kept")
        _build(folder, utts[:2], on_error="skip", fail_on=broken, empty_error=no_kept)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_skip_lists_the_rejected_after_those_given(tmp_path):
    utts, arrays = _sources(tmp_path / "src")
    folder = tmp_path / "s"
    loader = partial(_load, fail_on=(utts[3].path, utts[17].path))
    earlier = [{"path": "/listing", "reason": "bad entry"}]
    meta = build_store(folder, utts, loader, {}, {"rejected": earlier}, 2, "skip", "t")
    assert meta["rejected"] == earlier + [
        {"path": utts[i].path, "reason": "broken on purpose", "uid": utts[i].uid} for i in (3, 17)
    ]
    store = open_store(folder)
    kept = [i for i in range(len(utts)) if i not in (3, 17)]
    assert store.uids == [utts[i].uid for i in kept] and store.meta == meta
    assert np.array_equal(store.features(3), arrays[4].astype(np.float16))
    assert meta["counts"]["utterances"] == len(kept)


def test_an_empty_store_takes_its_width_from_the_front_end(tmp_path):
    meta = {"frontend": {"n_mels": 7}}
    build_store(tmp_path / "s", [], _load, {}, meta, 2, "fail", "t")
    store = open_store(tmp_path / "s")
    assert len(store) == 0 and store.frames.shape == (0, 7)


def test_build_store_replaces_whole_folder_atomically(tmp_path):
    folder = make_store(tmp_path / "s", n_speakers=2, per_speaker=2)
    (folder / "stale.txt").write_text("x")
    utts, _ = _sources(tmp_path / "src", n=1)
    _build(folder, utts)
    assert not (folder / "stale.txt").exists()
    assert len(open_store(folder)) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["frames.npy", "utterances.csv", "mapping.json", "meta.json"]
    )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_chunk_size_spreads_paths_over_every_worker():
    assert chunk_size(3, 8) == 1
    assert chunk_size(64_666, 16) == MAX_CHUNK
    for n, workers in ((1_000, 16), (10_000, 2), (40, 2)):
        size = chunk_size(n, workers)
        assert 1 <= size <= MAX_CHUNK and -(-n // size) >= 4 * workers


def _save_with_value(folder, value):
    """40 .npy sources, the 8th with ``value`` at frame 2, mel 1."""
    utts, arrays = _sources(folder)
    arrays[7][2, 1] = value
    np.save(utts[7].path, arrays[7])
    return utts


@pytest.mark.parametrize("value", [1e5, -70000.0])
def test_values_beyond_float16_are_rejected_naming_file_and_value(tmp_path, value):
    utts = _save_with_value(tmp_path / "src", value)
    folder = make_store(tmp_path / "s", n_speakers=2, per_speaker=2)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    reason = f"value {value:g} at frame 2, mel 1 is beyond the store's float16 range (+-65504)"
    with pytest.raises(InputError) as info:
        _build(folder, utts)
    assert (info.value.path, info.value.reason) == (utts[7].path, reason)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    meta = _build(folder, utts, on_error="skip")
    assert meta["rejected"] == [{"path": utts[7].path, "reason": reason, "uid": utts[7].uid}]
    assert np.isfinite(open_store(folder).frames).all()


def test_the_largest_float16_value_is_kept(tmp_path):
    utts = _save_with_value(tmp_path / "src", -65504.0)
    _build(tmp_path / "s", utts)
    assert open_store(tmp_path / "s").frames.min() == -65504.0


def test_frames_other_than_the_listing_s_mel_len_are_rejected(tmp_path):
    utts, arrays = _sources(tmp_path / "src")
    claimed = [replace(u, mel_len=len(a)) for u, a in zip(utts, arrays)]
    claimed[5] = replace(claimed[5], mel_len=len(arrays[5]) + 1)
    reason = (
        f"tensor has {len(arrays[5])} frames, but its listing's mel_len is {len(arrays[5]) + 1}"
    )
    with pytest.raises(InputError) as info:
        _build(tmp_path / "s", claimed)
    assert (info.value.path, info.value.reason) == (utts[5].path, reason)
    assert not (tmp_path / "s").exists()
    meta = _build(tmp_path / "s", claimed, on_error="skip")
    assert meta["rejected"] == [{"path": utts[5].path, "reason": reason, "uid": utts[5].uid}]


def test_staged_stores_change_together_or_not_at_all(tmp_path, monkeypatch):
    utts, _ = _sources(tmp_path / "src")
    a, b = make_store(tmp_path / "a", seed=0), make_store(tmp_path / "b", seed=1)
    before = {p: p.read_bytes() for p in sorted(tmp_path.glob("[ab]/*"))}

    def fill(tmps):
        for tmp in tmps:
            write_store(load_store(tmp, utts, _load, 2, "fail", "t"), {"s0": 0}, {})

    with pytest.raises(InputError, match="broken on purpose"), staging(a, b) as tmps:
        fill(tmps[:1])  # the first store is built, then the second fails
        load_store(tmps[1], utts, partial(_load, fail_on=(utts[9].path,)), 2, "fail", "t")
    rename = Path.rename

    def second_swap_fails(self, target):
        if self.name == ".b.tmp":
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", second_swap_fails)
    with pytest.raises(OSError, match="No space left"), staging(a, b) as tmps:
        fill(tmps)
    assert {p: p.read_bytes() for p in sorted(tmp_path.glob("[ab]/*"))} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "src"]
    monkeypatch.undo()
    with staging(a, b) as tmps:
        fill(tmps)
    assert len(open_store(a)) == len(open_store(b)) == len(utts)


def test_dense_mapping_drops_speakers_and_keeps_the_order():
    speaker2id = {"c": 2, "a": 0, "b": 1, "d": 3}
    assert dense_mapping(speaker2id, ["d", "a", "d"]) == ({"a": 0, "d": 1}, ["b", "c"])
