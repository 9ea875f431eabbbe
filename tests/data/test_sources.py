"""Listing utterances of audio folders (spkid.data.sources)."""

import os

import pytest

from spkid.data.errors import InputError
from spkid.data.sources import list_audio, list_speaker_dirs


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_speaker_folders_linked_from_elsewhere_are_listed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere / "spk2" / "s1" / "b.flac")
    touch(elsewhere / "spk2" / "s1" / "c.wav")
    root = tmp_path / "corpus"
    touch(root / "spk1" / "a.wav")
    os.symlink(elsewhere / "spk2", root / "spk2")
    utts = list_speaker_dirs(root)
    assert [(u.uid, u.speaker, u.session) for u in utts] == [
        ("spk1/a.wav", "spk1", "spk1"),
        ("spk2/s1/b.flac", "spk2", "s1"),
        ("spk2/s1/c.wav", "spk2", "s1"),
    ]
    assert utts[1].path == str((elsewhere / "spk2" / "s1" / "b.flac").resolve())


def test_a_link_back_up_does_not_loop_or_repeat_files(tmp_path):
    root = tmp_path / "corpus"
    touch(root / "spk1" / "a.wav")
    os.symlink(root, root / "spk1" / "again")  # spk1/again -> the corpus itself
    assert [u.uid for u in list_speaker_dirs(root)] == ["spk1/a.wav"]
    assert [u.uid for u in list_audio(root)] == ["spk1/a.wav"]


def test_a_folder_without_speaker_audio_is_an_error_naming_it(tmp_path):
    touch(tmp_path / "loose.wav")  # no speaker folder above it
    with pytest.raises(InputError, match=str(tmp_path)):
        list_speaker_dirs(tmp_path)
