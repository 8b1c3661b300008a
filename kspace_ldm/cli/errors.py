"""The one error handler of ``kldm``: every failure that is the user's to fix ends with one line
``kldm: error: ...`` on stderr and exit code 2.

:class:`OneLineGroup` (the ``kldm`` group) runs every subcommand, its option parsing included,
under :func:`one_line_errors`, which turns

- the package's input errors (:class:`KldmError`: a file with a missing key, a mask that does not
  fit, an unknown value) into ``kldm: error: <file>: <problem>``;
- the write failures that are the user's to fix (full disk, a directory or file in the way:
  :func:`kspace_ldm.io.write_error`) into ``kldm: error: <file>: <problem>``;
- Click's usage errors (Click's own take four lines: usage, hint, blank, error) into
  ``kldm: error: kldm CMD: <problem> (see kldm CMD --help)``;

and prints each :class:`KldmWarning` as one line ``kldm: warning: ...``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

import click

from kspace_ldm.errors import KldmError, KldmWarning

EXIT_BAD_INPUT = 2

# Click >= 8.2 raises this (a UsageError) for a group called without arguments: it shows help.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class OneLineError(click.ClickException):
    """An error shown as the one line ``kldm: error: <message>``, exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file=None) -> None:
        click.echo(f"kldm: error: {self.message}", err=True)


def _usage_line(err: click.UsageError) -> OneLineError:
    where = err.ctx.command_path if err.ctx is not None else "kldm"
    text = " ".join(err.format_message().split())
    return OneLineError(f"{where}: {text} (see {where} --help)")


def _show_warning_line(shown):
    """A ``warnings.showwarning`` that prints :class:`KldmWarning` s as one line each and leaves
    every other warning to ``shown``."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, KldmWarning):
            from tqdm import tqdm

            # tqdm.write: on a line of its own even while a progress bar is drawn
            tqdm.write(f"kldm: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    return show


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Run a command: its errors that are the user's to fix become :class:`OneLineError`."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning_line(warnings.showwarning)
        try:
            yield
        except _NO_ARGS_IS_HELP:
            raise  # a bare group name prints its help, as before
        except click.UsageError as err:
            raise _usage_line(err) from None
        except KldmError as err:
            raise OneLineError(str(err)) from None
        except OSError as err:
            from kspace_ldm.io import write_error

            one_line = write_error(err, err.filename or "output")
            if one_line is None:
                raise
            raise OneLineError(one_line) from None


class OneLineGroup(click.Group):
    """The ``kldm`` group: parses and runs its subcommands under :func:`one_line_errors`."""

    def make_context(self, *args, **kwargs):
        with one_line_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with one_line_errors():
            return super().invoke(ctx)
