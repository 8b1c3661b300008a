"""Shared option callbacks, options and value parsers of the ``kldm`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kspace_ldm.errors import KldmError


def _out_file(ctx, param, value):
    """Option callback of every output file (``--json``, ``--csv``, ``--markdown``, ``--png``):
    refuse a directory, a parent that is a file, or an existing HDF5 file before any work."""
    from kspace_ldm.io import check_output_file

    if value is not None:
        try:
            check_output_file(value, what=param.opts[0])
        except KldmError as err:
            raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    return value


def _out_dir(ctx, param, value):
    """Option callback of every output folder: refuse a file, or a folder below a file."""
    from kspace_ldm.io import check_output_dir

    if value is not None:
        try:
            check_output_dir(value)
        except KldmError as err:
            raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    return value


def _sha256_hex(ctx, param, value):
    if value is not None:
        v = value.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise click.BadParameter(f"expected 64 hex digits, got {value!r}", ctx, param)
        return v
    return value


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=name
        ) from None
    if not values:
        raise click.BadParameter("no value given", param_hint=name)
    return values


#: ``--device cpu|cuda`` (default cpu); check the choice with :func:`_require_device`.
_device_option = click.option(
    "--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"])
)
#: ``--threads N`` of the commands that time reconstructions (demo, compare).
_threads_option = click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="CPU threads of torch (0: torch's default). One thread is robust on a shared machine: "
    "2 threads on 2 busy cores ran 4-15x slower (docs/benchmarks.md).",
)
#: ``--json FILE``: where to write the result as JSON.
_json_option = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), callback=_out_file
)


def _require_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is available")


def _write_json(path: Path | None, value) -> None:
    """Write ``value`` as indented JSON to ``path`` (atomically), unless ``path`` is None."""
    from kspace_ldm.io import atomic_write_text

    if path is not None:
        atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def _shape(text: str, name: str = "--shape") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(
            f"expected HxW, e.g. 640x368, got {text!r}", param_hint=name
        ) from None
    if h < 8 or w < 8:
        raise click.BadParameter(f"k-space size {h}x{w} is too small", param_hint=name)
    return h, w
