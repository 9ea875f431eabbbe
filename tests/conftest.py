"""Shared fixtures: a tiny feature store built from random features."""

import numpy as np
import pytest

from spkid.data.store import write_store
from spkid.data.utterance import Utterance


def make_store(folder, n_speakers=4, per_speaker=10, n_mels=40, seed=0, sessions=1):
    """A store whose speakers differ by a mean offset (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    utts, arrays = [], []
    for s in range(n_speakers):
        centre = rng.normal(0, 2, n_mels)
        for k in range(per_speaker):
            n = int(rng.integers(40, 160))
            arrays.append((centre + rng.normal(0, 1, (n, n_mels))).astype(np.float32) - 5)
            name = f"spk{s}"
            utts.append(
                Utterance(
                    f"{name}/u{k}.wav", name, f"{name}-s{k % sessions}", f"/x/{name}/u{k}.wav"
                )
            )
    speaker2id = {f"spk{s}": s for s in range(n_speakers)}
    write_store(folder, utts, arrays, speaker2id, {"frontend": {"n_mels": n_mels}})
    return folder


@pytest.fixture
def tiny_store(tmp_path):
    return make_store(tmp_path / "store")
