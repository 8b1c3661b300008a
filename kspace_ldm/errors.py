"""Errors that the CLI turns into one-line messages and exit code 2."""

from __future__ import annotations

from pathlib import Path


class KldmError(Exception):
    """Base class of every error the package raises on purpose for bad input."""


class InputError(KldmError):
    """Bad input: a file or value that cannot be used, with the file and the problem named.

    ``str(err)`` is the one-line message the CLI prints, e.g.
    ``data/file1.h5: missing HDF5 key 'kspace'``.
    """

    def __init__(self, source: str | Path | None, problem: str):
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class KldmWarning(UserWarning):
    """Something suspicious about an input that is used anyway (the CLI prints one line
    ``kldm: warning: <file>: <problem>``)."""
