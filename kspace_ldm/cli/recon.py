"""``kldm recon``: reconstruct fastMRI / ISMRMRD files."""

from __future__ import annotations

import click

from kspace_ldm.cli import params
from kspace_ldm.methods import CGS_STARTS, SAMPLERS


def _method_setting(flag: str, kind: click.ParamType, help: str):
    """A setting of the sampler or CS method; None (not given): that method's default."""
    return click.option(flag, type=kind, default=None, help=help)


@click.command("recon")
@click.argument("input_path", metavar="INPUT", type=params.EXISTING_PATH)
@params.out_dir_option()
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default=None,
    help="Reconstruction method: cgs (corrected consistency-guided LDM sampler; the default "
    "with --model), cgs-cs (cgs then a CS-regularised final consistency, the cgs + "
    "L1-wavelet hybrid; python backend), cgs-ref (the reference algorithm), unet (the "
    "supervised U-Net baseline, --model a kldm train --stage unet run), zero-filled (the "
    "default without --model), "
    "cs-wavelet / cs-tv (compressed-sensing baselines: L1-wavelet by FISTA, total variation by "
    "Chambolle-Pock; no model).",
)
@params.model_option(
    "LDM run directory (or its best/ or a checkpoint) for cgs / cgs-ref; with --backend "
    "cpp an export directory (kldm export).",
    default=None,
)
@params.backend_option(
    "Sampler implementation: python (the reference implementation, --model RUN_DIR) or cpp "
    "(kldm::Sampler on AOTInductor packages, --model EXPORT_DIR from kldm export)."
)
@_method_setting("--steps", click.IntRange(min=1), "DDIM steps (cgs; 2).")
@click.option(
    "--start",
    type=click.Choice(CGS_STARTS),
    default=None,
    help="cgs: what is encoded first: cs-wavelet (the L1-wavelet CS image with the measured "
    "samples put back; the default) or zero-filled (the measured k-space; with --steps 5 "
    "--t0 150 the earlier default).",
)
@params.samples_option("cgs: average the k-space of this many samples (posterior-mean estimate).")
@click.option(
    "--coil-combine",
    type=click.Choice(["auto", "espirit", "channels"]),
    default="auto",
    show_default=True,
    help="Multi-coil data: espirit (a single-coil model on ESPIRiT-combined k-space, SENSE data "
    "consistency per coil, RSS output), channels (coils as channels of a multi-coil model); "
    "auto: espirit for a single-coil model on multi-coil data.",
)
@_method_setting("--t0", click.IntRange(min=0), "SDEdit start timestep (cgs: 50, cgs-ref: 100).")
@_method_setting(
    "--guidance",
    click.FloatRange(min=0),
    "Guidance scale (cgs: scale-free step on the normalised residual, 0; cgs-ref: 100).",
)
@click.option(
    "--refit/--no-refit",
    default=True,
    show_default=True,
    help="cgs: fit the normalisation statistics to the measured samples (least squares).",
)
@params.mask_option(params.MASKS)
@params.accel_option("4", "Acceleration(s), comma-separated; one is chosen per volume.")
@click.option(
    "--center-fraction",
    type=params.NumberList(),
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
@_method_setting(
    "--cs-lambda",
    click.FloatRange(min=0),
    "cs-wavelet / cs-tv regularisation weight, relative to the image intensity "
    "(default: chosen on the synthetic validation split, kspace_ldm.sampling.cs.CS_DEFAULTS).",
)
@_method_setting(
    "--cs-iters", click.IntRange(min=1), "cs-wavelet / cs-tv iterations (default: CS_DEFAULTS)."
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
@params.device_option
@params.batch_size_option(8, "Slices reconstructed together.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files in OUT that are not reconstructions written by kldm (never an input).",
)
@click.option(
    "--expect-sha256",
    "expect_sha256",
    default=None,
    callback=params.sha256_hex,
    metavar="HEX",
    help="sha256 of the model's manifest.json (export directory or bundle), pinned by you: "
    "checked before anything of the model is loaded.",
)
def recon(
    input_path,
    out_dir,
    model_dir,
    accel,
    center_fraction,
    mask_seed,
    seed,
    cs_iters,
    out_formats,
    **same,
) -> None:
    """Reconstruct a fastMRI or ISMRMRD file (or folder) INPUT into fastMRI submission files in
    OUT (or --format ismrmrd / dicom / nifti / png).

    ISMRMRD raw data is told apart by its HDF5 layout; an undersampled one uses the lines it
    holds as the mask. Under torchrun the files of a folder are shared out over the ranks."""
    from kspace_ldm.recon import ReconOptions, reconstruct
    from kspace_ldm.sampling.cgs import SamplerOptions

    # same: the options named as their ReconOptions or SamplerOptions field (sampler, backend,
    # steps, device, ...)
    sampling = SamplerOptions(
        seed=seed,
        **{k: same.pop(k) for k in ("steps", "t0", "guidance", "refit", "samples", "start")},
    )
    sampler = same.pop("sampler") or ("cgs" if model_dir is not None else "zero-filled")
    if sampler not in ("zero-filled", "cs-wavelet", "cs-tv") and model_dir is None:
        raise click.UsageError(f"--sampler {sampler} needs --model RUN_DIR")
    params.require_device(same["device"])
    if len(accel) != len(center_fraction):
        raise click.BadParameter(
            f"{len(center_fraction)} value(s) for {len(accel)} acceleration(s): they are used in "
            "pairs, e.g. --accel 4,8 --center-fraction 0.08,0.04",
            param_hint="--center-fraction",
        )
    if same["expect_sha256"] is not None and model_dir is None:
        raise click.UsageError("--expect-sha256 needs --model")
    opts = ReconOptions(
        sampler=sampler,
        model=None if model_dir is None else str(model_dir),
        accelerations=tuple(accel),
        center_fractions=tuple(center_fraction),
        seed=mask_seed,
        sampling=sampling,
        cs_iterations=cs_iters,
        formats=tuple(out_formats) or ("h5",),
        **same,
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
