"""The ``enroll`` command's library calls: speakers added to an enrolment bank from folders of
their audio files, without retraining (spkid.evaluate.bank holds the bank itself).

A file that cannot be used (unreadable, empty, too short) is reported with its reason and does
not stop the others; a folder with no usable file enrols nobody.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from spkid.evaluate import bank as banks
from spkid.runtime import pick_device
from spkid.serve.identifier import Identifier, checked_bank
from spkid.serve.identify import read_inputs


@dataclass(frozen=True)
class Enrolment:
    """What one enrolment did.

    Args:
        bank: the bank after it.
        enrolled: [(speaker, files used)].
        bad: [(path, reason)] of files (or folders) not used.
    """

    bank: banks.Bank
    enrolled: list
    bad: list


def enroll_folders(
    identifier: Identifier, bank_path, folders: list, names: list, device: str = "auto"
) -> Enrolment:
    """Enrol each folder's speaker (``names``, one per folder) into the bank at ``bank_path``
    (a new one if there is none; refused, naming the file, if another model's) and save it.

    Args:
        identifier: one network and its front end.
        bank_path: the bank file (.npz).
        folders: one folder (or file) of audio per speaker.
        names: the speakers' names.
        device: auto, cpu, cuda or cuda:N.
    """
    digest = identifier.model_digest()
    bank = checked_bank(bank_path, identifier) if Path(bank_path).exists() else None
    identifier.to(pick_device(device))
    enrolled, bad = [], []
    for folder, name in zip(folders, names):
        _files, good, features, failed = read_inputs(identifier, [folder])
        bad += failed
        if not good:
            bad.append((str(folder), f"no usable audio: {name} not enrolled"))
            continue
        emb = identifier.embed(features)
        if bank is None:
            bank = banks.empty_bank(digest, emb.shape[1])
        bank = banks.enroll(bank, name, emb, digest)
        enrolled.append((name, len(good)))
    if enrolled:
        banks.save_bank(bank, bank_path)
    return Enrolment(bank, enrolled, bad)


def remove_speakers(bank_path, names: list) -> banks.Bank:
    """The bank at ``bank_path`` without ``names`` (BankError for one not enrolled: nothing
    removed then), saved."""
    bank = banks.load_bank(bank_path)
    for name in names:
        bank = banks.remove(bank, name)
    banks.save_bank(bank, bank_path)
    return bank


def set_threshold(bank_path, threshold: float) -> banks.Bank:
    """Store the open-set ``threshold`` (a cosine) in the bank at ``bank_path``."""
    bank = replace(banks.load_bank(bank_path), threshold=threshold)
    banks.save_bank(bank, bank_path)
    return bank


def threshold_of(value: str) -> float:
    """A cosine threshold from a number or from a verify stage's metrics.json (its
    ``openset.threshold``, calibrated on held-out speakers)."""
    try:
        return float(value)
    except ValueError:
        pass
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--threshold {value!r}: neither a number nor a metrics file")
    try:
        return float(json.loads(path.read_text())["openset"]["threshold"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: no openset.threshold number in it ({err!r})") from None
