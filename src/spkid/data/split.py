"""Speaker-stratified train/valid split, grouped by session where sessions are known."""

from collections import defaultdict

import numpy as np


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
