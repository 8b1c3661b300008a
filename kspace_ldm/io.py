"""Atomic file writing: a crash never leaves a torn output file behind.

Every writer in the package writes to a temporary name in the destination folder and renames it
into place only when the write has finished (``os.replace`` is atomic on POSIX within one file
system). On error the temporary file is removed, so no partial output survives.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError, KldmError

#: errno -> the words of the one-line message (write failures that are the user's to fix).
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded (no space left for this user)",
    errno.EISDIR: "is a directory, expected a file name",
    errno.ENOTDIR: "a parent of this path is not a directory",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}
# Libraries that report the system errno only inside the message: h5py (HDF5's write failures
# as OSError, "errno = 28") and safetensors' Rust writer (SafetensorError, "os error 28").
_TEXT_ERRNO = re.compile(r"(?:errno = |os error )(\d+)")
#: The first bytes of every HDF5 file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def write_error(err: BaseException, path: str | Path) -> InputError | None:
    """The one-line :class:`InputError` for a failed write of ``path`` (full disk, a directory
    or a file in the way, read-only), or None when ``err`` is not one of those.

    The one place that turns ``OSError`` ENOSPC/EISDIR/ENOTDIR/... into ``<path>: <problem>``:
    :func:`atomic_path` (every writer of the package) and the CLI's error handler use it.
    """
    code = getattr(err, "errno", None) if isinstance(err, OSError) else None
    if code is None:
        m = _TEXT_ERRNO.search(str(err))
        code = int(m.group(1)) if m else None
        if code is None and "No space left" in str(err):
            code = errno.ENOSPC
    if code not in _WRITE_ERRNOS:
        return None
    return InputError(path, _WRITE_ERRNOS[code])


def is_hdf5(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with the HDF5 signature (superblock at offset 0)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(
    path: str | Path, inputs: Iterable[str | Path] = (), *, what: str = "output"
) -> Path:
    """Refuse an output file path that would lose data or fail with a traceback.

    Refused (one-line :class:`InputError`): an existing directory of that name, a parent that is
    a regular file, a path that is (or resolves to, through symlinks) one of ``inputs``, and an
    existing HDF5 file (a k-space or ground-truth volume is never overwritten by a report).
    Every command that writes a named file (``--json``, ``--csv``, ``--markdown``, ``--png``)
    checks its path here before it starts work.
    """
    path = Path(path)
    _check_parents(path)
    if path.is_dir():
        raise InputError(path, f"is a directory; give a file name for the {what}")
    for src in inputs:
        if _same_file(path, Path(src)):
            raise InputError(path, "is an input of this command; refusing to overwrite it")
    if path.exists() and is_hdf5(path):
        raise InputError(path, f"is an HDF5 file; refusing to overwrite it with the {what}")
    return path


def check_output_dir(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse an output folder that is a file, sits below a file, or is (or resolves to) one of
    the folders in ``inputs`` (writing there would replace the inputs by the outputs)."""
    path = Path(path)
    _check_parents(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is not a directory")
    for src in inputs:
        if _same_file(path, Path(src)):
            raise InputError(
                path, f"is the input folder {src}; refusing to write outputs over the inputs"
            )
    return path


def _check_parents(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, f"cannot be created: {parent} is a file, not a directory")
            return


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    Usage::

        with atomic_path("out/file1.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, OSError) as err:
        _raise_write_error(err, path)
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, Exception) and not isinstance(err, KldmError):
            _raise_write_error(err, path)
        raise


def _current_umask() -> int:
    """The process umask (only readable by setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _raise_write_error(err: BaseException, path: Path) -> None:
    """Re-raise a write failure of ``path`` as its one-line error (the temporary file is gone)."""
    if isinstance(err, FileExistsError) or (
        isinstance(err, NotADirectoryError) and not path.parent.is_dir()
    ):
        # mkdir(parents=True) of a folder whose name (or a parent's) is taken by a file
        _check_parents(path)
    one_line = write_error(err, path)
    if one_line is not None:
        raise one_line from err


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (bundle and export manifests)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
