"""The shared parts of the ``kldm`` commands: value types (``HxW`` sizes, comma-separated
lists), choices built from the one list of each kind (masks, samplers, backends), and the
options that several commands repeat (output folder and files with their guards, device,
threads, mask, acceleration, batch size).

The value types fail with Click's ``Invalid value for --opt: <problem>``, which the ``kldm``
group prints as one line (kspace_ldm/cli/errors.py).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import NoReturn

import click

from kspace_ldm.errors import KldmError
from kspace_ldm.methods import BACKENDS

#: A folder that need not exist yet (an output folder, a run to resume).
FOLDER = click.Path(file_okay=False, path_type=Path)
#: An existing folder (run, export or data directory).
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
#: An existing file (a config, an input file).
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
#: An existing file or folder.
EXISTING_PATH = click.Path(exists=True, path_type=Path)


class RegistryChoice(click.Choice):
    """A :class:`click.Choice` of the names in ``module.attribute``, read on first use: the mask
    registry (kspace_ldm/data/masks.py) imports numpy, which ``kldm --help`` need not load."""

    def __init__(self, module: str, attribute: str):
        super().__init__(())
        self._where = (module, attribute)

    @property
    def choices(self) -> tuple[str, ...]:
        module, attribute = self._where
        return tuple(getattr(importlib.import_module(module), attribute))

    @choices.setter
    def choices(self, value) -> None:  # Choice.__init__ sets it; the registry is the one source
        pass


#: Every mask of the registry (``--mask`` of kldm recon).
MASKS = RegistryChoice("kspace_ldm.data.masks", "MASK_TYPES")
#: The column (fastMRI 1-D) masks of the registry (``--mask`` of kldm compare).
COLUMN_MASKS = RegistryChoice("kspace_ldm.data.masks", "COLUMN_MASK_TYPES")


def _fail(message: str, param: click.Parameter | None, ctx: click.Context | None) -> NoReturn:
    # param_hint: ``Invalid value for --accel: ...`` (the option as typed, unquoted)
    hint = param.opts[0] if param is not None and param.opts else None
    raise click.BadParameter(message, ctx=ctx, param=param, param_hint=hint)


class NumberList(click.ParamType):
    """Comma-separated numbers -> ``list[float]`` (``--center-fraction 0.08,0.04``); with
    ``integers`` (what they are, for the error) whole numbers >= 1 -> ``list[int]``
    (``--accel 4,8``)."""

    name = "list"

    def __init__(self, integers: str | None = None):
        self.integers = integers

    def get_metavar(self, param, ctx=None) -> str:
        return "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        text = str(value)
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            _fail(f"expected comma-separated numbers, got {text!r}", param, ctx)
        if not values:
            _fail("no value given", param, ctx)
        if self.integers is None:
            return values
        if any(a != int(a) or a < 1 for a in values):
            _fail(f"expected integer {self.integers}, got {text!r}", param, ctx)
        return [int(a) for a in values]


class CountList(click.ParamType):
    """``N`` or ``N,M,...`` (counts >= 1) -> ``int`` or ``tuple[int, ...]`` (``--coils 4,8``)."""

    name = "count"

    def get_metavar(self, param, ctx=None) -> str:
        return "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, tuple)):
            return value
        try:
            counts = tuple(int(c) for c in str(value).split(","))
        except ValueError:
            _fail(f"{value!r} is not a count or list", param, ctx)
        if min(counts) < 1:
            _fail(f"counts must be >= 1, got {value}", param, ctx)
        return counts[0] if len(counts) == 1 else counts


class Size(click.ParamType):
    """``x``-separated whole numbers -> ``tuple[int, ...]``: ``HxW`` k-space sizes (each side
    >= 8, e.g. ``--shape 640x368``), or another ``form`` such as ``COILSxHxW`` (each >= 1)."""

    def __init__(self, form: str = "HxW"):
        self.form = form
        self.name = form
        self.kspace = form == "HxW"

    def get_metavar(self, param, ctx=None) -> str:
        return self.form

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        expected = f"expected {self.form}, e.g. 640x368" if self.kspace else f"expected {self.form}"
        try:
            dims = tuple(int(v) for v in str(value).lower().split("x"))
        except ValueError:
            dims = ()
        if len(dims) != self.form.count("x") + 1:
            _fail(f"{expected}, got {value!r}", param, ctx)
        if self.kspace and min(dims) < 8:
            _fail(f"k-space size {dims[0]}x{dims[1]} is too small", param, ctx)
        if min(dims) < 1:
            _fail(f"{expected}, got {value!r}", param, ctx)
        return dims


def sha256_hex(ctx, param, value):
    """Option callback of ``--expect-sha256``: 64 hex digits, lower-cased."""
    if value is not None:
        v = value.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise click.BadParameter(f"expected 64 hex digits, got {value!r}", ctx, param)
        return v
    return value


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


def out_dir_argument(name: str):
    """An output-folder argument with its guard (:func:`_out_dir`)."""
    return click.argument(name, type=FOLDER, callback=_out_dir)


def out_dir_option(required: bool = True, **extra):
    """``--out DIR`` (``out_dir``) with its guard: refused up front when it is a file or lies below
    one (:func:`_out_dir`); ``extra``: more ``click.option`` settings (default, help)."""
    return click.option(
        "--out",
        "out_dir",
        required=required,
        type=FOLDER,
        callback=_out_dir,
        **extra,
    )


def out_file_option(flag: str, dest: str, **extra):
    """An output-file option (``--json``, ``--csv``, ``--markdown``, ``--png``) with its guard
    (:func:`_out_file`); ``extra``: more ``click.option`` settings."""
    return click.option(
        flag, dest, type=click.Path(dir_okay=False, path_type=Path), callback=_out_file, **extra
    )


#: ``--json FILE``: where to write the result as JSON.
json_option = out_file_option("--json", "json_path")
#: ``--markdown FILE``: where to write the result as a Markdown table.
markdown_option = out_file_option("--markdown", "md_path")
#: ``--device cpu|cuda`` (default cpu); check the choice with :func:`require_device`.
device_option = click.option(
    "--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"])
)
#: ``--threads N`` of the commands that time reconstructions (demo, compare).
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="CPU threads of torch (0: torch's default). One thread is robust on a shared machine: "
    "2 threads on 2 busy cores ran 4-15x slower (docs/benchmarks.md).",
)


def model_option(help: str, dest: str = "model_dir", **extra):
    """``--model DIR``: an existing run or export directory."""
    return click.option("--model", dest, type=EXISTING_DIR, help=help, **extra)


def backend_option(help: str):
    """``--backend python|cpp`` (default python): the sampler implementation."""
    return click.option(
        "--backend", type=click.Choice(BACKENDS), default="python", show_default=True, help=help
    )


def mask_option(masks: click.Choice = MASKS):
    """``--mask TYPE`` (``mask_type``, default random): one of ``masks`` (:data:`MASKS`, or
    :data:`COLUMN_MASKS`)."""
    return click.option("--mask", "mask_type", default="random", show_default=True, type=masks)


def accel_option(default: str, help: str, integers: bool = False):
    """``--accel 4,8`` (comma-separated; whole numbers >= 1 with ``integers``) -> a list."""
    kind = NumberList("accelerations" if integers else None)
    return click.option("--accel", type=kind, default=default, show_default=True, help=help)


def batch_size_option(default: int, help: str | None = None):
    """``--batch-size N`` (N >= 1)."""
    return click.option(
        "--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help
    )


def overrides_option(help: str):
    """``--set KEY=VALUE`` (``overrides``, repeatable): config overrides."""
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=help)


def samples_option(help: str):
    """``--samples N`` (default 1): cgs samples averaged per slice."""
    return click.option(
        "--samples", type=click.IntRange(min=1), default=1, show_default=True, help=help
    )


def choice_option(flag: str, choices: tuple[str, ...], help: str):
    """``flag`` choosing one of ``choices`` (the first is the default)."""
    return click.option(
        flag, type=click.Choice(choices), default=choices[0], show_default=True, help=help
    )


def set_threads(threads: int) -> None:
    """Apply ``--threads`` (0: leave torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def require_device(device: str) -> None:
    """Refuse ``--device cuda`` when torch sees no CUDA device."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is available")


def write_json(path: Path | None, value) -> None:
    """Write ``value`` as indented JSON to ``path`` (atomically), unless ``path`` is None."""
    from kspace_ldm.io import atomic_write_text

    if path is not None:
        atomic_write_text(path, json.dumps(value, indent=2) + "\n")
