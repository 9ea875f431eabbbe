"""Utterance embeddings: a checkpoint's L2-normalised head input for every utterance of the
valid split, the held-out speakers and the test set: the `embed` stage's call; and the fusion
of several tiers' embeddings of the same utterances (the ensemble's).

An embedding folder holds:
    valid.npy, heldout.npy, test.npy   (N, E) float32 unit-length rows, one set each
    index.csv                          set, row, uid, speaker (a row of its set's array)
    meta.json                          model digest, checkpoint, width, rows per set
"""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spkid.atomic import atomic_path, write_csv, write_json
from spkid.checkpoint import load_model
from spkid.data.store import STORE_DTYPE, FeatureStore, open_store
from spkid.evaluate.bank import model_digest, normalise
from spkid.runtime import DeviceData, autocast, pick_device, resolve_precision

EMBED_SETS = ("valid", "heldout", "test")
INDEX_FILE = "index.csv"
META_FILE = "meta.json"


@torch.no_grad()
def embed_utterances(model, data: DeviceData, max_frames: int, precision: str = "fp32"):
    """L2-normalised embeddings (``model.embed``, the head's input) of every utterance of
    ``data`` at full length, in its order.

    Args:
        model: a SpeakerNet.
        data: the utterances.
        max_frames: frames per padded batch.
        precision: a resolved precision (runtime.resolve_precision): bf16, fp16 or fp32.

    Returns:
        (U, E) float32 tensor on the data's device; (0, 0) for no utterances.
    """
    was_training = model.training
    model.eval()
    out = torch.empty(0, 0, device=data.device)
    for index, feats, lengths in data.full_batches(max_frames):
        with autocast(data.device, precision):
            emb = F.normalize(model.embed(feats, lengths).float(), dim=1)  # (B, E)
        if not out.numel():
            out = torch.empty(len(data), emb.shape[1], device=data.device)
        out[index] = emb
    model.train(was_training)
    return out


def embed_arrays(model, feats: list, device, max_frames: int = 65536, precision="fp32"):
    """L2-normalised embeddings of feature arrays not in a store (enrolment, identification).

    Args:
        model: a SpeakerNet.
        feats: N (T_i, n_mels) log-mel arrays, as the front end gives them (stored as
            float16, as the training store holds them).
        device: where to run.
        max_frames, precision: as for embed_utterances.

    Returns:
        (N, E) float32 numpy array.
    """
    lengths = np.array([len(f) for f in feats], np.int64)
    store = FeatureStore(
        frames=np.concatenate(feats).astype(STORE_DTYPE),
        uids=[str(i) for i in range(len(feats))],
        speakers=[""] * len(feats),
        sessions=[""] * len(feats),
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths,
        labels=np.full(len(feats), -1, np.int64),
        speaker2id={},
        meta={},
    )
    data = DeviceData(store, np.arange(len(feats)), torch.device(device))
    return embed_utterances(model, data, max_frames, precision).cpu().numpy()


def write_embeddings(
    checkpoint,
    store_dir,
    test_dir,
    split_file,
    out_dir,
    device="auto",
    max_frames=65536,
    precision="auto",
) -> dict:
    """Embed the valid split, the held-out speakers (split.json's ``heldout``) and the test
    store with one checkpoint; write the embedding folder ``out_dir``.

    Returns:
        the meta written (model digest, width, rows per set); ``precision`` is train.precision
    (float32 on CPUs).
    """
    dev = pick_device(device)
    precision = resolve_precision(precision, dev)
    model, _ckpt = load_model(checkpoint, dev)
    split = json.loads(Path(split_file).read_text())
    train, test = open_store(store_dir), open_store(test_dir)
    sources = {"valid": (train, split["valid"]), "heldout": (train, split["heldout"])}
    sources["test"] = (test, np.arange(len(test)))
    out, rows, counts, width = Path(out_dir), [], {}, 0
    for name in EMBED_SETS:
        store, indices = sources[name]
        emb = embed_utterances(model, DeviceData(store, indices, dev), max_frames, precision)
        with atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, emb.cpu().numpy())
        rows += [[name, r, store.uids[i], store.speakers[i]] for r, i in enumerate(indices)]
        counts[name], width = len(indices), max(width, emb.shape[1])
    write_csv(out / INDEX_FILE, ["set", "row", "uid", "speaker"], rows)
    meta = {"model": model_digest(model), "checkpoint": str(checkpoint), "dim": width, **counts}
    write_json(out / META_FILE, meta)
    return meta


def read_embeddings(folder, name: str) -> tuple:
    """One set of an embedding folder.

    Returns:
        ((N, E) float32 embeddings, (N,) uids, (N,) speakers).
    """
    folder = Path(folder)
    if name not in EMBED_SETS:
        raise ValueError(f"{name!r} is not an embedding set; valid: {list(EMBED_SETS)}")
    with open(folder / INDEX_FILE, newline="") as f:
        index = [r for r in csv.DictReader(f) if r["set"] == name]
    emb = np.load(folder / f"{name}.npy")
    if len(emb) != len(index):
        raise ValueError(f"{folder}: {name}.npy has {len(emb)} rows, {INDEX_FILE} {len(index)}")
    return emb, [r["uid"] for r in index], [r["speaker"] for r in index]


def read_meta(folder) -> dict:
    """An embedding folder's meta.json."""
    return json.loads((Path(folder) / META_FILE).read_text())


def read_fused(folders: list, name: str) -> tuple:
    """One set of several embedding folders of the same utterances, fused: each folder's
    unit-length rows side by side, scaled by 1 / sqrt(M). The fused rows have unit length and
    the cosine of two of them is the mean of the M members' cosines (score-level fusion with
    equal weights). One folder: its own rows.

    Args:
        folders: M embedding folders (each tier's of one split).
        name: the set (EMBED_SETS).

    Returns:
        ((N, E_1 + ... + E_M) float32 embeddings, (N,) uids, (N,) speakers).
    """
    parts = [read_embeddings(f, name) for f in folders]
    for folder, (_emb, uids, _speakers) in zip(folders[1:], parts[1:]):
        if uids != parts[0][1]:
            raise ValueError(
                f"{folder} and {folders[0]} hold different {name} utterances: embed every "
                "member on the same split"
            )
    fused = np.concatenate([normalise(emb) for emb, _u, _s in parts], axis=1)
    return fused / np.float32(np.sqrt(len(parts))), parts[0][1], parts[0][2]


def fused_digest(folders: list) -> str:
    """The model digest of ``folders`` fused (read_fused): one folder's own, else the SHA-256
    of the members' digests in order."""
    digests = [read_meta(f)["model"] for f in folders]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("+".join(digests).encode()).hexdigest()
