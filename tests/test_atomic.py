"""Atomic writes: the old file or the new one, with the mode a plain open would give."""

import os
import stat

import pytest

from spkid.atomic import atomic_path, write_csv, write_json, write_text


@pytest.fixture
def umask():
    """Set a umask for one test, restoring the old one after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("write", [write_text, write_json, write_csv])
def test_written_files_keep_the_umask(tmp_path, umask, mask, mode, write):
    umask(mask)
    path = tmp_path / "out" / "file"
    args = {write_text: ("x",), write_json: ({"a": 1},), write_csv: (["h"], [[1]])}[write]
    write(path, *args)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.umask(mask) == mask  # the umask itself is left as it was


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError, match="half way"), atomic_path(path) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("half way")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
