"""The ``identify`` command's library call: speakers of audio files, written as a CSV, among
the model's trained speakers or (bank mode) among an enrolment bank's speakers.

A file that cannot be used (unreadable, empty, too short) gets a row with its reason in
``error`` and does not stop the others.
"""

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spkid.data.errors import InputError
from spkid.data.sources import list_audio
from spkid.evaluate import bank as banks
from spkid.runtime import pick_device
from spkid.serve.identifier import Identifier, length_batches

COLUMNS = ("file", "speaker", "probability", "top_k", "error")
BANK_COLUMNS = ("file", "speaker", "score", "top_k", "error")
DEFAULT_THRESHOLD = 0.5  # cosine; a bank without a stored threshold, no --threshold


def load_identifier(model: str) -> Identifier:
    """An Identifier from a checkpoint file, or from an MLflow model URI (``models:/...``,
    ``runs:/<id>/model``...) through the tracking store."""
    if Path(model).is_file():
        return Identifier.from_checkpoints([model])
    from spkid import tracking  # mlflow only when a URI asks for it

    return tracking.load_identifier(model)


def list_inputs(inputs: list) -> tuple:
    """Audio files of ``inputs`` (files, and the audio files under folders, sorted).

    Returns:
        (files: list of str, bad: list of (path, reason)).
    """
    files, bad = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = [u.path for u in list_audio(item)]
            files += found
            if not found:
                bad.append((str(item), "no audio files in folder"))
        elif item.is_file():
            files.append(str(item))
        else:
            bad.append((str(item), "no such file or folder"))
    return files, bad


def identify(identifier: Identifier, inputs: list, top_k: int = 5, device: str = "auto") -> list:
    """Rows of the result table (see COLUMNS) for every audio file of ``inputs``, in order.

    Args:
        identifier: the network(s), speakers and front end.
        inputs: files and folders.
        top_k: speakers listed per file.
        device: auto, cpu, cuda or cuda:N.
    """
    identifier.to(pick_device(device))
    files, good, features, bad = read_inputs(identifier, inputs)
    rows = {path: [path, "", "", "", reason] for path, reason in bad}
    with tqdm(total=len(good), desc="identify", unit="file", file=sys.stderr) as bar:
        for index in length_batches([len(f) for f in features]):
            logp = identifier.log_probs([features[i] for i in index])
            for i, ranking in zip(index, identifier.rank(logp, top_k)):
                rows[good[i]] = ranking_row(good[i], ranking)
            bar.update(len(index))
    return list(rows.values()) if not files else sorted(rows.values(), key=order(files))


def read_inputs(identifier: Identifier, inputs: list) -> tuple:
    """The front end's features of every audio file of ``inputs``.

    Returns:
        (files: all listed files, good: the files read, features: their float32
        (frames, n_mels) arrays, bad: (path, reason) of what could not be read).
    """
    files, bad = list_inputs(inputs)
    good, features = [], []
    for path in tqdm(files, desc="features", unit="file", file=sys.stderr):
        try:
            features.append(identifier.audio(path))
            good.append(path)
        except InputError as error:
            bad.append((path, error.reason))
    return files, good, features, bad


def checked_bank(path, identifier: Identifier) -> banks.Bank:
    """The bank in ``path``, refused (BankError naming ``path``) if another model's."""
    bank = banks.load_bank(path)
    try:
        banks.check_model(bank, identifier.model_digest(), bank.dim)
    except banks.BankError as err:
        raise banks.BankError(f"{path}: {err}") from None
    return bank


def identify_bank(
    identifier: Identifier,
    bank: banks.Bank,
    inputs: list,
    top_k: int = 5,
    threshold: float | None = None,
    device: str = "auto",
) -> list:
    """Rows of the bank-mode table (see BANK_COLUMNS): each file's best enrolled speaker by
    cosine, or UNKNOWN where it is not above the threshold.

    Args:
        identifier: one network and its front end (the bank's model).
        bank: enrolled speakers (checked_bank).
        inputs: files and folders.
        top_k: enrolled speakers listed per file.
        threshold: None: the bank's stored one, else DEFAULT_THRESHOLD.
        device: auto, cpu, cuda or cuda:N.
    """
    if threshold is None:
        threshold = DEFAULT_THRESHOLD if bank.threshold is None else bank.threshold
    identifier.to(pick_device(device))
    files, good, features, bad = read_inputs(identifier, inputs)
    rows = {path: [path, "", "", "", reason] for path, reason in bad}
    if good:
        emb, digest = identifier.embed(features), identifier.model_digest()
        names = banks.identify(bank, emb, digest, threshold)
        for path, name, scores in zip(good, names, banks.score(bank, emb, digest)):
            rows[path] = bank_row(path, name, scores, bank.names, top_k)
    return sorted(rows.values(), key=order(files))


def bank_row(path: str, name: str, scores, enrolled: tuple, top_k: int) -> list:
    """file, the answer, its best cosine, ``speaker:cosine`` of the top k, no error."""
    top = np.argsort(-scores, kind="stable")[:top_k]
    listed = " ".join(f"{enrolled[k]}:{scores[k]:.4f}" for k in top)
    best = f"{scores[top[0]]:.6f}" if len(top) else ""
    return [path, name, best, listed, ""]


def ranking_row(path: str, ranking) -> list:
    """file, top speaker, its probability, ``speaker:probability`` of the top k, no error."""
    top = " ".join(f"{s}:{p:.4f}" for s, p in zip(ranking.speakers, ranking.probabilities))
    return [path, ranking.speakers[0], f"{ranking.probabilities[0]:.6f}", top, ""]


def order(files: list):
    """Sort key: the files in their listed order, then the inputs that were no files."""
    position = {p: i for i, p in enumerate(files)}
    return lambda row: position.get(row[0], len(files))
