"""``kldm data``: generate, inspect and convert fastMRI-format data."""

from __future__ import annotations

from pathlib import Path

import click

from kspace_ldm.cli import params


@click.group("data")
def data_group() -> None:
    """Generate and inspect fastMRI-format data."""


@data_group.command()
@params.out_dir_argument("out")
@click.option("--train", "n_train", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--val", "n_val", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--test", "n_test", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--coils",
    type=params.CountList(),
    default="1",
    show_default=True,
    help="1: single-coil (ESC-like) files; >1: multi-coil files; a list such as 4,8: one "
    "count drawn per volume.",
)
@click.option(
    "--shape", type=params.Size(), default="640x368", show_default=True, help="k-space size HxW."
)
@click.option("--recon-size", type=click.IntRange(min=8), default=320, show_default=True)
@click.option("--slices", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@params.choice_option(
    "--coil-geometry",
    ("ring", "varied"),  # kspace_ldm.data.synth.COIL_GEOMETRIES (numpy stays out of --help)
    "ring: jittered coils on an ellipse around the object; varied: also random ellipse, "
    "offset, coil sizes and phases per volume.",
)
@params.choice_option(
    "--phantom",
    ("ellipses", "anatomy"),  # kspace_ldm.data.synth.PHANTOMS
    "ellipses: the original phantoms (the demo model's data); anatomy: knee-like tissue "
    "classes, fine structure, smooth random deformations (kspace_ldm/data/anatomy.py).",
)
def synth(out, n_train, n_val, n_test, shape, recon_size, **volume_options):
    """Write synthetic fastMRI-format volumes (random anatomical phantoms) into OUT."""
    from kspace_ldm.data.synth import synth_dataset

    # volume_options: --coils, --slices, --seed, --coil-geometry, --phantom, passed through
    h, w = shape
    if n_train + n_val + n_test == 0:
        raise click.UsageError("nothing to generate: give --train, --val and/or --test")
    if recon_size > min(h, w):
        raise click.BadParameter(
            f"{recon_size} exceeds the k-space size {h}x{w}", param_hint="--recon-size"
        )
    written = synth_dataset(
        out, n_train, n_val, n_test, shape=(h, w), recon_size=recon_size, progress=True,
        **volume_options,
    )  # fmt: skip
    for split, paths in written.items():
        if paths:
            click.echo(f"{split}: {len(paths)} volumes in {paths[0].parent}")


@data_group.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@params.out_file_option(
    "--png",
    "png",
    default=None,
    help="Also write a preview PNG (image and log k-space) of one slice.",
)
@click.option("--slice", "slice_idx", type=int, default=None, help="Slice of the preview.")
def inspect(file, png, slice_idx) -> None:
    """Print the keys, shapes, attributes and header sizes of a fastMRI file."""
    from kspace_ldm.data.inspect import inspect_file, preview_png
    from kspace_ldm.io import check_output_file

    if png is not None:
        check_output_file(png, [file], what="--png")
    click.echo(inspect_file(file))
    if png is not None:
        preview_png(file, png, slice_idx=slice_idx)
        click.echo(f"preview: {png}")


@data_group.command()
@click.argument("src", type=params.EXISTING_PATH)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--to",
    type=click.Choice(["fastmri", "ismrmrd"]),
    default=None,
    help="Target format (default: the other one of each file's).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def convert(src, dst, to, overwrite) -> None:
    """Convert ISMRMRD raw data <-> fastMRI HDF5 (a file, or every *.h5 of a folder into DST)."""
    from kspace_ldm.data.convert import convert as convert_files

    done = convert_files(src, dst, to, overwrite=overwrite)
    for source, out in done:
        click.echo(f"{source} -> {out}")
