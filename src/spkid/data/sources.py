"""Sources: where utterances come from and how each becomes (frames, n_mels) features.

demo       the generated corpus (spkid.data.demo), read as audio_dir
hw4        the Kaggle HW4 Dataset folder as shipped
audio_dir  <dir>/<speaker>/**/<utt>.<ext>; the first folder below the speaker is the
           session (VoxCeleb's video id); an optional unlabeled test folder
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from spkid.data.demo import DemoConfig, generate
from spkid.data.errors import InputError
from spkid.data.frontend import FrontEnd, audio_features
from spkid.data.hw4 import load_hw4_tensor, read_hw4
from spkid.data.utterance import Utterance

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class SourceConfig:
    """The params.yaml ``source`` block.

    Args:
        name: demo, hw4 or audio_dir.
        dir: hw4: the Dataset folder; audio_dir: the speakers' root; demo: ignored.
        test_dir: audio_dir only: an optional folder of unlabeled test audio.
        demo: the demo corpus generator's settings.
    """

    name: Literal["demo", "hw4", "audio_dir"] = "demo"
    dir: str = ""
    test_dir: str = ""
    demo: DemoConfig = field(default_factory=DemoConfig)


@dataclass
class Listing:
    """What a source offers: labeled pool, unlabeled test set and how to load them.

    ``rejected`` holds the entries dropped while listing, each with "set" ("train" or
    "test"), "path", "reason" and, where it is an utterance of its own, "uid".
    """

    pool: list
    test: list
    speaker2id: dict
    loader: Callable
    rejected: list


def list_source(cfg: SourceConfig, fe: FrontEnd, on_error: str, workdir) -> Listing:
    """List ``cfg``'s utterances; the demo corpus is generated into ``workdir`` first."""
    if cfg.name == "hw4":
        pool, test, speaker2id, rejected = read_hw4(cfg.dir, on_error=on_error, n_mels=fe.n_mels)
        return Listing(pool, test, speaker2id, partial(load_hw4_tensor, n_mels=fe.n_mels), rejected)
    if cfg.name == "demo":
        generate(workdir, cfg.demo)
        train_dir, test_dir = Path(workdir) / "train", Path(workdir) / "test"
    else:
        train_dir, test_dir = Path(cfg.dir), Path(cfg.test_dir) if cfg.test_dir else None
    pool = list_speaker_dirs(train_dir)
    test = list_audio(test_dir) if test_dir else []
    speaker2id = {s: i for i, s in enumerate(sorted({u.speaker for u in pool}))}
    return Listing(pool, test, speaker2id, partial(audio_features, fe=fe), [])


def _audio_files(root: Path) -> list:
    """Audio files under ``root``, through symlinked folders too (a corpus assembled from
    links to speaker folders elsewhere; Path.rglob does not follow them before 3.13), each
    real folder walked once (a link back up cannot loop)."""
    seen, files = set(), []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        files += [Path(folder, n) for n in names if Path(n).suffix.lower() in AUDIO_EXTENSIONS]
    return sorted(files)


def list_speaker_dirs(root) -> list:
    """Utterances of ``root/<speaker>/[<session>/...]<utt>.<ext>``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "audio folder does not exist")
    utterances = []
    for path in _audio_files(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue
        session = parts[1] if len(parts) > 2 else parts[0]
        utterances.append(Utterance(str(Path(*parts)), parts[0], session, str(path.resolve())))
    if not utterances:
        raise InputError(root, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in speaker folders")
    return utterances


def list_audio(root) -> list:
    """Unlabeled utterances of every audio file under ``root``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "test folder does not exist")
    return [
        Utterance(str(p.relative_to(root)), "", "", str(p.resolve())) for p in _audio_files(root)
    ]
