"""Tests of the HW4 Dataset-folder source: listing, loading, writing and the synthetic set."""

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from spkid.data.errors import InputError
from spkid.data.hw4 import (
    HW4_N_MELS,
    MAPPING_FILE,
    METADATA_FILE,
    TESTDATA_FILE,
    load_hw4_tensor,
    main,
    make_synthetic_hw4,
    read_hw4,
    write_hw4,
)

SPEAKER2ID = {"id10001": 0, "id10002": 1}


@dataclass
class Custom:
    """A class outside torch's weights_only allowlist."""

    value: int


def _feats(rng, frames: int, n_mels: int = HW4_N_MELS) -> np.ndarray:
    return rng.standard_normal((frames, n_mels)).astype(np.float32)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _entries(root: Path, speaker: str) -> list[dict]:
    return json.loads((root / METADATA_FILE).read_text())["speakers"][speaker]


@pytest.fixture
def tiny(tmp_path):
    """A written Dataset folder: (root, pool, test) with the arrays that went in."""
    rng = np.random.default_rng(1)
    pool = [("id10002", _feats(rng, 7)), ("id10001", _feats(rng, 5)), ("id10001", _feats(rng, 9))]
    test = [_feats(rng, 4), _feats(rng, 6)]
    root = tmp_path / "Dataset"
    write_hw4(root, pool, test, SPEAKER2ID)
    return root, pool, test


@pytest.fixture
def outside(tmp_path) -> Path:
    """A valid feature file outside the dataset folder."""
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(3, HW4_N_MELS), path)
    return path


# ----------------------------------------------------------------------------- round trip


def test_round_trip_lists_and_loads_what_was_written(tiny):
    root, pool, test = tiny
    read_pool, read_test, speaker2id, rejected = read_hw4(root)
    assert speaker2id == SPEAKER2ID
    assert rejected == []
    # metadata.json lists speakers in id order, each speaker's utterances in pool order
    assert [u.speaker for u in read_pool] == ["id10001", "id10001", "id10002"]
    assert [u.session for u in read_pool] == ["id10001", "id10001", "id10002"]
    for u, (_, feats) in zip(read_pool, [pool[1], pool[2], pool[0]], strict=True):
        assert Path(u.path).is_absolute() and Path(u.path) == root.resolve() / u.uid
        loaded = load_hw4_tensor(u.path)
        assert loaded.dtype == np.float32 and np.array_equal(loaded, feats)
    assert [(u.speaker, u.session) for u in read_test] == [("", ""), ("", "")]
    for u, feats in zip(read_test, test, strict=True):
        assert np.array_equal(load_hw4_tensor(u.path), feats)
    uids = [u.uid for u in read_pool + read_test]
    assert len(set(uids)) == 5
    assert all(re.fullmatch(r"uttr-[0-9a-f]{32}\.pt", uid) for uid in uids)


def test_written_json_has_kaggle_layout(tiny):
    root, _, _ = tiny
    mapping = json.loads((root / MAPPING_FILE).read_text())
    assert mapping == {"speaker2id": SPEAKER2ID, "id2speaker": {"0": "id10001", "1": "id10002"}}
    metadata = json.loads((root / METADATA_FILE).read_text())
    assert metadata["n_mels"] == HW4_N_MELS
    assert [e["mel_len"] for e in metadata["speakers"]["id10001"]] == [5, 9]
    assert [e["mel_len"] for e in metadata["speakers"]["id10002"]] == [7]
    testdata = json.loads((root / TESTDATA_FILE).read_text())
    assert testdata["n_mels"] == HW4_N_MELS
    assert [e["mel_len"] for e in testdata["utterances"]] == [4, 6]


def test_written_tensor_holds_only_its_utterance(tmp_path):
    block = np.ones((100, HW4_N_MELS), dtype=np.float32)
    write_hw4(tmp_path, [("id10001", block[10:13])], [], SPEAKER2ID)
    (entry,) = _entries(tmp_path, "id10001")
    saved = torch.load(tmp_path / entry["feature_path"], weights_only=True)
    assert saved.dtype == torch.float32 and saved.shape == (3, HW4_N_MELS)
    assert saved.untyped_storage().nbytes() == 3 * HW4_N_MELS * 4


