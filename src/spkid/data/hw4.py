"""The NTU ML2022Spring HW4 source: the Kaggle ``Dataset`` folder as shipped.

Layout of the folder::

    mapping.json   {"speaker2id": {"id10001": 0, ...}, "id2speaker": {"0": "id10001", ...}}
    metadata.json  {"n_mels": 40, "speakers": {"id10001": [{"feature_path": "uttr-<hex>.pt",
                                                            "mel_len": 435}, ...], ...}}
    testdata.json  {"n_mels": 40, "utterances": [{"feature_path": "uttr-<hex>.pt",
                                                  "mel_len": 500}, ...]}
    uttr-<hex>.pt  a float32 tensor of shape (frames, n_mels), written by torch.save

``read_hw4`` lists the folder, ``load_hw4_tensor`` loads one utterance, ``write_hw4`` writes
the layout and ``make_synthetic_hw4`` (also ``python -m spkid.data.hw4``) fills it with an
HW4-shaped synthetic set.
"""

import argparse
import hashlib
import json
import os
import pickle
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath

import numpy as np
import torch

from spkid.data.errors import InputError
from spkid.data.utterance import Utterance

MAPPING_FILE = "mapping.json"
METADATA_FILE = "metadata.json"
TESTDATA_FILE = "testdata.json"
HW4_N_MELS = 40
ON_ERROR_CHOICES = ("fail", "skip")

# The weights_only unpickler names the class or function it refuses as "GLOBAL <module.name>";
# any other unpickling failure means the bytes themselves are broken.
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
# torch.load's refusal of a tensor whose shape and strides reach past its storage.
_TOO_SMALL = "Trying to resize storage that is not resizable"
# torch wraps the unpickler's own complaint in advice about weights_only=False; keep the complaint.
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.*\S)")

