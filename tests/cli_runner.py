"""``run``: invoke the ``kldm`` CLI in-process (click's CliRunner) for the end-to-end tests."""

from __future__ import annotations

from click.testing import CliRunner, Result

from kspace_ldm.cli import main


def run(*args, ok: bool = True) -> Result:
    """``kldm ARGS...`` (each argument passed through ``str``); with ``ok`` assert exit code 0."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result