def test_write_rejects_unknown_speaker_and_bad_shape(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="id99999"):
        write_hw4(tmp_path, [("id99999", _feats(rng, 3))], [], SPEAKER2ID)
    with pytest.raises(ValueError, match="shape"):
        write_hw4(tmp_path, [], [_feats(rng, 3, n_mels=39)], SPEAKER2ID)


# ----------------------------------------------------------------------------- load_hw4_tensor


def _save(obj):
    return lambda path: torch.save(obj, path)


def _write_bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def _truncated(path: Path) -> None:
    torch.save(torch.ones(50, HW4_N_MELS), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _with_value(value: float) -> torch.Tensor:
    t = torch.zeros(5, HW4_N_MELS)
    t[2, 7] = value
    return t


def _storage_smaller_than_shape(path: Path) -> None:
    """A (4, 40) tensor whose pickle claims shape (1000, 40) over the same 640-byte storage."""
    torch.save(torch.ones(4, HW4_N_MELS), path)
    with zipfile.ZipFile(path) as z:
        records = {name: z.read(name) for name in z.namelist()}
    pickled = next(name for name in records if name.endswith("data.pkl"))
    shape = b"K\x04K(\x86"  # pickle: the tuple (4, 40)
    assert shape in records[pickled]
    records[pickled] = records[pickled].replace(shape, b"M\xe8\x03K(\x86")  # (1000, 40)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in records.items():
            z.writestr(name, data)


BAD_TENSORS = {
    "stride_0": (
        _save(torch.zeros(1, HW4_N_MELS).expand(10**9, HW4_N_MELS)),
        (
            "claims shape (1000000000, 40) (160000000000 bytes) with strides (0, 1), "
            "but its storage holds 160 bytes"
        ),
    ),
    "storage_smaller_than_shape": (
        _storage_smaller_than_shape,
        "tensor claims a shape larger than its storage holds",
    ),
    "random_bytes": (
        _write_bytes(np.random.default_rng(0).bytes(2000)),
        "corrupt or truncated",
    ),
    "truncated": (_truncated, "corrupt or truncated"),
    "empty_file": (_write_bytes(b""), "corrupt or truncated"),
    "rank_1": (_save(torch.zeros(HW4_N_MELS)), "rank 1"),
    "rank_3": (_save(torch.zeros(2, 3, HW4_N_MELS)), "rank 3"),
    "width_39": (_save(torch.zeros(5, 39)), "width 39, expected n_mels = 40"),
    "zero_frames": (_save(torch.zeros(0, HW4_N_MELS)), "zero frames"),
    "nan": (_save(_with_value(float("nan"))), "NaN"),
    "inf": (_save(_with_value(float("-inf"))), "Inf"),
    "pickled_object": (_save(Custom(3)), "not plain tensor data"),
    "object_in_dict": (_save({"feats": Custom(3)}), "not plain tensor data"),
    "dict_of_tensor": (_save({"feats": torch.zeros(5, HW4_N_MELS)}), "holds a dict, not a tensor"),
    "integer_tensor": (_save(torch.zeros(5, HW4_N_MELS, dtype=torch.int64)), "floating point"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_load_rejects_bad_tensor_file(tmp_path, case):
    make, reason = BAD_TENSORS[case]
    path = tmp_path / f"uttr-{case}.pt"
    make(path)
    with pytest.raises(InputError) as info:
        load_hw4_tensor(path)
    assert info.value.path == str(path)
    assert path.name in str(info.value)
    assert reason in info.value.reason


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_load_rejects_sparse_tensor(tmp_path):
    path = tmp_path / "sparse.pt"
    torch.save(torch.ones(5, HW4_N_MELS).to_sparse(), path)
    with pytest.raises(InputError, match="sparse.pt: holds a torch.sparse_coo tensor"):
        load_hw4_tensor(path)


def test_load_reports_missing_file(tmp_path):
    path = tmp_path / "uttr-gone.pt"
    with pytest.raises(InputError, match="uttr-gone.pt: file is missing"):
        load_hw4_tensor(path)


def test_load_pickled_object_names_the_class(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save(Custom(1), path)
    with pytest.raises(InputError, match=r"not plain tensor data: it pickles \S*Custom"):
        load_hw4_tensor(path)


def test_load_accepts_legacy_format_and_other_float_widths(tmp_path):
    feats = torch.randn(6, 8, dtype=torch.float64)
    path = tmp_path / "legacy.pt"
    torch.save(feats, path, _use_new_zipfile_serialization=False)
    loaded = load_hw4_tensor(path, n_mels=8)
    assert loaded.dtype == np.float32 and loaded.shape == (6, 8)
    assert np.array_equal(loaded, feats.float().numpy())


# ----------------------------------------------------------------------------- read_hw4


@pytest.mark.parametrize("name", [MAPPING_FILE, METADATA_FILE, TESTDATA_FILE])
def test_read_reports_missing_json(tiny, name):
    root, _, _ = tiny
    (root / name).unlink()
    with pytest.raises(InputError) as info:
        read_hw4(root, on_error="skip")
    assert info.value.path == str(root.resolve() / name)
    assert info.value.reason == "file is missing"


@pytest.mark.parametrize("name", [MAPPING_FILE, METADATA_FILE, TESTDATA_FILE])
def test_read_reports_invalid_json(tiny, name):
    root, _, _ = tiny
    (root / name).write_text('{"speakers": ')
    with pytest.raises(InputError) as info:
        read_hw4(root, on_error="skip")
    assert info.value.path == str(root.resolve() / name)
    assert "not valid JSON" in info.value.reason


def test_read_reports_missing_dataset_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_hw4(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["id2speaker"].update({"0": "id10002"}),
        lambda m: m["id2speaker"].update({"2": "id10003"}),
        lambda m: m["id2speaker"].pop("1"),
    ],
    ids=["wrong_name", "extra_id", "missing_id"],
)
def test_read_rejects_mapping_whose_directions_disagree(tiny, edit):
    root, _, _ = tiny
    _edit_json(root / MAPPING_FILE, edit)
    with pytest.raises(InputError) as info:
        read_hw4(root, on_error="skip")
    assert info.value.path == str(root.resolve() / MAPPING_FILE)
    assert "id2speaker disagrees with speaker2id" in info.value.reason


def test_read_reports_missing_feature_file(tiny):
    root, _, _ = tiny
    uid = _entries(root, "id10002")[0]["feature_path"]
    (root / uid).unlink()
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / uid)
    assert info.value.reason == "listed in metadata.json: feature file is missing"


def test_read_reports_missing_test_file(tiny):
    root, _, _ = tiny
    uid = json.loads((root / TESTDATA_FILE).read_text())["utterances"][1]["feature_path"]
    (root / uid).unlink()
    with pytest.raises(
        InputError, match=f"{uid}: listed in testdata.json: feature file is missing"
    ):
        read_hw4(root)


def test_read_reports_speaker_missing_from_mapping(tiny):
    root, _, _ = tiny
    _edit_json(
        root / METADATA_FILE,
        lambda m: m["speakers"].update({"id99999": m["speakers"].pop("id10002")}),
    )
    uid = _entries(root, "id99999")[0]["feature_path"]
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / uid)
    assert "'id99999'" in info.value.reason and "mapping.json's speaker2id" in info.value.reason


def _set_first_feature_path(root: Path, feature_path: str) -> None:
    _edit_json(
        root / METADATA_FILE,
        lambda m: m["speakers"]["id10001"][0].update({"feature_path": feature_path}),
    )


def test_read_rejects_dot_dot_feature_path(tiny, outside):
    root, _, _ = tiny
    _set_first_feature_path(root, "../x.pt")
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / "../x.pt")
    assert "leaves the dataset folder through '..'" in info.value.reason


