"""The one-line error handling of ``kldm``: bad input (:class:`KldmError`), write failures that are
the user's to fix, and usage errors end with one line ``kldm: error: ...`` and exit code 2."""

from __future__ import annotations

import functools
import sys
import warnings

import click

from kspace_ldm.errors import KldmError, KldmWarning

EXIT_BAD_INPUT = 2


def _handle_errors(fn):
    """Turn the package's input errors, and the write failures that are the user's to fix (full
    disk, a directory or file in the way: :func:`kspace_ldm.io.write_error`), into a one-line
    message and exit code 2; :class:`KldmWarning` s print as one line each."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kspace_ldm.io import write_error

        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, KldmWarning):
                    from tqdm import tqdm

                    # tqdm.write: on a line of its own even while a progress bar is drawn
                    tqdm.write(f"kldm: warning: {message}", file=sys.stderr)
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            try:
                return fn(*args, **kwargs)
            except KldmError as err:
                click.echo(f"kldm: error: {err}", err=True)
                sys.exit(EXIT_BAD_INPUT)
            except OSError as err:
                one_line = write_error(err, err.filename or "output")
                if one_line is None:
                    raise
                click.echo(f"kldm: error: {one_line}", err=True)
                sys.exit(EXIT_BAD_INPUT)

    return wrapper


class _UsageErrorLine(click.ClickException):
    """A usage error printed as one line (Click's own take four: usage, hint, blank, error)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, err: click.UsageError):
        where = err.ctx.command_path if err.ctx is not None else "kldm"
        text = " ".join(err.format_message().split())
        super().__init__(f"{where}: {text} (see {where} --help)")

    def show(self, file=None) -> None:
        click.echo(f"kldm: error: {self.message}", err=True)


class _OneLineGroup(click.Group):
    """The ``kldm`` group: every usage error of it and its subcommands is one line, exit 2."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except _NO_ARGS_IS_HELP:
            raise  # a bare group name prints its help, as before
        except click.UsageError as err:
            raise _UsageErrorLine(err) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as err:
            raise _UsageErrorLine(err) from None


# Click >= 8.2 raises this (a UsageError) for a group called without arguments: it shows help.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())

