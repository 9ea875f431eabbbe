"""An enrolment bank: speakers added without retraining, each the mean of its normalised
utterance embeddings, tied to the one model whose embeddings it holds.

A bank file is one ``.npz`` (written atomically, read without pickle):
    meta     JSON string: {"version", "model" (digest), "dim", "threshold" (or null)}
    names    (S,) speaker names
    means    (S, E) float32 mean of each speaker's L2-normalised embeddings
    counts   (S,) int64 utterances behind each mean
"""

import hashlib
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from spkid.atomic import atomic_path

BANK_VERSION = 1
BANK_ARRAYS = ("meta", "names", "means", "counts")
UNKNOWN = "unknown"  # the open set's answer below the threshold


class BankError(ValueError):
    """A bank that cannot be used as asked: another model's, another width, a name it lacks."""


@dataclass(frozen=True)
class Bank:
    """Enrolled speakers of one model.

    Args:
        model: the digest of the model whose embeddings the bank holds (model_digest).
        dim: embedding width E.
        names: (S,) speaker names, in enrolment order.
        means: (S, E) float32 mean of each speaker's L2-normalised embeddings.
        counts: (S,) int64 utterances behind each mean.
        threshold: the cosine not above which identify answers UNKNOWN (None: not set; the
            caller's default).
    """

    model: str
    dim: int
    names: tuple
    means: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    threshold: float | None = None


def empty_bank(model: str, dim: int) -> Bank:
    """A bank of nobody for ``model``'s ``dim``-wide embeddings."""
    return Bank(model, dim, (), np.zeros((0, dim), np.float32), np.zeros(0, np.int64))


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names, dtypes, shapes and bytes of every parameter and
    buffer): the same weights give the same digest however they were loaded."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode() + b"\0")
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """(N, E) -> (N, E) float32 rows scaled to unit length."""
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, np.finfo(np.float32).tiny)


def speaker_means(embeddings: np.ndarray, speakers) -> tuple:
    """Per-speaker mean of the L2-normalised embeddings.

    Args:
        embeddings: (N, E).
        speakers: (N,) names.

    Returns:
        (names sorted, (S, E) float32 means (not renormalised), (S,) int64 counts).
    """
    names, inverse, counts = np.unique(
        np.asarray(speakers), return_inverse=True, return_counts=True
    )
    sums = np.zeros((len(names), np.shape(embeddings)[1]), np.float64)
    np.add.at(sums, inverse, normalise(embeddings))
    return [str(n) for n in names], (sums / counts[:, None]).astype(np.float32), counts


def check_model(bank: Bank, model: str, dim: int) -> None:
    """Refuse embeddings of another model (or width) than the bank's."""
    if model != bank.model:
        raise BankError(
            f"the bank holds embeddings of model {bank.model[:12]}, these come from model "
            f"{model[:12]}: scores across models mean nothing; enrol into a new bank for it"
        )
    if dim != bank.dim:
        raise BankError(f"the bank holds {bank.dim}-wide embeddings, these are {dim}-wide")


def enroll(bank: Bank, speaker: str, embeddings: np.ndarray, model: str) -> Bank:
    """The bank with ``speaker`` enrolled from ``embeddings`` (N, E) of ``model``; a speaker
    already there is extended (its mean taken over the old and the new utterances)."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise BankError(
            f"{speaker}: enrolment needs (N, E) embeddings, N >= 1, got {embeddings.shape}"
        )
    check_model(bank, model, embeddings.shape[1])
    _names, mean, count = speaker_means(embeddings, [speaker] * len(embeddings))
    if speaker in bank.names:
        k = bank.names.index(speaker)
        total = bank.counts[k] + count[0]
        means, counts = bank.means.copy(), bank.counts.copy()
        means[k] = (bank.means[k] * bank.counts[k] + mean[0] * count[0]) / total
        counts[k] = total
        return replace(bank, means=means, counts=counts)
    return replace(
        bank,
        names=(*bank.names, speaker),
        means=np.concatenate([bank.means, mean]),
        counts=np.concatenate([bank.counts, count]),
    )


def remove(bank: Bank, speaker: str) -> Bank:
    """The bank without ``speaker``."""
    if speaker not in bank.names:
        raise BankError(f"{speaker!r} is not enrolled; enrolled: {list(bank.names)}")
    keep = [i for i, name in enumerate(bank.names) if name != speaker]
    return replace(
        bank,
        names=tuple(bank.names[i] for i in keep),
        means=bank.means[keep],
        counts=bank.counts[keep],
    )


def listing(bank: Bank) -> list:
    """[(speaker, utterances)] in enrolment order."""
    return [(name, int(n)) for name, n in zip(bank.names, bank.counts)]


def score(bank: Bank, embeddings: np.ndarray, model: str) -> np.ndarray:
    """(N, E) embeddings of ``model`` -> (N, S) cosine to each enrolled speaker's mean."""
    embeddings = np.atleast_2d(np.asarray(embeddings, np.float32))
    check_model(bank, model, embeddings.shape[1])
    return normalise(embeddings) @ normalise(bank.means).T


def best_above(scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N, K) scores -> (N,) int64 column of each row's best score, or -1 where that score is
    not above ``threshold`` (or there is no column)."""
    scores = np.atleast_2d(scores)
    if not scores.shape[1]:
        return np.full(len(scores), -1, np.int64)
    best = scores.argmax(1)
    return np.where(scores[np.arange(len(scores)), best] > threshold, best, -1)


def save_bank(bank: Bank, path) -> None:
    """Write ``bank`` to ``path`` (.npz) atomically."""
    meta = json.dumps(
        {"version": BANK_VERSION, "model": bank.model, "dim": bank.dim, "threshold": bank.threshold}
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            meta=np.array(meta),
            names=np.array(bank.names, dtype=str),
            means=bank.means.astype(np.float32),
            counts=bank.counts.astype(np.int64),
        )


def load_bank(path) -> Bank:
    """The bank in ``path`` (a clear BankError for a file that is not one)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise BankError(f"{path}: not an enrolment bank ({err})") from None
    missing = sorted(set(BANK_ARRAYS) - set(getattr(data, "files", ())))
    if missing:
        raise BankError(f"{path}: not an enrolment bank (it lacks {missing})")
    with data:
        meta = json.loads(str(data["meta"]))
        names, means, counts = data["names"], data["means"], data["counts"]
    if meta.get("version") != BANK_VERSION:
        raise BankError(
            f"{path}: bank version {meta.get('version')}; this code reads {BANK_VERSION}"
        )
    names = tuple(str(n) for n in names)
    return Bank(meta["model"], meta["dim"], names, means, counts, meta.get("threshold"))


def open_bank(path, model: str, dim: int) -> Bank:
    """The bank in ``path`` if there is one (refused if another model's), else a new empty
    bank for ``model``: what enrolment starts from."""
    if not Path(path).exists():
        return empty_bank(model, dim)
    bank = load_bank(path)
    try:
        check_model(bank, model, dim)
    except BankError as err:
        raise BankError(f"{path}: {err}") from None
    return bank
