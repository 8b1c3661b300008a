"""``kldm``: the command-line interface. Thin: it parses and validates, the library does the work.

Bad input (a file with a missing key, a mask that does not fit, an unknown value) ends with one
line ``kldm: error: <file>: <problem>`` on stderr and exit code 2, and leaves no partial output.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click

from kspace_ldm import __version__
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


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kspace-ldm")
def main() -> None:
    """kspace-ldm: accelerated MRI reconstruction with latent diffusion in k-space.

    Research software: not for clinical or diagnostic use.
    """


# --------------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
def info(as_json: bool) -> None:
    """Print the version, the torch it was built against, CUDA kernels and the CMake package."""
    import torch

    from kspace_ldm.ops import build_info
    from kspace_ldm.toolchain import aoti_compiler, static_cxx_runtime

    b = build_info()
    b["torch_running"] = torch.__version__
    b["cuda_available"] = torch.cuda.is_available()
    b["export_compiler"] = aoti_compiler()
    b["export_compiler_static_libstdcxx"] = static_cxx_runtime(b["export_compiler"])
    if as_json:
        click.echo(json.dumps(b, indent=2))
        return
    cuda = f"yes (sm: {b['cuda_archs']})" if b["cuda"] else "no (CPU kernels only)"
    lines = [
        f"kspace-ldm        {b['version']}",
        f"torch (built)     {b['torch_version']}",
        f"torch (running)   {b['torch_running']}  (CUDA device available: {b['cuda_available']})",
        f"CUDA kernels      {cuda}",
        f"compiler          {b['compiler']}  (built {b['build_date']})",
        f"library           {b['library']}",
        f"CMake package     {b['cmake_config']}",
        f"CMAKE_PREFIX_PATH {b['cmake_prefix_path']}",
        f"kldm-recon        {b['recon_tool'] or 'not built (no HDF5 C library at build time)'}",
        "kldm-recon ISMRMRD "
        + ("yes (libismrmrd)" if b.get("recon_ismrmrd") else "no (no libismrmrd at build time)"),
        f"export compiler   {b['export_compiler']}  ({_runtime_note(b)})",
        f"ops               {', '.join(b['ops'])}",
    ]
    click.echo("\n".join(lines))


def _runtime_note(b: dict) -> str:
    static = b["export_compiler_static_libstdcxx"]
    if static is None:
        return "C++ runtime linkage not checked"
    return "STATIC libstdc++: kldm export refuses it" if static else "shared libstdc++"


# --------------------------------------------------------------------------------------------
@main.group()
def data() -> None:
    """Generate and inspect fastMRI-format data."""


@data.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), callback=_out_dir)
@click.option("--train", "n_train", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--val", "n_val", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--test", "n_test", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--coils",
    default="1",
    show_default=True,
    help="1: single-coil (ESC-like) files; >1: multi-coil files; a list such as 4,8: one "
    "count drawn per volume.",
)
@click.option("--shape", default="640x368", show_default=True, help="k-space size HxW.")
@click.option("--recon-size", type=click.IntRange(min=8), default=320, show_default=True)
@click.option("--slices", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--coil-geometry",
    type=click.Choice(["ring", "varied"]),
    default="ring",
    show_default=True,
    help="ring: jittered coils on an ellipse around the object; varied: also random ellipse, "
    "offset, coil sizes and phases per volume.",
)
@_handle_errors
def synth(out, n_train, n_val, n_test, coils, shape, recon_size, slices, seed, coil_geometry):
    """Write synthetic fastMRI-format volumes (random anatomical phantoms) into OUT."""
    from kspace_ldm.data.synth import synth_dataset

    try:
        counts = tuple(int(c) for c in str(coils).split(","))
    except ValueError:
        raise click.BadParameter(
            f"{coils!r} is not a count or list", param_hint="--coils"
        ) from None
    if min(counts) < 1:
        raise click.BadParameter(f"counts must be >= 1, got {coils}", param_hint="--coils")
    coils = counts[0] if len(counts) == 1 else counts
    h, w = _shape(shape)
    if n_train + n_val + n_test == 0:
        raise click.UsageError("nothing to generate: give --train, --val and/or --test")
    if recon_size > min(h, w):
        raise click.BadParameter(
            f"{recon_size} exceeds the k-space size {h}x{w}", param_hint="--recon-size"
        )
    written = synth_dataset(
        out,
        n_train,
        n_val,
        n_test,
        coils=coils,
        shape=(h, w),
        recon_size=recon_size,
        slices=slices,
        seed=seed,
        progress=True,
        coil_geometry=coil_geometry,
    )
    for split, paths in written.items():
        if paths:
            click.echo(f"{split}: {len(paths)} volumes in {paths[0].parent}")


@data.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=_out_file,
    help="Also write a preview PNG (image and log k-space) of one slice.",
)
@click.option("--slice", "slice_idx", type=int, default=None, help="Slice of the preview.")
@_handle_errors
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


@data.command()
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--to",
    type=click.Choice(["fastmri", "ismrmrd"]),
    default=None,
    help="Target format (default: the other one of each file's).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@_handle_errors
def convert(src, dst, to, overwrite) -> None:
    """Convert ISMRMRD raw data <-> fastMRI HDF5 (a file, or every *.h5 of a folder into DST)."""
    from kspace_ldm.data.convert import convert as convert_files

    done = convert_files(src, dst, to, overwrite=overwrite)
    for source, out in done:
        click.echo(f"{source} -> {out}")


# --------------------------------------------------------------------------------------------
@main.command()
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
@_handle_errors
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


# --------------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--pred",
    "pred_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--target",
    "target_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--challenge",
    type=click.Choice(["singlecoil", "multicoil"]),
    default=None,
    help="Target key: reconstruction_esc (singlecoil) or _rss (default: from the file).",
)
@click.option(
    "--acquisition",
    type=click.Choice(["CORPD_FBK", "CORPDFS_FBK"]),
    default=None,
    help="Only volumes of this acquisition.",
)
@_json_option
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), callback=_out_file
)
@click.option(
    "--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), callback=_out_file
)
@click.option(
    "--lpips",
    "use_lpips",
    is_flag=True,
    help="Add LPIPS (needs the lpips extra and its backbone weights on disk).",
)
@_handle_errors
def evaluate(
    pred_dir, target_dir, challenge, acquisition, json_path, csv_path, md_path, use_lpips
) -> None:
    """fastMRI-protocol NMSE / PSNR / SSIM per volume of the reconstructions in PRED."""
    from kspace_ldm.evaluate import evaluate_folders
    from kspace_ldm.io import check_output_file
    from kspace_ldm.metrics import lpips_status

    inputs = [*pred_dir.iterdir(), *target_dir.iterdir()]
    for path, what in ((json_path, "--json"), (csv_path, "--csv"), (md_path, "--markdown")):
        if path is not None:  # never a file being evaluated (symlinks included)
            check_output_file(path, inputs, what=what)

    if use_lpips:
        ok, why = lpips_status()
        if not ok:
            raise click.UsageError(f"LPIPS unavailable: {why}")
    result = evaluate_folders(
        pred_dir,
        target_dir,
        challenge=challenge,
        acquisition=acquisition,
        lpips=use_lpips,
        progress=True,
    )
    click.echo(result.format_table())
    for path, write in (
        (json_path, result.to_json),
        (csv_path, result.to_csv),
        (md_path, result.to_markdown),
    ):
        if path is not None:
            write(path)


# --------------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--stage",
    type=click.Choice(["ae", "ldm", "unet"]),
    default=None,
    help="What to train (ae: the first-stage k-space autoencoder; ldm: the latent denoiser; "
    "unet: the supervised U-Net baseline). Default: the config's 'stage'.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML config (configs/*.yaml). Not with --resume.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=_out_dir,
    help="Run directory for checkpoints, logs and panels.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue the run in this directory from its latest checkpoint.",
)
@click.option(
    "--resume-from",
    "resume_step",
    type=click.IntRange(min=0),
    default=None,
    metavar="STEP",
    help="With --resume: continue from the kept checkpoint of this step instead of the latest "
    "(e.g. when the latest is corrupt).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=1e-4 (repeatable).",
)
@_handle_errors
def train(stage, config_path, out_dir, resume_dir, resume_step, overrides) -> None:
    """Train a model (under torchrun for several processes/GPUs)."""
    from kspace_ldm.training.trainer import run_from_cli

    if config_path is None and resume_dir is None:
        raise click.UsageError("give --config FILE (new run) or --resume RUN_DIR")
    if resume_dir is None and out_dir is None:
        raise click.UsageError("give --out RUN_DIR for a new run")
    if resume_dir is not None and out_dir is not None:
        raise click.UsageError("--out and --resume are exclusive (a resumed run stays in place)")
    if resume_step is not None and resume_dir is None:
        raise click.UsageError("--resume-from STEP needs --resume RUN_DIR")
    result = run_from_cli(
        config_path, out_dir, resume_dir, list(overrides), stage, resume_step=resume_step
    )
    if result.last_val and "loss" in result.last_val:
        v = ", ".join(f"{k} {x:.5f}" for k, x in result.last_val.items())
        click.echo(f"step {result.step}: val {v} ({result.seconds:.0f} s) -> {result.run_dir}")
    elif result.last_val:
        v = result.last_val
        click.echo(
            f"step {result.step}: val PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f}, "
            f"NMSE {v['nmse']:.4g} ({result.seconds:.0f} s) -> {result.run_dir}"
        )
    else:
        click.echo(f"step {result.step} ({result.seconds:.0f} s) -> {result.run_dir}")


@main.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=_out_dir,
)
@_device_option
@click.option(
    "--size",
    default=None,
    help="k-space HxW the packages are made for (default: the LDM's training size).",
)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Export with a symbolic batch dimension.")
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-5,
    show_default=True,
    help="Largest accepted relative error of a package against eager PyTorch (float32).",
)
@click.option(
    "--no-guidance",
    is_flag=True,
    help="Leave out the decoder VJP package (no gradient guidance: cgs-ref and cgs --guidance "
    "are refused); smaller and faster to export.",
)
@_handle_errors
def export_cmd(run_dir, out_dir, device, size, batch, dynamic_batch, tolerance, no_guidance):
    """Export the LDM run RUN_DIR and its first stage as AOTInductor packages for the C++ sampler
    (kldm recon --backend cpp, kldm-recon, kldm::Sampler)."""
    from kspace_ldm.export import export_run

    hw = None if size is None else _shape(size, "--size")
    rep = export_run(
        run_dir,
        out_dir,
        device,
        hw,
        batch,
        dynamic_batch,
        log=click.echo,
        rtol=tolerance,
        guidance=not no_guidance,
    )
    m = rep.manifest
    click.echo(
        f"{out_dir}: {m['coils']}x{m['height']}x{m['width']} k-space, latent "
        f"{'x'.join(map(str, m['latent_shape']))}, {m['device']}, torch {m['torch_version']} "
        f"({rep.seconds:.0f} s)"
    )


@main.command("extract-latents")
@click.option(
    "--ckpt",
    "ckpt_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="First stage: RUN_DIR/best or a checkpoint directory.",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="fastMRI-format folder (or file) of this partition.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=_out_dir,
)
@click.option(
    "--partition",
    type=click.Choice(["train", "val", "test"]),
    default="train",
    show_default=True,
)
@_device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@_handle_errors
def extract_latents(ckpt_dir, data_dir, out_dir, partition, device, batch_size) -> None:
    """Encode DATA with the first stage into safetensors shards OUT/PARTITION/<file>.safetensors
    plus OUT/stats.json (latent statistics, test-time normalisation ratios). Resumable: run the
    same command again and complete shards are kept."""
    from kspace_ldm.latents import extract_latents as run

    rep = run(ckpt_dir, data_dir, out_dir, partition, device, batch_size)
    lat = rep.stats["latent"]
    click.echo(
        f"{rep.written} written, {rep.skipped} already present ({rep.slices} slices) -> "
        f"{rep.out_dir}; latent {lat['shape']} std {lat['global_std']:.4g} "
        f"(stats from '{rep.stats['partition']}', {lat['slices']} slices)"
    )


@main.command("eval-ae")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data_dir", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=_out_dir,
)
@_device_option
@click.option(
    "--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), callback=_out_file
)
@_handle_errors
def eval_ae(model_dir, data_dir, out_dir, device, md_path) -> None:
    """Encode/decode the fully sampled k-space of DATA_DIR with a trained first stage (MODEL_DIR:
    RUN_DIR/best or a checkpoint) and evaluate the images by the fastMRI protocol."""
    from kspace_ldm.training.evaluate import evaluate_first_stage

    result = evaluate_first_stage(model_dir, data_dir, out_dir, device=device)
    click.echo(result.format_table())
    if md_path is not None:
        result.to_markdown(md_path)


# --------------------------------------------------------------------------------------------
@main.group()
def bench() -> None:
    """Benchmarks: fused ops vs eager PyTorch; first-stage training throughput."""


@bench.command("ops")
@_device_option
@_json_option
@click.option("--repeats", type=click.IntRange(min=3), default=15, show_default=True)
@click.option("--only", multiple=True, help="Benchmark only these ops (repeatable).")
@_handle_errors
def bench_ops(device, json_path, repeats, only) -> None:
    """Time each fused kldm op against its eager twin at fastMRI sizes; medians after warm-up."""
    from kspace_ldm.bench import ops as bench_ops_mod

    _require_device(device)
    result = bench_ops_mod.run(device, repeats=repeats, only=list(only) or None)
    click.echo(bench_ops_mod.format_table(result))
    _write_json(json_path, result)


@bench.command("sampler")
@click.option(
    "--model",
    "export_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Export directory (kldm export).",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="LDM run for the Python backend (default: the run named in the manifest).",
)
@click.option("--sampler", type=click.Choice(["cgs", "cgs-ref"]), default="cgs", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="cgs DDIM steps.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--coils",
    type=click.IntRange(min=1),
    default=None,
    help="Coils of the synthetic k-space (default: the export's); more than 1 with a single-coil "
    "export times the coil-agnostic multi-coil path (ESPIRiT + SENSE consistency).",
)
@_json_option
@_handle_errors
def bench_sampler(export_dir, run_dir, sampler, steps, repeats, batch_size, coils, json_path):
    """Seconds per slice of --backend python and --backend cpp side by side, and the time inside
    the network evaluations."""
    from kspace_ldm.bench import sampler as bench_sampler_mod

    result = bench_sampler_mod.run(
        export_dir, run_dir, sampler, steps, repeats, batch_size, log=click.echo, coils=coils
    )
    click.echo(bench_sampler_mod.format_table(result))
    _write_json(json_path, result)


@bench.command("untrained-run")
@click.option("--ae-config", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--ldm-config", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=_out_dir,
)
@click.option("--coils", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--size", default="320x320", show_default=True, help="k-space HxW.")
@_handle_errors
def bench_untrained_run(ae_config, ldm_config, out_dir, coils, size) -> None:
    """Write an untrained first stage + LDM of any configs (for timing, e.g. the reference-size
    models); export it with kldm export OUT/ldm."""
    from kspace_ldm.bench.untrained import write_untrained_run

    ldm = write_untrained_run(ae_config, ldm_config, out_dir, coils, _shape(size, "--size"))
    click.echo(f"untrained LDM run: {ldm}")


@bench.command("train")
@click.option(
    "--config",
    "configs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="First-stage config(s) to measure (repeatable).",
)
@click.option(
    "--size",
    default="1x160x96",
    show_default=True,
    help="Input COILSxHxW (the network sees 2*COILS channels).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True)
@_device_option
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0: torch's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override.")
@_json_option
@_handle_errors
def bench_train(configs, size, batch_size, steps, device, threads, overrides, json_path) -> None:
    """Training samples/s and peak memory of each first-stage config at a stated input size."""
    import torch

    from kspace_ldm.bench import train as bench_train_mod

    _require_device(device)
    try:
        dims = tuple(int(v) for v in size.lower().split("x"))
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected COILSxHxW, got {size!r}", param_hint="--size") from None
    rows = bench_train_mod.run_configs(
        list(configs), dims, batch_size, steps, device, tuple(overrides), threads
    )
    click.echo(f"device: {rows[0]['device']}, torch {torch.__version__}, median of {steps} steps")
    click.echo(bench_train_mod.format_table(rows))
    _write_json(json_path, rows)


# --------------------------------------------------------------------------------------------
@main.command()
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
@_handle_errors
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


# --------------------------------------------------------------------------------------------
@main.command()
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
@_handle_errors
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


if __name__ == "__main__":  # pragma: no cover
    main()
