"""The packed feature store: every frame of a set in one float16 array.

A store is one folder:
    frames.npy       float16 (total_frames, n_mels), memory-mappable
    utterances.csv   uid, speaker, session, offset, frames, source
    mapping.json     HW4 format: speaker2id and id2speaker (string keys)
    meta.json        front-end params, source digest, counts, rejected inputs
"""

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spkid.atomic import write_json
from spkid.data.errors import InputError
from spkid.data.utterance import Utterance

FRAMES_FILE = "frames.npy"
TABLE_FILE = "utterances.csv"
MAPPING_FILE = "mapping.json"
META_FILE = "meta.json"
TABLE_COLUMNS = ("uid", "speaker", "session", "offset", "frames", "source")
STORE_DTYPE = np.float16
MAX_CHUNK = 256  # paths per task: few enough tasks that the pool's bookkeeping stays small
ON_ERROR = ("fail", "skip")


@dataclass
class FeatureStore:
    """A feature store opened for reading.

    Attributes:
        frames: (total_frames, n_mels) float16 memmap of all utterances back to back.
        uids, speakers, sessions: per-utterance strings, length U.
        offsets, lengths: (U,) int64 first frame and frame count of each utterance.
        labels: (U,) int64 speaker ids from the mapping; -1 where unlabeled.
        speaker2id: the HW4 mapping.
        meta: the store's meta.json.
    """

    frames: np.ndarray
    uids: list
    speakers: list
    sessions: list
    offsets: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    speaker2id: dict
    meta: dict

    @property
    def n_mels(self) -> int:
        return self.frames.shape[1]

    def __len__(self) -> int:
        return len(self.uids)

    def features(self, index: int) -> np.ndarray:
        """The (frames, n_mels) float16 features of utterance ``index``."""
        start = self.offsets[index]
        return self.frames[start : start + self.lengths[index]]


def open_store(folder) -> FeatureStore:
    """Open the store in ``folder`` (frames memory-mapped, not read)."""
    folder = Path(folder)
    frames = np.load(folder / FRAMES_FILE, mmap_mode="r")
    with open(folder / TABLE_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    mapping = json.loads((folder / MAPPING_FILE).read_text())
    speaker2id = mapping["speaker2id"]
    return FeatureStore(
        frames=frames,
        uids=[r["uid"] for r in rows],
        speakers=[r["speaker"] for r in rows],
        sessions=[r["session"] for r in rows],
        offsets=np.array([int(r["offset"]) for r in rows], dtype=np.int64),
        lengths=np.array([int(r["frames"]) for r in rows], dtype=np.int64),
        labels=np.array([speaker2id.get(r["speaker"], -1) for r in rows], dtype=np.int64),
        speaker2id=speaker2id,
        meta=json.loads((folder / META_FILE).read_text()),
    )


def mapping_of(speaker2id: dict) -> dict:
    """The HW4 mapping.json content for ``speaker2id``."""
    return {
        "speaker2id": dict(speaker2id),
        "id2speaker": {str(i): s for s, i in speaker2id.items()},
    }


def _load(loader: Callable, path: str):
    try:
        return loader(path).astype(STORE_DTYPE), None
    except InputError as err:
        return None, err


def extract(
    utterances: Sequence[Utterance], loader: Callable, workers: int, on_error: str, desc: str
):
    """Run ``loader`` over every utterance in parallel.

    Args:
        utterances: what to load.
        loader: picklable ``path -> (frames, n_mels)`` array; raises InputError.
        workers: processes; 0 means every CPU core.
        on_error: "fail" raises the first InputError, "skip" drops and records it.
        desc: progress-bar label.

    Returns:
        (kept utterances, their float16 arrays, rejected [{"path", "reason"}]).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    workers = workers or os.cpu_count()
    paths = [u.path for u in utterances]
    kept, arrays, rejected = [], [], []
    with ProcessPoolExecutor(workers, mp_context=_context(loader), initializer=_one_thread) as pool:
        results = pool.map(_bind(loader), paths, chunksize=chunk_size(len(paths), workers))
        for utt, (array, err) in tqdm(zip(utterances, results), total=len(paths), desc=desc):
            if err is None:
                kept.append(utt)
                arrays.append(array)
            elif on_error == "fail":
                raise err
            else:
                rejected.append({"path": err.path, "reason": err.reason})
    return kept, arrays, rejected


def chunk_size(n: int, workers: int) -> int:
    """Paths per task: about four tasks per worker, at most MAX_CHUNK, at least one."""
    return max(1, min(MAX_CHUNK, n // (4 * workers)))


def _context(loader: Callable):
    """forkserver (a fork of a process that has run torch's thread pools can hang) whose
    server imports torch and the loader's module once: workers fork from it ready, and a
    second pool (the test set) starts at once."""
    context = multiprocessing.get_context("forkserver")
    module = getattr(loader, "func", loader).__module__
    context.set_forkserver_preload(["torch", __name__, module])
    return context


def _one_thread() -> None:
    """Workers run one torch thread each: the pool already fills the cores."""
    import torch

    torch.set_num_threads(1)


class _bind:
    """Picklable ``path -> _load(loader, path)``."""

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, path):
        return _load(self.loader, path)


def write_store(
    folder, utterances: Sequence[Utterance], arrays: Sequence[np.ndarray], speaker2id, meta
) -> dict:
    """Write a store atomically: built beside ``folder``, then swapped in.

    Args:
        folder: the store folder (replaced whole).
        utterances: kept utterances, in store order.
        arrays: their (frames, n_mels) features.
        speaker2id: the label mapping written as mapping.json.
        meta: extra meta.json content; counts and the data digest are added.

    Returns:
        the meta.json content written.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    n_mels = arrays[0].shape[1] if arrays else meta.get("frontend", {}).get("n_mels", 0)
    frames = np.lib.format.open_memmap(
        tmp / FRAMES_FILE, mode="w+", dtype=STORE_DTYPE, shape=(int(lengths.sum()), n_mels)
    )
    digest = hashlib.sha256()
    for array, start in zip(arrays, offsets):
        frames[start : start + len(array)] = array
        digest.update(array.tobytes())
    frames.flush()
    del frames
    with open(tmp / TABLE_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TABLE_COLUMNS)
        for u, start, n in zip(utterances, offsets, lengths):
            writer.writerow([u.uid, u.speaker, u.session, int(start), int(n), u.path])
            digest.update(f"{u.uid}\t{u.speaker}\n".encode())
    write_json(tmp / MAPPING_FILE, mapping_of(speaker2id))
    meta = {
        **meta,
        "digest": digest.hexdigest(),
        "counts": {
            "utterances": len(utterances),
            "speakers": len({u.speaker for u in utterances if u.speaker}),
            "frames": int(lengths.sum()),
        },
    }
    write_json(tmp / META_FILE, meta)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return meta