def test_read_rejects_absolute_feature_path(tiny, outside):
    root, _, _ = tiny
    _set_first_feature_path(root, str(outside))
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(outside)
    assert "feature_path is absolute" in info.value.reason


def test_read_rejects_symlink_out_of_the_folder(tiny, outside):
    root, _, _ = tiny
    (root / "uttr-link.pt").symlink_to(outside)
    _set_first_feature_path(root, "uttr-link.pt")
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / "uttr-link.pt")
    assert "leaves the dataset folder through a symlink" in info.value.reason


def test_read_rejects_a_folder_symlink_out_of_the_folder(tiny, outside):
    root, _, _ = tiny
    (root / "elsewhere").symlink_to(outside.parent)
    _set_first_feature_path(root, "elsewhere/x.pt")
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / "elsewhere/x.pt")
    assert "leaves the dataset folder through a symlink" in info.value.reason


def test_read_lists_files_in_subfolders_resolved(tiny):
    root, _, _ = tiny
    entry = _entries(root, "id10001")[0]["feature_path"]
    (root / "sub").mkdir()
    (root / entry).rename(root / "sub" / entry)
    _set_first_feature_path(root, f"sub/../sub/./{entry}")
    pool, _, _, _ = read_hw4(root)
    assert pool[0].path == str((root / "sub" / entry).resolve())


