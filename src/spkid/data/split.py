"""Speaker-stratified train/valid split, grouped by session where sessions are known, with
whole speakers optionally held out of training (for verification and open-set tests)."""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from spkid.config import check

MIN_HELDOUT = 2  # held-out speakers: verification needs non-target pairs, open-set an impostor
MIN_TRAINED = 2  # trained speakers: a classifier needs two classes


@dataclass(frozen=True)
class SplitConfig:
    """The ``split`` block, resolved for a profile (its ``demo`` and ``course`` sub-blocks
    override these keys; see spkid.params.parse_params).

    Args:
        valid_ratio: fraction of each trained speaker's utterances that goes to valid, in [0, 1).
        heldout_speakers: fraction of the speakers kept wholly out of training and valid,
            in [0, 1); 0 (the course's closed set) holds none out.
    """

    valid_ratio: float
    heldout_speakers: float = 0.0

    def __post_init__(self):
        for name in ("valid_ratio", "heldout_speakers"):
            value = getattr(self, name)
            check(0.0 <= value < 1.0, f"split.{name}", f"must be in [0, 1), got {value}")


def heldout_speakers(speakers, fraction: float, seed: int) -> list:
    """The speakers kept out of training: ``round(fraction * S)`` of the S distinct ones,
    drawn by ``seed``.

    Args:
        speakers: (U,) speaker name per utterance.
        fraction: in [0, 1); 0 holds none out.
        seed: drawing seed.

    Returns:
        the held-out speaker names, sorted.
    """
    names = sorted(set(speakers))
    count = round(fraction * len(names))
    if fraction > 0 and not (count >= MIN_HELDOUT and len(names) - count >= MIN_TRAINED):
        raise ValueError(
            f"split.heldout_speakers {fraction} of {len(names)} speakers holds out {count}: "
            f"at least {MIN_HELDOUT} must be held out and {MIN_TRAINED} trained"
        )
    picked = np.random.default_rng(seed).choice(len(names), count, replace=False)
    return sorted(names[i] for i in picked)


def split_utterances(speakers, sessions, config: SplitConfig, seed: int) -> dict:
    """Held-out speakers first (all their utterances), then the train/valid split of the rest.

    Args:
        speakers, sessions: (U,) per utterance, as for split_indices.
        config: the split block.
        seed: base seed.

    Returns:
        {"train", "valid", "heldout": sorted utterance index lists, "heldout_speakers": names};
        without held-out speakers train and valid are split_indices' on every utterance.
    """
    held = set(heldout_speakers(speakers, config.heldout_speakers, seed))
    kept = np.array([i for i, s in enumerate(speakers) if s not in held], dtype=np.int64)
    train, valid = split_indices(
        [speakers[i] for i in kept], [sessions[i] for i in kept], config.valid_ratio, seed
    )
    return {
        "train": kept[train].tolist(),
        "valid": kept[valid].tolist(),
        "heldout": [i for i, s in enumerate(speakers) if s in held],
        "heldout_speakers": sorted(held),
    }


def trained_mapping(speaker2id: dict, speakers) -> dict:
    """``speaker2id`` restricted to ``speakers`` and renumbered 0..C-1 in its own order: the
    class ids of a model trained on those speakers (the store's own mapping when every
    speaker is trained).

    Args:
        speaker2id: the store's mapping.
        speakers: the trained speakers' names (any iterable, repeats allowed).
    """
    kept = set(speakers)
    order = sorted((i, s) for s, i in speaker2id.items() if s in kept)
    return {s: k for k, (_i, s) in enumerate(order)}


def split_indices(speakers, sessions, valid_ratio: float, seed: int) -> tuple:
    """Split utterance indices per speaker into train and valid.

    Each speaker gives about ``valid_ratio`` of its utterances to valid, whole sessions at
    a time when it has more than one session (so no session is on both sides), single
    utterances otherwise. Every speaker keeps at least one training utterance.

    Args:
        speakers: (U,) speaker name per utterance.
        sessions: (U,) session per utterance (the speaker itself where unknown).
        valid_ratio: fraction in (0, 1) that goes to valid (training needs a valid set: it
            picks best.pt and stops early on it).
        seed: shuffling seed.

    Returns:
        (train, valid): sorted int64 index arrays.
    """
    if not 0.0 < valid_ratio < 1.0:
        raise ValueError(
            f"split.valid_ratio must be in (0, 1), got {valid_ratio}: training validates "
            "to pick best.pt and to stop early"
        )
    rng = np.random.default_rng(seed)
    by_speaker = defaultdict(lambda: defaultdict(list))
    for i, (spk, ses) in enumerate(zip(speakers, sessions)):
        by_speaker[spk][ses].append(i)
    valid = []
    for spk in sorted(by_speaker):
        groups = list(by_speaker[spk].values())
        if len(groups) == 1:
            groups = [[i] for i in groups[0]]
        total = sum(len(g) for g in groups)
        target = round(valid_ratio * total)
        taken = 0
        for g in (groups[j] for j in rng.permutation(len(groups))):
            if taken >= target or total - taken - len(g) < 1:
                continue
            valid.extend(g)
            taken += len(g)
    if not valid:
        raise ValueError(f"split.valid_ratio {valid_ratio} puts no utterance in valid: raise it")
    valid = np.array(sorted(valid), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(speakers)), valid).astype(np.int64)
    return train, valid