# make_synthetic_hw4: HW4 speakers are named id10001, id10002, ...
FIRST_SPEAKER_NUMBER = 10001
SPEAKER_MEAN_STD = 1.0  # spread of the per-speaker mean vectors
NOISE_STD = 1.0  # per-frame noise around the speaker's mean
LENGTH_SPREAD = 0.3  # standard deviation of utterance lengths, as a fraction of the mean
MIN_FRAMES = 100  # shortest utterance (lowered to mean_frames // 2 for tiny means)
CHUNK_UTTERANCES = 256  # utterances generated per vectorised draw


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path):
    """Parse one of the folder's JSON files; raise InputError naming it if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(path, "file is missing") from None
    except OSError as e:
        raise InputError(path, f"cannot be read: {e}") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise InputError(path, f"not valid JSON: {e}") from None


def _require(ok: bool, path: Path, reason: str) -> None:
    """Raise InputError(path, reason) unless ``ok``."""
    if not ok:
        raise InputError(path, reason)


def _read_mapping(path: Path) -> dict[str, int]:
    """speaker2id of mapping.json, after checking that id2speaker is its exact inverse.

    Args:
        path: the mapping.json file.

    Returns:
        speaker2id, in the file's order.
    """
    data = _read_json(path)
    _require(isinstance(data, dict), path, "expected a JSON object")
    speaker2id, id2speaker = data.get("speaker2id"), data.get("id2speaker")
    _require(isinstance(speaker2id, dict), path, "speaker2id is missing or not an object")
    _require(isinstance(id2speaker, dict), path, "id2speaker is missing or not an object")
    for speaker, sid in speaker2id.items():
        _require(
            isinstance(sid, int) and not isinstance(sid, bool),
            path,
            f"speaker2id[{speaker!r}] is {sid!r}, not an integer id",
        )
    _require(
        len(set(speaker2id.values())) == len(speaker2id),
        path,
        "speaker2id gives two speakers the same id",
    )
    expected = {str(sid): speaker for speaker, sid in speaker2id.items()}
    for key in sorted(expected.keys() | id2speaker.keys()):
        got, want = id2speaker.get(key), expected.get(key)
        _require(
            got == want,
            path,
            f"id2speaker disagrees with speaker2id: id2speaker[{key!r}] is {got!r}, "
            f"speaker2id says {want!r}",
        )
    return speaker2id


def _read_listing(path: Path, n_mels: int) -> dict:
    """metadata.json or testdata.json, whose top-level n_mels must be the width the tensors
    are loaded with."""
    data = _read_json(path)
    _require(isinstance(data, dict), path, "expected a JSON object")
    got = data.get("n_mels")
    _require(
        got == n_mels and not isinstance(got, bool),
        path,
        f"n_mels is {got!r}, but the tensors are loaded with features.frontend.n_mels = {n_mels}",
    )
    return data


def _metadata_entries(path: Path, n_mels: int) -> list[tuple[str, str, object]]:
    """(speaker, JSON location, entry) of each metadata.json entry, in file order."""
    data = _read_listing(path, n_mels)
    speakers = data.get("speakers")
    _require(isinstance(speakers, dict), path, "speakers is missing or not an object")
    for speaker, entries in speakers.items():
        _require(isinstance(entries, list), path, f"speakers[{speaker!r}] is not a list")
    return [
        (speaker, f"speakers[{speaker!r}][{index}]", entry)
        for speaker, entries in speakers.items()
        for index, entry in enumerate(entries)
    ]


def _testdata_entries(path: Path, n_mels: int) -> list[tuple[str, str, object]]:
    """("", JSON location, entry) of each testdata.json entry, in file order."""
    data = _read_listing(path, n_mels)
    entries = data.get("utterances")
    _require(isinstance(entries, list), path, "utterances is missing or not a list")
    return [("", f"utterances[{index}]", entry) for index, entry in enumerate(entries)]


def _mel_len(entry: dict, listing: Path, shown: Path) -> int:
    """The entry's mel_len, checked to be a positive frame count."""
    mel_len = entry.get("mel_len")
    _require(
        isinstance(mel_len, int) and not isinstance(mel_len, bool) and mel_len > 0,
        shown,
        f"listed in {listing.name}: mel_len is {mel_len!r}, not a positive frame count",
    )
    return mel_len


def _feature_path(entry, location: str, listing: Path) -> str:
    """The entry's feature_path; InputError naming the listing file if the entry is malformed."""
    fp = entry.get("feature_path") if isinstance(entry, dict) else None
    _require(
        isinstance(fp, str) and fp != "",
        listing,
        f"{location} has no feature_path string: {entry!r}",
    )
    return fp


def _resolve_inside(root: Path, feature_path: str, listing: Path, folders: dict) -> Path:
    """The resolved file of ``feature_path``, checked to be a regular file inside ``root``.

    Args:
        root: the dataset folder, already resolved.
        feature_path: the entry's feature_path, relative to ``root``.
        listing: the JSON file that lists the entry (named in the reason).
        folders: cache shared by one listing's calls, {feature_path's folder: its resolved
            folder, or None when that leaves ``root``}.

    Raises:
        InputError: the path is absolute, climbs out with "..", leaves through a symlink,
            or names no regular file.
    """
    plain = _plain_file_inside(root, feature_path, folders)
    if plain is not None:
        return plain
    shown = root / feature_path  # an absolute feature_path replaces root here
    where = f"listed in {listing.name}"
    _require(
        not PurePath(feature_path).is_absolute(),
        shown,
        f"{where}: feature_path is absolute; it must lie inside the dataset folder",
    )
    resolved = shown.resolve()
    if not resolved.is_relative_to(root):
        how = "through '..'" if ".." in PurePath(feature_path).parts else "through a symlink"
        raise InputError(shown, f"{where}: feature_path leaves the dataset folder {how}")
    if not resolved.is_file():
        missing = "feature file is missing" if not resolved.exists() else "not a regular file"
        raise InputError(shown, f"{where}: {missing}")
    return resolved