def test_read_accepts_symlink_inside_the_folder(tiny):
    root, _, _ = tiny
    entry = _entries(root, "id10001")[0]["feature_path"]
    target = root / "stored" / entry
    target.parent.mkdir()
    (root / entry).rename(target)
    (root / "uttr-link.pt").symlink_to(target)
    _set_first_feature_path(root, "uttr-link.pt")
    pool, _, _, _ = read_hw4(root)
    assert pool[0].uid == "uttr-link.pt" and pool[0].path == str(target.resolve())


def test_read_rejects_duplicate_and_malformed_entries(tiny):
    root, _, _ = tiny
    _edit_json(root / METADATA_FILE, lambda m: m["speakers"]["id10002"].append({"mel_len": 3}))
    with pytest.raises(
        InputError, match=r"metadata.json: speakers\['id10002'\]\[1\] has no feature_path"
    ):
        read_hw4(root)
    first = _entries(root, "id10001")[0]
    _edit_json(root / METADATA_FILE, lambda m: m["speakers"]["id10002"].__setitem__(1, first))
    with pytest.raises(InputError, match=f"{first['feature_path']}: listed twice in metadata"):
        read_hw4(root)


@pytest.mark.parametrize("name", [METADATA_FILE, TESTDATA_FILE])
@pytest.mark.parametrize("value", [39, None, "40", True])
def test_read_rejects_a_listing_whose_n_mels_is_not_the_front_end_s(tiny, name, value):
    root, _, _ = tiny
    _edit_json(root / name, lambda m: m.update({"n_mels": value}))
    with pytest.raises(InputError) as info:
        read_hw4(root, on_error="skip")
    assert info.value.path == str(root.resolve() / name)
    assert info.value.reason == (
        f"n_mels is {value!r}, but the tensors are loaded with features.frontend.n_mels = 40"
    )


@pytest.mark.parametrize("value", [0, -3, 2.5, "7", None, True])
def test_read_rejects_a_bad_mel_len_naming_the_file(tiny, value):
    root, _, _ = tiny
    uid = _entries(root, "id10001")[0]["feature_path"]
    _edit_json(root / METADATA_FILE, lambda m: m["speakers"]["id10001"][0].update(mel_len=value))
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / uid)
    assert info.value.reason == (
        f"listed in metadata.json: mel_len is {value!r}, not a positive frame count"
    )
    pool, _, _, rejected = read_hw4(root, on_error="skip")
    assert uid not in [u.uid for u in pool]
    assert rejected == [
        {"path": str(root.resolve() / uid), "reason": info.value.reason, "set": "train", "uid": uid}
    ]


def test_read_gives_each_utterance_its_mel_len(tiny):
    root, _, test = tiny
    read_pool, read_test, _, _ = read_hw4(root)
    assert [u.mel_len for u in read_pool] == [5, 9, 7]
    assert [u.mel_len for u in read_test] == [len(t) for t in test]


def test_an_alias_of_a_listed_path_is_one_utterance_or_an_error_naming_both(tiny):
    root, _, _ = tiny
    first = _entries(root, "id10001")[0]
    alias = {**first, "feature_path": f"./{first['feature_path']}"}
    _edit_json(root / METADATA_FILE, lambda m: m["speakers"]["id10002"].append(alias))
    with pytest.raises(InputError) as info:
        read_hw4(root)
    assert info.value.path == str(root.resolve() / alias["feature_path"])
    assert info.value.reason == (
        f"listed twice in metadata.json: as {first['feature_path']!r} "
        f"and as {alias['feature_path']!r}"
    )
    pool, _, _, rejected = read_hw4(root, on_error="skip")
    assert len(pool) == 3 and first["feature_path"] in [u.uid for u in pool]
    assert [(r["reason"], "uid" in r) for r in rejected] == [(info.value.reason, False)]


