"""The ``identify`` command's library call: speakers of audio files, written as a CSV, among
the model's trained speakers or (bank mode) among an enrolment bank's speakers, optionally the
trained speakers too, or unknown.

A file that cannot be used (unreadable, empty, too short) gets a row with its reason in
``error`` and does not stop the others.
"""

import sys
from pathlib import Path

from tqdm import tqdm

from spkid.data.errors import InputError
from spkid.data.sources import list_audio
from spkid.evaluate import bank as banks
from spkid.runtime import pick_device
from spkid.serve.identifier import TRAINED, Answer, Identifier, length_batches, threshold_for

COLUMNS = ("file", "speaker", "probability", "top_k", "error")
BANK_COLUMNS = ("file", "speaker", "kind", "score", "top_k", "error")


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
    rows = failed_rows(bad, COLUMNS)
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


def identify_bank(
    identifier: Identifier,
    bank: banks.Bank,
    inputs: list,
    top_k: int = 5,
    threshold: float | None = None,
    device: str = "auto",
    with_classes: bool = False,
) -> list:
    """Rows of the bank-mode table (see BANK_COLUMNS): each file's best candidate by cosine
    (Identifier.open_set), or UNKNOWN where it is not above the threshold.

    Args:
        identifier: one network and its front end (the bank's model).
        bank: enrolled speakers (checked_bank).
        inputs: files and folders.
        top_k: candidates listed per file.
        threshold: None: the bank's stored one, else DEFAULT_THRESHOLD.
        device: auto, cpu, cuda or cuda:N.
        with_classes: the trained speakers are candidates too (a cosine head's class weights).
    """
    if with_classes:
        identifier.class_centres()  # refused before any file is read
    identifier.to(pick_device(device))
    files, good, features, bad = read_inputs(identifier, inputs)
    rows = failed_rows(bad, BANK_COLUMNS)
    if good:
        cut = threshold_for(bank, threshold)
        for path, answer in zip(
            good, identifier.open_set(bank, features, top_k, cut, with_classes)
        ):
            rows[path] = answer_row(path, answer)
    return sorted(rows.values(), key=order(files))


def answer_row(path: str, answer: Answer) -> list:
    """file, the answer, its kind, its best cosine, ``speaker:cosine`` of the top k (a trained
    speaker as ``speaker[trained]:cosine``), no error."""
    listed = " ".join(
        f"{name}[{TRAINED}]:{s:.4f}" if kind == TRAINED else f"{name}:{s:.4f}"
        for name, kind, s in answer.top
    )
    best = "" if answer.score is None else f"{answer.score:.6f}"
    return [path, answer.speaker, answer.kind, best, listed, ""]


def failed_rows(bad: list, columns: tuple) -> dict:
    """path -> a row of ``columns`` holding only the path and its reason in ``error``."""
    return {path: [path, *[""] * (len(columns) - 2), reason] for path, reason in bad}


def ranking_row(path: str, ranking) -> list:
    """file, top speaker, its probability, ``speaker:probability`` of the top k, no error."""
    top = " ".join(f"{s}:{p:.4f}" for s, p in zip(ranking.speakers, ranking.probabilities))
    return [path, ranking.speakers[0], f"{ranking.probabilities[0]:.6f}", top, ""]


def order(files: list):
    """Sort key: the files in their listed order, then the inputs that were no files."""
    position = {p: i for i, p in enumerate(files)}
    return lambda row: position.get(row[0], len(files))
