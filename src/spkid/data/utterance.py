"""The record every source lists: one utterance and where its data lives."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Utterance:
    """One utterance of a source.

    Args:
        uid: stable id, unique in its set; the hw4 ``feature_path`` or the audio file's
            path relative to its set's root (this is the Kaggle submission ``Id``).
        speaker: speaker name, or "" for unlabeled test utterances.
        session: recording session (VoxCeleb's video id); the speaker where unknown.
        path: absolute path of the file holding the data.
        mel_len: the frame count its listing claims (HW4's mel_len), checked against the
            loaded features; 0 where the source claims none.
    """

    uid: str
    speaker: str
    session: str
    path: str
    mel_len: int = 0
