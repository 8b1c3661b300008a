"""``kldm recon``: reconstruct fastMRI / ISMRMRD files."""

from __future__ import annotations

from pathlib import Path

import click

from kspace_ldm.cli.params import (
    _device_option,
    _floats,
    _out_dir,
    _require_device,
    _sha256_hex,
)


@click.command("recon")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=_out_dir,
)
@click.option(
    "--sampler",
    type=click.Choice(["zero-filled", "cgs", "cgs-ref", "unet", "cs-wavelet", "cs-tv"]),
    default=None,
    help="Reconstruction method: cgs (corrected consistency-guided LDM sampler; the default "
    "with --model), cgs-ref (the reference algorithm), unet (the supervised U-Net baseline, "
    "--model a kldm train --stage unet run), zero-filled (the default without --model), "
    "cs-wavelet / cs-tv (compressed-sensing baselines: L1-wavelet by FISTA, total variation by "
    "Chambolle-Pock; no model).",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="LDM run directory (or its best/ or a checkpoint) for cgs / cgs-ref; with --backend "
    "cpp an export directory (kldm export).",
)
@click.option(
    "--backend",
    type=click.Choice(["python", "cpp"]),
    default="python",
    show_default=True,
    help="Sampler implementation: python (the reference implementation, --model RUN_DIR) or cpp "
    "(kldm::Sampler on AOTInductor packages, --model EXPORT_DIR from kldm export).",
)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="DDIM steps (cgs; 5).")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="cgs: average the k-space of this many samples (posterior-mean estimate).",
)
@click.option(
    "--coil-combine",
    type=click.Choice(["auto", "espirit", "channels"]),
    default="auto",
    show_default=True,
    help="Multi-coil data: espirit (a single-coil model on ESPIRiT-combined k-space, SENSE data "
    "consistency per coil, RSS output), channels (coils as channels of a multi-coil model); "
    "auto: espirit for a single-coil model on multi-coil data.",
)
@click.option(
    "--t0",
    type=click.IntRange(min=0),
    default=None,
    help="SDEdit start timestep (cgs: 150, cgs-ref: 100).",
)
@click.option(
    "--guidance",
    type=click.FloatRange(min=0),
    default=None,
    help="Guidance scale (cgs: scale-free step on the normalised residual, 0; cgs-ref: 100).",
)
@click.option(
    "--mask",
    "mask_type",
    default="random",
    show_default=True,
    type=click.Choice(
        [
            "random",
            "equispaced",
            "equispaced_fraction",
            "magic",
            "magic_fraction",
            "poisson_disc",
            "gaussian",
        ]
    ),
)
@click.option(
    "--accel",
    default="4",
    show_default=True,
    help="Acceleration(s), comma-separated; one is chosen per volume.",
)
@click.option(
    "--center-fraction",
    default="0.08",
    show_default=True,
    help="Centre fraction(s), comma-separated, paired with --accel.",
)
@click.option(
    "--mask-seed",
    type=int,
    default=None,
    help="Mask seed for every file (default: seeded by file name, as fastMRI).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Sampler seed (combined with each file name and slice index).",
)
@click.option(
    "--cs-lambda",
    type=click.FloatRange(min=0),
    default=None,
    help="cs-wavelet / cs-tv regularisation weight, relative to the image intensity "
    "(default: chosen on the synthetic validation split, kspace_ldm.sampling.cs.CS_DEFAULTS).",
)
@click.option(
    "--cs-iters",
    type=click.IntRange(min=1),
    default=None,
    help="cs-wavelet / cs-tv iterations (default: CS_DEFAULTS).",
)
@click.option("--png", is_flag=True, help="Write a PNG preview of each volume's middle slice.")
@click.option(
    "--format",
    "out_formats",
    type=click.Choice(["h5", "ismrmrd", "dicom", "nifti", "png"]),
    multiple=True,
    help="Output format(s), repeatable: h5 (fastMRI submission file, the default), ismrmrd "
    "(images in OUT/ismrmrd), dicom (a series per volume in OUT/dicom/NAME), nifti "
    "(OUT/nifti/NAME.nii.gz), png (every slice in OUT/png/NAME).",
)
@_device_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Slices reconstructed together.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files in OUT that are not reconstructions written by kldm (never an input).",
)
@click.option(
    "--expect-sha256",
    "expect_sha256",
    default=None,
    callback=_sha256_hex,
    metavar="HEX",
    help="sha256 of the model's manifest.json (export directory or bundle), pinned by you: "
    "checked before anything of the model is loaded.",
)
def recon(
    input_path,
    out_dir,
    sampler,
    model_dir,
    backend,
    steps,
    samples,
    coil_combine,
    t0,
    guidance,
    mask_type,
    accel,
    center_fraction,
    mask_seed,
    seed,
    cs_lambda,
    cs_iters,
    png,
    out_formats,
    device,
    batch_size,
    overwrite,
    expect_sha256,
) -> None:
    """Reconstruct a fastMRI or ISMRMRD file (or folder) INPUT into fastMRI submission files in
    OUT (or --format ismrmrd / dicom / nifti / png).

    ISMRMRD raw data is told apart by its HDF5 layout; an undersampled one uses the lines it
    holds as the mask. Under torchrun the files of a folder are shared out over the ranks."""
    from kspace_ldm.recon import ReconOptions, reconstruct

    if sampler is None:
        sampler = "cgs" if model_dir is not None else "zero-filled"
    if sampler not in ("zero-filled", "cs-wavelet", "cs-tv") and model_dir is None:
        raise click.UsageError(f"--sampler {sampler} needs --model RUN_DIR")
    _require_device(device)
    accels = _floats(accel, "--accel")
    fractions = _floats(center_fraction, "--center-fraction")
    if len(accels) != len(fractions):
        raise click.BadParameter(
            f"{len(fractions)} value(s) for {len(accels)} acceleration(s): they are used in "
            "pairs, e.g. --accel 4,8 --center-fraction 0.08,0.04",
            param_hint="--center-fraction",
        )
    if expect_sha256 is not None and model_dir is None:
        raise click.UsageError("--expect-sha256 needs --model")
    opts = ReconOptions(
        sampler=sampler,
        mask_type=mask_type,
        accelerations=tuple(accels),
        center_fractions=tuple(fractions),
        seed=mask_seed,
        png=png,
        device=device,
        batch_size=batch_size,
        model=None if model_dir is None else str(model_dir),
        steps=steps,
        t0=t0,
        guidance=guidance,
        sampler_seed=seed,
        samples=samples,
        backend=backend,
        formats=tuple(out_formats) or ("h5",),
        overwrite=overwrite,
        expect_sha256=expect_sha256,
        coil_combine=coil_combine,
        cs_lambda=cs_lambda,
        cs_iterations=cs_iters,
    )
    reports = reconstruct(input_path, out_dir, opts)
    if not reports:
        click.echo("no files for this rank")
        return
    secs = sum(r.seconds for r in reports)
    slices = sum(r.slices for r in reports)
    eff = sum(r.effective_acceleration for r in reports) / len(reports)
    click.echo(
        f"{len(reports)} volumes, {slices} slices -> {out_dir} "
        f"({secs / max(slices, 1):.3f} s/slice, mean effective acceleration {eff:.2f})"
    )
