"""``kldm compare`` and ``kldm demo``: several reconstruction methods side by side, evaluated."""

from __future__ import annotations

from pathlib import Path

import click

from kspace_ldm.cli import params


@click.command("compare")
@click.argument("data", type=params.EXISTING_PATH)
@params.out_dir_option()
@click.option(
    "--methods",
    default="zero-filled,cs-wavelet,cs-tv,cgs",
    show_default=True,
    help="Comma-separated: zero-filled, cs-wavelet, cs-tv, unet, cgs-ref, cgs, cgs-cs.",
)
@params.model_option("LDM run for cgs / cgs-ref (default: the bundled demo model).", default=None)
@click.option(
    "--unet-model", type=params.EXISTING_DIR, default=None, help="U-Net run for the unet method."
)
@params.accel_option("4,8", "Accelerations, comma-separated.", integers=True)
@params.mask_option(params.COLUMN_MASKS)
@params.device_option
@params.batch_size_option(8)
@params.threads_option
def compare(
    data, out_dir, methods, model_dir, unet_model, accel, mask_type, device, batch_size, threads
):
    """Compare reconstruction methods on the fastMRI files (with targets) of DATA: one table of
    fastMRI metrics, per-volume CSV, JSON and a PNG panel in OUT."""
    from kspace_ldm.compare import run_compare

    params.require_device(device)
    params.set_threads(threads)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    summary = run_compare(
        data,
        out_dir,
        names,
        accel,
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
@params.out_dir_option(required=False, default=Path("demo_out"), show_default=True)
@click.option(
    "--accel",
    "acceleration",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="Acceleration of the random mask (centre fraction 0.08 at 4x, 0.04 at 8x).",
)
@params.backend_option(
    "Sampler implementation of cgs (cpp: the C++ sampler; the bundled model is exported "
    "for it on first use, ~1-2 min, into ~/.cache/kspace-ldm or $KLDM_CACHE)."
)
@params.samples_option("cgs samples averaged per slice (posterior-mean estimate).")
@click.option("--volumes", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--slices", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=1000,
    show_default=True,
    help="Seed of the generated held-out volumes (never the training data's seed, 0).",
)
@params.threads_option
def demo(out_dir, threads, **options) -> None:
    """Reconstruct generated held-out scans with the bundled pretrained model.

    Synthetic volumes -> undersample -> zero-filled and cgs -> evaluate -> panel and table.
    """
    import os

    from kspace_ldm.demo import run_demo

    params.set_threads(threads)
    setup = os.environ.get("KLDM_SETUP_SECONDS")  # set by scripts/demo.sh
    # options: acceleration, backend, samples, volumes, slices, seed (run_demo's keywords)
    summary = run_demo(out_dir, setup_seconds=float(setup) if setup else None, **options)
    click.echo(summary.table)
    click.echo(
        f"panel:   {summary.panel}\nmetrics: {summary.markdown} and {summary.json}\n"
        f"time:    {summary.metrics['seconds']['total']:.1f} s"
    )
