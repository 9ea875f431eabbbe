"""The packed feature store: every frame of a set in one float16 array.

A store is one folder:
    frames.npy       float16 (total_frames, n_mels), memory-mappable
    utterances.csv   uid, speaker, session, offset, frames, source
    mapping.json     HW4 format: speaker2id and id2speaker (string keys)
    meta.json        front-end params, source digest, counts, rejected inputs

``build_store`` writes one store; ``staging``, ``load_store`` and ``write_store`` build
several that must change together (the training pool and the test set): each is built in a
folder beside its own, and all are swapped in at the end, or none.
"""

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

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
FLOAT16_MAX = float(np.finfo(STORE_DTYPE).max)  # 65504: larger values would be stored as Inf
MAX_CHUNK = 256  # paths per task: few enough tasks that the pool's bookkeeping stays small
SCRATCH_DIR = "scratch"  # in the build folder: one file of float16 frames per task
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


def build_store(
    folder,
    utterances: Sequence[Utterance],
    loader: Callable,
    speaker2id: dict,
    meta: dict,
    workers: int,
    on_error: str,
    desc: str,
    empty_error: InputError | None = None,
) -> dict:
    """Load every utterance in parallel into a store written atomically: built in
    ``.<name>.tmp`` beside ``folder``, then swapped in; on any error the old store stays.

    Args:
        folder: the store folder (replaced whole).
        utterances, loader, workers, on_error, desc, empty_error: as for load_store.
        speaker2id, meta: as for write_store.

    Returns:
        the meta.json content written.
    """
    with staging(Path(folder)) as (tmp,):
        staged = load_store(tmp, utterances, loader, workers, on_error, desc, empty_error)
        return write_store(staged, speaker2id, meta)


@contextmanager
def staging(*folders):
    """Build folders for stores that change together: yields ``.<name>.tmp`` beside each
    folder; on a clean exit every built folder replaces its store, all or none (a failed
    swap puts back the ones already moved); on an error the old stores stay as they were.
    """
    folders = [Path(f) for f in folders]
    tmps = [f.with_name(f".{f.name}.tmp") for f in folders]
    for tmp in tmps:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    try:
        yield tmps
        _swap(tmps, folders)
    finally:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class StagedStore:
    """A store loaded into scratch files in its build folder, not yet written.

    Attributes:
        folder: the build folder.
        kept: (Utterance, _Loaded) of each utterance kept, in store order.
        rejected: {"path", "reason", "uid"} of each utterance its loader rejected.
        scratch: the scratch files, one per task.
        part_frames: the frames each scratch file holds.
        workers: threads that copy them into frames.npy.
    """

    folder: Path
    kept: list
    rejected: list
    scratch: list
    part_frames: list
    workers: int

    def digests(self) -> dict:
        """{SHA-256 of the float16 frames: the first kept Utterance with them}."""
        out = {}
        for u, r in self.kept:
            out.setdefault(r.digest, u)
        return out