def _plain_file_inside(root: Path, feature_path: str, folders: dict) -> Path | None:
    """The fast path of _resolve_inside (one lstat; its folder resolved once per listing):
    the file when ``feature_path`` is relative, its folder resolves inside ``root`` and it
    names a regular file that is no symlink; None leaves the full check to decide."""
    parent, name = os.path.split(feature_path)
    if os.path.isabs(feature_path) or name in ("", ".", ".."):
        return None
    if parent not in folders:
        resolved = (root / parent).resolve()
        folders[parent] = resolved if resolved.is_relative_to(root) else None
    folder = folders[parent]
    if folder is None:
        return None
    try:
        mode = os.lstat(os.path.join(folder, name)).st_mode
    except OSError:
        return None
    return folder / name if stat.S_ISREG(mode) else None


def read_hw4(
    dataset_dir, on_error: str = "fail", n_mels: int = HW4_N_MELS
) -> tuple[list[Utterance], list[Utterance], dict[str, int], list[dict]]:
    """List the HW4 Dataset folder.

    Whole-file problems (a missing or unparseable JSON file, a malformed top level, a
    top-level n_mels other than ``n_mels``, id2speaker disagreeing with speaker2id) always
    raise. Problems of one entry (malformed entry or mel_len, speaker missing from
    speaker2id, feature_path leaving the folder, missing feature file, a file listed twice
    in its set, under one path or two that resolve to it, like ``./a.pt`` and ``a.pt``)
    raise under "fail" and are dropped and reported under "skip".

    Args:
        dataset_dir: the folder holding mapping.json, metadata.json, testdata.json and the
            uttr-*.pt files.
        on_error: "fail" raises the first bad entry's InputError; "skip" drops bad entries.
        n_mels: the width the tensors will be loaded with.

    Returns:
        pool: labeled utterances in metadata.json order; uid = feature_path, speaker and
            session = the metadata speaker (HW4 has no sessions), path = the resolved file,
            mel_len = the entry's.
        test: testdata.json's utterances in file order, speaker and session "".
        speaker2id: mapping.json's speaker2id.
        rejected: {"path", "reason", "set": "train" or "test"} for each dropped entry, with
            "uid" (its feature_path) where it is an utterance of its own (not for a
            malformed entry nor a second listing of a file); empty under "fail".

    Raises:
        InputError: naming the offending file and the reason.
        ValueError: ``on_error`` is not "fail" or "skip".
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    root = Path(dataset_dir).resolve()
    _require(root.is_dir(), root, "HW4 dataset folder does not exist")
    speaker2id = _read_mapping(root / MAPPING_FILE)
    metadata, testdata = root / METADATA_FILE, root / TESTDATA_FILE
    train_entries = _metadata_entries(metadata, n_mels)
    test_entries = _testdata_entries(testdata, n_mels)

    rejected: list[dict] = []
    folders: dict = {}

    def listed(entries, listing: Path, set_name: str) -> list[Utterance]:
        utterances, seen = [], {}  # seen: resolved file -> the feature_path that listed it
        for speaker, location, entry in entries:
            uid = None
            try:
                fp = uid = _feature_path(entry, location, listing)
                _require(
                    speaker == "" or speaker in speaker2id,
                    root / fp,
                    f"speaker {speaker!r} of {listing.name} is missing from "
                    f"{MAPPING_FILE}'s speaker2id",
                )
                path = _resolve_inside(root, fp, listing, folders)
                first = seen.get(path)
                if first is not None:
                    uid = None  # the same utterance as the first listing, which stands
                    raise InputError(
                        root / fp, f"listed twice in {listing.name}: as {first!r} and as {fp!r}"
                    )
                mel_len = _mel_len(entry, listing, root / fp)
            except InputError as e:
                if on_error == "fail":
                    raise
                uid_entry = {} if uid is None else {"uid": uid}
                rejected.append({"path": e.path, "reason": e.reason, "set": set_name, **uid_entry})
                continue
            seen[path] = fp
            utterances.append(Utterance(fp, speaker, speaker, str(path), mel_len))
        return utterances

    pool = listed(train_entries, metadata, "train")
    test = listed(test_entries, testdata, "test")
    return pool, test, speaker2id, rejected


# ----------------------------------------------------------------------------- loading


def _load_tensor_data(path: Path):
    """torch.load with weights_only; InputError for a missing, corrupt or unsafe file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "file is missing") from None
    except (PermissionError, IsADirectoryError) as e:
        raise InputError(path, f"cannot be read: {e}") from None
    except pickle.UnpicklingError as e:
        refused = _REFUSED_GLOBAL.search(str(e))
        if refused:
            raise InputError(
                path,
                f"not plain tensor data: it pickles {refused.group(1)}, which weights_only "
                "loading refuses",
            ) from None
        detail = _UNPICKLER_DETAIL.search(str(e))
        gist = detail.group(1) if detail else _gist(e)
        raise InputError(
            path, f"corrupt or truncated .pt file: unpickling failed: {gist}"
        ) from None
    # Bad bytes surface as RuntimeError, EOFError, KeyError, even OSError(EINVAL) from a
    # truncated file, so anything else torch.load raises means a broken file.
    except Exception as e:  # noqa: BLE001
        if _TOO_SMALL in str(e):
            raise InputError(path, "tensor claims a shape larger than its storage holds") from None
        raise InputError(
            path, f"corrupt or truncated .pt file: {type(e).__name__}: {_gist(e)}"
        ) from None


