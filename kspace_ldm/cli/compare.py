"""``kldm compare`` and ``kldm demo``: several reconstruction methods side by side, evaluated."""

from __future__ import annotations

from pathlib import Path

import click

from kspace_ldm.cli.params import (
    _device_option,
    _floats,
    _out_dir,
    _require_device,
    _threads_option,
)


@click.command("compare")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=_out_dir,
)
@click.option(
    "--methods",
    default="zero-filled,cs-wavelet,cs-tv,cgs",
    show_default=True,
    help="Comma-separated: zero-filled, cs-wavelet, cs-tv, unet, cgs-ref, cgs.",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="LDM run for cgs / cgs-ref (default: the bundled demo model).",
)
@click.option(
    "--unet-model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="U-Net run for the unet method.",
)
@click.option("--accel", default="4,8", show_default=True, help="Accelerations, comma-separated.")
@click.option(
    "--mask",
    "mask_type",
    default="random",
    show_default=True,
    type=click.Choice(["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"]),
)
@_device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@_threads_option
def compare(
    data, out_dir, methods, model_dir, unet_model, accel, mask_type, device, batch_size, threads
):
    """Compare reconstruction methods on the fastMRI files (with targets) of DATA: one table of
    fastMRI metrics, per-volume CSV, JSON and a PNG panel in OUT."""
    import torch

    from kspace_ldm.compare import run_compare

    _require_device(device)
    if threads:
        torch.set_num_threads(threads)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    accels = []
    for a in _floats(accel, "--accel"):
        if a != int(a) or a < 1:
            raise click.BadParameter(
                f"expected integer accelerations, got {accel!r}", param_hint="--accel"
            )
        accels.append(int(a))
    summary = run_compare(
        data,
        out_dir,
        names,
        accels,
        model=model_dir,
        unet_model=unet_model,
        mask_type=mask_type,
        device=device,
        batch_size=batch_size,
    )
    click.echo(summary.table)
    click.echo(
        f"table: {summary.markdown}\nper volume: {summary.csv}\njson: {summary.json}\n"
        f"panel: {summary.panel}"
    )



@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    callback=_out_dir,
)
@click.option(
    "--accel",
    "acceleration",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="Acceleration of the random mask (centre fraction 0.08 at 4x, 0.04 at 8x).",
)
@click.option(
    "--backend",
    type=click.Choice(["python", "cpp"]),
    default="python",
    show_default=True,
    help="Sampler implementation of cgs (cpp: the C++ sampler; the bundled model is exported "
    "for it on first use, ~1-2 min, into ~/.cache/kspace-ldm or $KLDM_CACHE).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="cgs samples averaged per slice (posterior-mean estimate).",
)
@click.option("--volumes", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--slices", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=1000,
    show_default=True,
    help="Seed of the generated held-out volumes (never the training data's seed, 0).",
)
@_threads_option
def demo(out_dir, acceleration, backend, samples, volumes, slices, seed, threads) -> None:
    """Reconstruct generated held-out scans with the bundled pretrained model.

    Synthetic volumes -> undersample -> zero-filled and cgs -> evaluate -> panel and table.
    """
    import os

    import torch

    from kspace_ldm.demo import run_demo

    if threads:
        torch.set_num_threads(threads)
    setup = os.environ.get("KLDM_SETUP_SECONDS")  # set by scripts/demo.sh
    summary = run_demo(
        out_dir,
        acceleration=acceleration,
        volumes=volumes,
        slices=slices,
        seed=seed,
        backend=backend,
        samples=samples,
        setup_seconds=float(setup) if setup else None,
    )
    click.echo(summary.table)
    click.echo(
        f"panel:   {summary.panel}\nmetrics: {summary.markdown} and {summary.json}\n"
        f"time:    {summary.metrics['seconds']['total']:.1f} s"
    )