def load_store(
    tmp: Path,
    utterances: Sequence[Utterance],
    loader: Callable,
    workers: int,
    on_error: str,
    desc: str,
    empty_error: InputError | None = None,
) -> StagedStore:
    """Load every utterance in parallel into scratch files in ``tmp``.

    Each worker task loads a chunk of paths and writes their float16 arrays back to back
    into one scratch file, returning only frame counts, widths and SHA-256 digests (the
    parent never copies nor hashes frame bytes; write_store places them). Besides the
    loader's own checks, an array must have the frames its listing claims
    (``Utterance.mel_len``, when given) and fit float16.

    Args:
        tmp: the build folder (from ``staging``).
        utterances: what to load, in store order.
        loader: picklable ``path -> (frames, n_mels)`` array; raises InputError.
        workers: processes; 0 means every CPU core.
        on_error: "fail" raises the first InputError in input order, "skip" drops and
            records it.
        desc: progress-bar label.
        empty_error: raised when no utterance is kept; None (default) allows an empty store.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    workers = workers or os.cpu_count()
    (tmp / SCRATCH_DIR).mkdir()
    chunks = _chunks([(u.path, u.mel_len) for u in utterances], workers)
    scratch = [tmp / SCRATCH_DIR / f"{i:06d}.f16" for i in range(len(chunks))]
    parts = _load_chunks(loader, chunks, scratch, workers, on_error, desc)
    records = [r for part in parts for r in part]
    kept = [(u, r) for u, r in zip(utterances, records) if isinstance(r, _Loaded)]
    if not kept and empty_error is not None:
        raise empty_error
    part_frames = [sum(r.frames for r in part if isinstance(r, _Loaded)) for part in parts]
    rejected = [
        {"path": r.path, "reason": r.reason, "uid": u.uid}
        for u, r in zip(utterances, records)
        if isinstance(r, InputError)
    ]
    return StagedStore(tmp, kept, rejected, scratch, part_frames, workers)


def write_store(staged: StagedStore, speaker2id: dict, meta: dict) -> dict:
    """Write the staged store's files into its build folder: frames.npy (threads copy each
    scratch file into its place, in the kernel), utterances.csv, mapping.json, meta.json.

    Args:
        staged: from load_store.
        speaker2id: the label mapping written as mapping.json.
        meta: extra meta.json content; the digest, counts and the loader's rejected inputs
            (after any already in ``meta["rejected"]``) are added. An empty store takes its
            width from ``meta["frontend"]["n_mels"]``.

    Returns:
        the meta.json content written.
    """
    tmp = staged.folder
    n_mels = _width([r for _, r in staged.kept]) or meta.get("frontend", {}).get("n_mels", 0)
    _assemble(tmp / FRAMES_FILE, staged.scratch, staged.part_frames, n_mels, staged.workers)
    (tmp / SCRATCH_DIR).rmdir()
    meta = {**meta, "rejected": [*meta.get("rejected", []), *staged.rejected]}
    return _write_tables(tmp, staged.kept, speaker2id, meta)


def dense_mapping(speaker2id: dict, speakers) -> tuple[dict, list]:
    """``speaker2id`` restricted to ``speakers``, ids renumbered 0.. in the old id order.

    Returns:
        (the new speaker2id, the speakers dropped, in the old id order).
    """
    present = set(speakers)
    by_id = sorted(speaker2id, key=speaker2id.__getitem__)
    kept = [s for s in by_id if s in present]
    return {s: i for i, s in enumerate(kept)}, [s for s in by_id if s not in present]


def chunk_size(n: int, workers: int) -> int:
    """Paths per task: about four tasks per worker, at most MAX_CHUNK, at least one."""
    return max(1, min(MAX_CHUNK, n // (4 * workers)))


def _chunks(paths: list, workers: int) -> list:
    """``paths`` cut into consecutive tasks of chunk_size paths."""
    size = chunk_size(len(paths), workers)
    return [paths[i : i + size] for i in range(0, len(paths), size)]


class _Loaded(NamedTuple):
    """One loaded utterance: its (frames, n_mels) shape and the SHA-256 of its float16 bytes."""

    frames: int
    n_mels: int
    digest: bytes


def _load_chunks(
    loader: Callable, chunks: list, scratch: list, workers: int, on_error: str, desc: str
) -> list:
    """Run _LoadChunk over every chunk in a process pool.

    Returns:
        per chunk, per path, a _Loaded or the InputError raised (under "fail", the first
        one in input order is raised instead, and tasks not started are cancelled).
    """
    parts = []
    with (
        _pool(loader, workers) as pool,
        tqdm(total=sum(map(len, chunks)), desc=desc) as bar,
    ):
        for part in pool.map(_LoadChunk(loader), scratch, chunks):
            errors = [r for r in part if isinstance(r, InputError)]
            if errors and on_error == "fail":
                raise errors[0]
            parts.append(part)
            bar.update(len(part))
    return parts


class _LoadChunk:
    """Picklable ``(scratch, items) -> records``: loads each (path, mel_len) of ``items``
    with ``loader`` and writes the arrays, float16 in C order, back to back into the file
    ``scratch``.

    Returns per item a _Loaded, or the InputError that the loader or _checked raised.
    """

    def __init__(self, loader: Callable):
        self.loader = loader

    def __call__(self, scratch: Path, items: list) -> list:
        records = []
        with open(scratch, "wb") as f:
            for path, mel_len in items:
                try:
                    array = _checked(path, np.asarray(self.loader(path)), mel_len)
                except InputError as err:
                    records.append(err)
                    continue
                f.write(array)
                records.append(_Loaded(len(array), array.shape[1], hashlib.sha256(array).digest()))
        return records


def _checked(path, array: np.ndarray, mel_len: int) -> np.ndarray:
    """``array`` (frames, n_mels) as C-ordered float16, after checking that it has the
    ``mel_len`` frames its listing claims (0: none claimed) and that every value fits
    float16 (a larger one would be stored as Inf)."""
    if mel_len and len(array) != mel_len:
        raise InputError(
            path, f"tensor has {len(array)} frames, but its listing's mel_len is {mel_len}"
        )
    if array.size:
        peak = np.unravel_index(np.argmax(np.abs(array)), array.shape)
        value = float(array[peak])
        if abs(value) > FLOAT16_MAX:
            frame, mel = (int(i) for i in peak)
            raise InputError(
                path,
                f"value {value:g} at frame {frame}, mel {mel} is beyond the store's float16 "
                f"range (+-{FLOAT16_MAX:g})",
            )
    return np.ascontiguousarray(array, dtype=STORE_DTYPE)


@contextmanager
def _pool(loader: Callable, workers: int):
    """A process pool for ``loader``; on leaving, tasks not yet started are cancelled."""
    pool = ProcessPoolExecutor(workers, mp_context=_context(loader), initializer=_one_thread)
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


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


def _width(loaded: list) -> int:
    """The n_mels that every ``loaded`` record shares (0 if none)."""
    widths = {r.n_mels for r in loaded}
    if len(widths) > 1:
        raise ValueError(f"loaded arrays differ in width: {sorted(widths)}")
    return widths.pop() if widths else 0


def _assemble(path: Path, scratch: list, part_frames: list, n_mels: int, workers: int) -> None:
    """Create frames.npy at ``path``, (sum(part_frames), n_mels) float16, and copy each
    scratch file (part_frames[i] frames) into its place, ``workers`` copies at a time."""
    frames = np.lib.format.open_memmap(
        path, mode="w+", dtype=STORE_DTYPE, shape=(sum(part_frames), n_mels)
    )
    header = frames.offset
    del frames
    row = n_mels * np.dtype(STORE_DTYPE).itemsize
    starts = header + row * (np.cumsum(part_frames, dtype=np.int64) - part_frames)
    with ThreadPoolExecutor(workers) as threads:
        list(threads.map(partial(_place, path), scratch, starts.tolist()))


def _place(path: Path, scratch: Path, start: int) -> None:
    """Copy all of ``scratch`` into ``path`` at byte ``start`` (in the kernel), then delete it."""
    size, done = scratch.stat().st_size, 0
    with open(scratch, "rb") as src, open(path, "r+b") as dst:
        while done < size:
            copied = os.copy_file_range(src.fileno(), dst.fileno(), size - done, done, start + done)
            if not copied:
                raise OSError(f"{scratch}: ended after {done} of {size} bytes")
            done += copied
    scratch.unlink()


def _write_tables(tmp: Path, kept: list, speaker2id: dict, meta: dict) -> dict:
    """Write utterances.csv, mapping.json and meta.json (with digest and counts) into
    ``tmp`` for ``kept``, the (Utterance, _Loaded) pairs in store order.

    The digest is SHA-256 over every utterance's frame digest, then every (uid, speaker,
    frames) row: independent of the worker count and chunking.
    """
    lengths = np.array([r.frames for _, r in kept], dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    digest = hashlib.sha256()
    for _, r in kept:
        digest.update(r.digest)
    with open(tmp / TABLE_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TABLE_COLUMNS)
        for (u, r), start in zip(kept, offsets):
            writer.writerow([u.uid, u.speaker, u.session, int(start), r.frames, u.path])
            digest.update(f"{u.uid}\t{u.speaker}\t{r.frames}\n".encode())
    write_json(tmp / MAPPING_FILE, mapping_of(speaker2id))
    meta = {
        **meta,
        "digest": digest.hexdigest(),
        "counts": {
            "utterances": len(kept),
            "speakers": len({u.speaker for u, _ in kept if u.speaker}),
            "frames": int(lengths.sum()),
        },
    }
    write_json(tmp / META_FILE, meta)
    return meta


def _swap(tmps: list, folders: list) -> None:
    """Put each built store of ``tmps`` in place of its ``folders`` entry, all or none."""
    olds = [f.with_name(f".{f.name}.old") for f in folders]
    undo = []  # (where a folder is now, where it was), in the order moved
    try:
        for folder, old in zip(folders, olds):
            shutil.rmtree(old, ignore_errors=True)
            if folder.exists():
                folder.rename(old)
                undo.append((old, folder))
        for tmp, folder in zip(tmps, folders):
            tmp.rename(folder)
            undo.append((folder, tmp))
    except BaseException:
        for now, was in reversed(undo):
            now.rename(was)
        raise
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