def _check_storage(path: Path, data: torch.Tensor) -> None:
    """Reject a tensor whose storage holds fewer elements than its shape claims (a stride-0
    expanded tensor, overlapping strides): materialising it would allocate the claimed
    size, not the stored one."""
    size = data.element_size()
    claimed = data.numel() * size
    held = data.untyped_storage().nbytes() - data.storage_offset() * size
    _require(
        claimed <= held,
        path,
        f"tensor claims shape {tuple(data.shape)} ({claimed} bytes) with strides "
        f"{data.stride()}, but its storage holds {held} bytes",
    )


def _gist(e: Exception) -> str:
    """The first sentence of an exception's message (torch's go on with advice)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else "(no message)"


def load_hw4_tensor(path, n_mels: int = HW4_N_MELS) -> np.ndarray:
    """Load one uttr-*.pt file as checked features.

    Module level so that multiprocessing can call it through functools.partial.

    Args:
        path: the .pt file.
        n_mels: the expected feature width.

    Returns:
        float32 array of shape (frames, n_mels), frames >= 1, all values finite.

    Raises:
        InputError: missing file, corrupt or truncated .pt, not plain tensor data, not a
            tensor, sparse, not floating point, not 2-D, wrong width, zero frames, NaN or Inf
            values.
    """
    path = Path(path)
    data = _load_tensor_data(path)
    _require(isinstance(data, torch.Tensor), path, f"holds a {type(data).__name__}, not a tensor")
    _require(data.layout == torch.strided, path, f"holds a {data.layout} tensor, expected dense")
    _require(data.is_floating_point(), path, f"holds {data.dtype} values, expected floating point")
    _require(
        data.dim() == 2,
        path,
        f"tensor has rank {data.dim()} (shape {tuple(data.shape)}), expected 2-D (frames, n_mels)",
    )
    _check_storage(path, data)
    frames, width = data.shape
    _require(width == n_mels, path, f"tensor has width {width}, expected n_mels = {n_mels}")
    _require(frames > 0, path, "tensor has zero frames")
    feats = data.detach().to(torch.float32).contiguous().numpy()
    if not np.isfinite(feats).all():
        bad = "NaN" if np.isnan(feats).any() else "Inf"
        raise InputError(path, f"tensor holds {bad} values")
    return feats


# ----------------------------------------------------------------------------- writing


def _feature_name(split: str, index: int) -> str:
    """Deterministic HW4-style file name: uttr-<32 hex>.pt from the split and index."""
    return f"uttr-{hashlib.md5(f'{split}-{index}'.encode()).hexdigest()}.pt"


def _write_tensor(out: Path, name: str, feats: np.ndarray, n_mels: int) -> dict:
    """Save ``feats`` (frames, n_mels) as a float32 tensor; return its metadata entry."""
    if feats.ndim != 2 or feats.shape[0] < 1 or feats.shape[1] != n_mels:
        raise ValueError(f"{name}: features of shape {feats.shape}, expected (frames>0, {n_mels})")
    # np.array copies, so the saved storage is this utterance alone, never a larger block
    # that ``feats`` may be a view of (torch.save writes a view's whole storage).
    torch.save(torch.from_numpy(np.array(feats, dtype=np.float32, order="C")), out / name)
    return {"feature_path": name, "mel_len": int(feats.shape[0])}


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def write_hw4(
    out_dir,
    pool: Iterable[tuple[str, np.ndarray]],
    test: Iterable[np.ndarray],
    speaker2id: dict[str, int],
    n_mels: int = HW4_N_MELS,
) -> None:
    """Write the Kaggle HW4 Dataset layout.

    ``pool`` and ``test`` may be generators: they are consumed once, pool first, so the
    whole set never has to be in memory. The JSON files are written last.

    Args:
        out_dir: the folder to write (created if needed).
        pool: (speaker, feats) pairs, feats float array of shape (frames, n_mels); every
            speaker must be in ``speaker2id``.
        test: feats arrays of shape (frames, n_mels), unlabeled.
        speaker2id: speaker name -> distinct integer id; written both ways to mapping.json
            (id2speaker with string keys) and, in id order, as metadata.json's speakers.
        n_mels: the feature width of every utterance.

    Raises:
        ValueError: unknown speaker, duplicate id, or features of the wrong shape.
    """
    if len(set(speaker2id.values())) != len(speaker2id):
        raise ValueError("speaker2id gives two speakers the same id")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_id = sorted(speaker2id, key=speaker2id.__getitem__)
    speakers: dict[str, list[dict]] = {speaker: [] for speaker in by_id}
    for index, (speaker, feats) in enumerate(pool):
        if speaker not in speakers:
            raise ValueError(f"pool speaker {speaker!r} is not in speaker2id")
        speakers[speaker].append(_write_tensor(out, _feature_name("train", index), feats, n_mels))
    utterances = [
        _write_tensor(out, _feature_name("test", index), feats, n_mels)
        for index, feats in enumerate(test)
    ]
    mapping = {
        "speaker2id": {speaker: speaker2id[speaker] for speaker in by_id},
        "id2speaker": {str(speaker2id[speaker]): speaker for speaker in by_id},
    }
    _write_json(out / MAPPING_FILE, mapping)
    _write_json(out / METADATA_FILE, {"n_mels": n_mels, "speakers": speakers})
    _write_json(out / TESTDATA_FILE, {"n_mels": n_mels, "utterances": utterances})


# ----------------------------------------------------------------------------- synthetic set


def _synthetic_lengths(rng: np.random.Generator, n: int, mean_frames: int) -> np.ndarray:
    """``n`` utterance lengths around ``mean_frames``, none below the minimum."""
    floor = min(MIN_FRAMES, max(1, mean_frames // 2))
    lengths = np.rint(rng.normal(mean_frames, LENGTH_SPREAD * mean_frames, size=n))
    return np.maximum(lengths, floor).astype(np.int64)


def _synthetic_feats(
    rng: np.random.Generator, speaker_idx: np.ndarray, lengths: np.ndarray, means: np.ndarray
) -> Iterator[np.ndarray]:
    """Features of each utterance: its speaker's mean plus Gaussian noise, per frame.

    Args:
        rng: the random generator.
        speaker_idx: (n,) speaker index of each utterance.
        lengths: (n,) frames of each utterance.
        means: (n_speakers, n_mels) float32 speaker mean vectors.

    Yields:
        float32 arrays of shape (lengths[i], n_mels), views into one block per chunk.
    """
    for start in range(0, len(lengths), CHUNK_UTTERANCES):
        speakers = speaker_idx[start : start + CHUNK_UTTERANCES]
        lens = lengths[start : start + CHUNK_UTTERANCES]
        block = rng.standard_normal((int(lens.sum()), means.shape[1]), dtype=np.float32)
        block *= NOISE_STD
        block += np.repeat(means[speakers], lens, axis=0)
        yield from np.split(block, np.cumsum(lens)[:-1])


def make_synthetic_hw4(
    out_dir,
    n_speakers: int = 600,
    n_train: int = 56666,
    n_test: int = 8000,
    mean_frames: int = 600,
    n_mels: int = HW4_N_MELS,
    seed: int = 0,
) -> None:
    """Write an HW4-shaped synthetic Dataset folder through ``write_hw4``.

    Speakers id10001, id10002, ... each get a random mean vector; an utterance is its
    speaker's mean plus per-frame noise. Training utterances are spread evenly over the
    speakers (counts differ by at most one; HW4 has about 94 each), test speakers are drawn
    uniformly (and not stored, as in HW4). Lengths are normal around ``mean_frames`` with
    a standard deviation of LENGTH_SPREAD * mean_frames, clipped below at MIN_FRAMES.
    The same arguments give the same files.

    Args:
        out_dir: the folder to write.
        n_speakers: number of speakers (>= 1).
        n_train: labeled utterances in metadata.json.
        n_test: unlabeled utterances in testdata.json.
        mean_frames: mean utterance length in frames.
        n_mels: feature width.
        seed: random seed.
    """
    if n_speakers < 1 or n_train < 0 or n_test < 0 or mean_frames < 1 or n_mels < 1:
        raise ValueError("need n_speakers, mean_frames, n_mels >= 1 and n_train, n_test >= 0")
    rng = np.random.default_rng(seed)
    names = [f"id{FIRST_SPEAKER_NUMBER + k}" for k in range(n_speakers)]
    means = rng.normal(0.0, SPEAKER_MEAN_STD, size=(n_speakers, n_mels)).astype(np.float32)
    train_speakers = np.sort(np.arange(n_train) % n_speakers)
    test_speakers = rng.integers(0, n_speakers, size=n_test)
    train_lengths = _synthetic_lengths(rng, n_train, mean_frames)
    test_lengths = _synthetic_lengths(rng, n_test, mean_frames)
    pool = zip(
        [names[k] for k in train_speakers],
        _synthetic_feats(rng, train_speakers, train_lengths, means),
    )
    test = _synthetic_feats(rng, test_speakers, test_lengths, means)
    write_hw4(out_dir, pool, test, {name: k for k, name in enumerate(names)}, n_mels=n_mels)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m spkid.data.hw4 OUT_DIR --speakers 600 --train 56666 ...``."""
    parser = argparse.ArgumentParser(description="Write an HW4-shaped synthetic Dataset folder.")
    parser.add_argument("out_dir", help="folder to write")
    parser.add_argument("--speakers", type=int, default=600, help="number of speakers")
    parser.add_argument("--train", type=int, default=56666, help="labeled utterances")
    parser.add_argument("--test", type=int, default=8000, help="unlabeled test utterances")
    parser.add_argument("--mean-frames", type=int, default=600, help="mean frames per utterance")
    parser.add_argument("--n-mels", type=int, default=HW4_N_MELS, help="feature width")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    make_synthetic_hw4(
        args.out_dir,
        n_speakers=args.speakers,
        n_train=args.train,
        n_test=args.test,
        mean_frames=args.mean_frames,
        n_mels=args.n_mels,
        seed=args.seed,
    )
    print(
        f"wrote {args.train} + {args.test} utterances of {args.speakers} speakers to {args.out_dir}"
    )


if __name__ == "__main__":
    main()