def test_skip_drops_bad_entries_and_lists_them(tiny, outside):
    root, _, _ = tiny
    good = _entries(root, "id10001")[1]["feature_path"]
    missing = _entries(root, "id10002")[0]["feature_path"]
    (root / missing).unlink()
    _set_first_feature_path(root, "../x.pt")
    _edit_json(
        root / METADATA_FILE,
        lambda m: m["speakers"].update(
            {"id99999": [{"feature_path": good, "mel_len": 9}, {"feature_path": "a", "mel_len": 1}]}
        ),
    )
    test_uids = [
        e["feature_path"] for e in json.loads((root / TESTDATA_FILE).read_text())["utterances"]
    ]
    (root / test_uids[0]).unlink()

    pool, test, speaker2id, rejected = read_hw4(root, on_error="skip")

    assert [(u.uid, u.speaker) for u in pool] == [(good, "id10001")]
    assert [u.uid for u in test] == [test_uids[1]]
    assert speaker2id == SPEAKER2ID
    resolved = root.resolve()
    assert [r["path"] for r in rejected] == [
        str(resolved / "../x.pt"),
        str(resolved / missing),
        str(resolved / good),
        str(resolved / "a"),
        str(resolved / test_uids[0]),
    ]
    reasons = [r["reason"] for r in rejected]
    assert "leaves the dataset folder through '..'" in reasons[0]
    assert reasons[1] == "listed in metadata.json: feature file is missing"
    assert reasons[4] == "listed in testdata.json: feature file is missing"
    assert all("'id99999'" in reason for reason in reasons[2:4])
    assert [r["set"] for r in rejected] == ["train"] * 4 + ["test"]
    assert [r.get("uid") for r in rejected] == ["../x.pt", missing, good, "a", test_uids[0]]


def test_read_rejects_unknown_on_error(tiny):
    root, _, _ = tiny
    with pytest.raises(ValueError, match="on_error"):
        read_hw4(root, on_error="ignore")


# ----------------------------------------------------------------------------- synthetic set


def test_synthetic_set_is_hw4_shaped_and_reproducible(tmp_path):
    kwargs = {"n_speakers": 4, "n_train": 10, "n_test": 3, "mean_frames": 30, "n_mels": 8}
    make_synthetic_hw4(tmp_path / "a", seed=5, **kwargs)
    pool, test, speaker2id, rejected = read_hw4(tmp_path / "a", n_mels=8)
    assert rejected == [] and len(pool) == 10 and len(test) == 3
    assert list(speaker2id) == ["id10001", "id10002", "id10003", "id10004"]
    counts = [sum(u.speaker == s for u in pool) for s in speaker2id]
    assert sorted(counts) == [2, 2, 3, 3]
    lengths = json.loads((tmp_path / "a" / METADATA_FILE).read_text())["speakers"]
    mel_lens = {e["feature_path"]: e["mel_len"] for es in lengths.values() for e in es}
    for u in pool:
        feats = load_hw4_tensor(u.path, n_mels=8)
        assert feats.shape == (mel_lens[u.uid], 8) and feats.shape[0] >= 15
    for u in test:
        assert load_hw4_tensor(u.path, n_mels=8).shape[0] >= 15

    make_synthetic_hw4(tmp_path / "b", seed=5, **kwargs)
    make_synthetic_hw4(tmp_path / "c", seed=6, **kwargs)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    assert all(same)
    other = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes() for f in files]
    assert not all(other)


def test_synthetic_speakers_are_separable(tmp_path):
    make_synthetic_hw4(tmp_path, n_speakers=3, n_train=9, n_test=0, mean_frames=200, n_mels=16)
    pool, _, _, _ = read_hw4(tmp_path, n_mels=16)
    means = {}
    for u in pool:
        means.setdefault(u.speaker, []).append(load_hw4_tensor(u.path, n_mels=16).mean(axis=0))
    spread_within = max(np.ptp(np.stack(m), axis=0).max() for m in means.values())
    centres = np.stack([np.mean(m, axis=0) for m in means.values()])
    assert spread_within < 1.0 < np.abs(centres[0] - centres[1]).max()


def test_main_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "Dataset"
    main([str(out), "--speakers", "2", "--train", "5", "--test", "2", "--mean-frames", "12"])
    pool, test, speaker2id, _ = read_hw4(out)
    assert (len(pool), len(test), len(speaker2id)) == (5, 2, 2)
    assert load_hw4_tensor(pool[0].path).shape[1] == HW4_N_MELS
    assert "5 + 2 utterances of 2 speakers" in capsys.readouterr().out
