"""kspace_ldm.io.atomic_path: the file appears whole with the mode a plain open() would give."""

import os
import stat

import pytest

from kspace_ldm.io import atomic_path


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_output_gets_umask_mode(tmp_path, umask):
    # mkstemp makes 0600 files; outputs must be readable by whoever a normal write would allow.
    old = os.umask(umask)
    try:
        target = tmp_path / "out.h5"
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"data")
        mode = stat.S_IMODE(target.stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o666 & ~umask
    assert target.read_bytes() == b"data"


def test_atomic_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
