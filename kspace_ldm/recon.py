"""``kldm recon``: reconstruct fastMRI (or ISMRMRD raw) files into fastMRI submission files.

Each input volume is undersampled with one mask for all its slices (seeded from the file name, as
fastMRI does, so every method sees the same mask), or, for fastMRI test-set files, with the mask
stored in the file. The reconstruction is written as ``reconstruction`` ``[slices, R, R]`` float32,
``R`` the header's recon size (320 for fastMRI), under the input's file name.

ISMRMRD raw datasets (an HDF5 file with ``/dataset/data`` and ``/dataset/xml``) are read by
:func:`kspace_ldm.data.ismrmrd_io.read_ismrmrd`: an undersampled one carries its own mask (the
lines present), a fully sampled one is undersampled with ``--mask`` like a fastMRI training file.
``ReconOptions.formats`` adds viewer-side outputs (:mod:`kspace_ldm.data.image_io`): ``ismrmrd``
images in ``out/ismrmrd/``, a ``dicom`` series per volume in ``out/dicom/<stem>/``, ``nifti`` in
``out/nifti/`` and ``png`` slices in ``out/png/<stem>/``; ``h5`` is the submission file.
"""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from kspace_ldm.data.fastmri import (
    FastMRIFile,
    is_kldm_reconstruction,
    list_h5_files,
    write_reconstruction,
)
from kspace_ldm.data.masks import MaskResult, apply_mask, create_mask, seed_from_filename
from kspace_ldm.errors import InputError
from kspace_ldm.io import check_output_dir
from kspace_ldm.methods import BACKENDS, CS_SAMPLERS, HYBRID_SAMPLERS, SAMPLERS
from kspace_ldm.physics.transforms import center_crop, kspace_to_image, zero_filled
from kspace_ldm.viz import save_png

if TYPE_CHECKING:
    from kspace_ldm.sampling.cgs import SamplerOptions


def check_backend(backend: str) -> None:
    """One-line :class:`InputError` unless ``backend`` is in :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise InputError(
            "--backend", f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})"
        )


def _sampler_options(**kwargs) -> SamplerOptions:
    # imported on use: the sampler module loads the models and the native core
    from kspace_ldm.sampling.cgs import SamplerOptions

    return SamplerOptions(**kwargs)


@dataclass(frozen=True)
class ReconOptions:
    """How to undersample and reconstruct.

    Attributes:
        sampler: reconstruction method; one of :data:`SAMPLERS`.
        mask_type: fastMRI mask name (``random``, ``equispaced``, ``equispaced_fraction``,
            ``magic``, ``magic_fraction``) or a 2-D type (``poisson_disc``, ``gaussian``).
        accelerations / center_fractions: as fastMRI's mask functions (one pair chosen per file).
        seed: mask seed. None -> per-file seed ``tuple(map(ord, file_name))`` (fastMRI's
            validation protocol); an int -> that seed for every file.
        model: LDM run (or its ``best``) for the diffusion samplers; an export directory
            (``kldm export``) for ``backend="cpp"``; a ``kldm train --stage unet`` run for
            ``unet`` (the supervised baseline, Python backend only).
        backend: ``python`` (the reference implementation, eager PyTorch) or ``cpp``
            (``kldm::Sampler`` on AOTInductor packages; same algorithm, defaults and seeds).
        sampling: the diffusion sampler's settings, a
            :class:`~kspace_ldm.sampling.cgs.SamplerOptions` (steps, t0, guidance, eta, refit,
            samples; None = the sampler's default), the object both backends take. Its
            ``sampler`` is set from :attr:`sampler` and its ``seed`` is the base of the per-batch
            seeds (:func:`batch_seed`: with the file name and the first slice index, so a file's
            result does not depend on the other files).
        cs_lambda / cs_iterations: regularisation weight and iterations of the CS baselines
            (``cs-wavelet``, ``cs-tv``; None = :data:`kspace_ldm.sampling.cs.CS_DEFAULTS`).
        png: also write a preview PNG of the middle slice per volume into ``out/png``.
        device: torch device of the computation.
        batch_size: slices processed together (memory: one batch of k-space at a time).
        formats: outputs to write, from :data:`kspace_ldm.data.image_io.FORMATS` (``h5`` the
            fastMRI submission file, ``ismrmrd``, ``dicom``, ``nifti``, ``png``).
        overwrite: allow replacing existing files in the output folder that are not
            reconstructions written by kldm (never an input file).
        expect_sha256: the sha256 of the model's ``manifest.json`` (export directory, or the
            bundle's), pinned by the caller: checked before anything of the model is loaded.
        coil_combine: multi-coil data with a diffusion sampler: ``espirit`` (coil-agnostic: a
            single-coil model on the ESPIRiT-combined k-space with SENSE data consistency,
            :mod:`kspace_ldm.sampling.sense_dc`), ``channels`` (coils as channels of a
            multi-coil model), or ``auto`` (default): ``espirit`` when the model has one coil
            and the data more, else ``channels``.
    """

    sampler: str = "zero-filled"
    mask_type: str = "random"
    accelerations: Sequence[float] = (4,)
    center_fractions: Sequence[float] = (0.08,)
    seed: int | None = None
    png: bool = False
    device: str = "cpu"
    batch_size: int = 8
    model: str | None = None
    sampling: SamplerOptions = field(default_factory=_sampler_options)
    backend: str = "python"
    formats: Sequence[str] = ("h5",)
    overwrite: bool = False
    expect_sha256: str | None = None
    coil_combine: str = "auto"
    cs_lambda: float | None = None
    cs_iterations: int | None = None


@dataclass
class ReconReport:
    """What happened to one file."""

    source: Path
    output: Path
    slices: int
    seconds: float
    acceleration: float | None
    effective_acceleration: float
    used_file_mask: bool
    extra: dict = field(default_factory=dict)


def open_volume(path: str | Path):
    """A fastMRI file (:class:`FastMRIFile`, read lazily) or an ISMRMRD raw dataset
    (:class:`~kspace_ldm.data.ismrmrd_io.IsmrmrdVolume`, read whole), told apart by the HDF5
    layout; both give the interface ``kldm recon`` uses."""
    from kspace_ldm.data.ismrmrd_io import is_ismrmrd_file, read_ismrmrd

    if Path(path).is_file() and is_ismrmrd_file(path):
        return read_ismrmrd(path)
    return FastMRIFile(path)


def check_calibration(f, options: ReconOptions, mask: np.ndarray) -> None:
    """An undersampled ISMRMRD file needs ACS-flagged lines for the diffusion samplers (their
    normalisation is estimated from the calibration region): a one-line error otherwise."""
    calibration = getattr(f, "calibration", False)
    if options.sampler == "zero-filled" or calibration is not None or not f.has_mask:
        return
    raise InputError(
        f.path,
        f"no calibration lines (no ACQ_IS_PARALLEL_CALIBRATION flags) in an undersampled file "
        f"({int(np.asarray(mask).sum())} of {np.asarray(mask).size} lines); the "
        f"{options.sampler} sampler needs a fully sampled calibration region",
    )


def output_geometry(f, shape: tuple[int, int, int]):
    """The :class:`~kspace_ldm.data.image_io.VolumeGeometry` of a reconstruction ``shape``
    ``[S, Rx, Ry]``: from the ISMRMRD acquisitions, or from a fastMRI file's header FOV."""
    from kspace_ldm.data.image_io import volume_geometry

    geometry = getattr(f, "geometry", None)
    fov = getattr(f, "recon_fov_mm", None)
    if fov is None and getattr(f, "header_xml", None):
        fov = _recon_fov(f.header_xml)
    return volume_geometry(fov, f.header.recon_size[:2], shape[0], geometry)


def _recon_fov(xml: str) -> tuple[float, float, float] | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "reconSpace":
            for fov in el.iter():
                if fov.tag.rsplit("}", 1)[-1] == "fieldOfView_mm":
                    vals = {c.tag.rsplit("}", 1)[-1]: c.text for c in fov}
                    try:
                        return tuple(float(vals[k]) for k in "xyz")  # type: ignore[return-value]
                    except (KeyError, TypeError, ValueError):
                        return None
    return None


def write_outputs(f, recon: np.ndarray, out_dir: Path, options: ReconOptions, attrs: dict):
    """Write ``recon`` ``[S, Rx, Ry]`` in every format of ``options.formats``; returns the paths
    (the submission file first when ``h5`` is asked for)."""
    from kspace_ldm.data import image_io

    stem = f.path.name[: -len(".h5")] if f.path.name.endswith(".h5") else f.path.stem
    formats = list(dict.fromkeys(options.formats))
    unknown = [x for x in formats if x not in image_io.FORMATS]
    if unknown:
        raise InputError(
            "--format", f"unknown format {unknown[0]!r} (available: {', '.join(image_io.FORMATS)})"
        )
    geom = output_geometry(f, recon.shape) if set(formats) - {"h5", "png"} else None
    outputs = []
    for fmt in formats:
        if fmt == "h5":
            outputs.append(write_reconstruction(out_dir / f.path.name, recon, attrs=attrs))
        elif fmt == "ismrmrd":
            outputs.append(
                image_io.write_ismrmrd_images(
                    out_dir / "ismrmrd" / f"{stem}.h5", recon, geom, getattr(f, "header_xml", None)
                )
            )
        elif fmt == "dicom":
            desc = f"kspace-ldm {options.sampler} {stem}"
            attrs_in = f.attrs if hasattr(f, "attrs") else {}
            patient = str(attrs_in.get("patient_id", ""))
            outputs.append(
                image_io.write_dicom_series(
                    out_dir / "dicom" / stem,
                    recon,
                    geom,
                    series_description=desc,
                    patient_id=patient[:64] or "ANONYMOUS",
                    patient_position=str(attrs_in.get("patient_position", "")),
                )
            )
        elif fmt == "nifti":
            outputs.append(image_io.write_nifti(out_dir / "nifti" / f"{stem}.nii.gz", recon, geom))
        else:
            outputs.append(image_io.write_png_slices(out_dir / "png" / stem, recon))
    return outputs


def volume_mask(f: FastMRIFile, options: ReconOptions) -> tuple[np.ndarray, MaskResult | None]:
    """The sampling mask of a volume: one mask for all its slices.

    Returns:
        (mask, mask_result): bool ``[W]`` (or ``[H, W]`` for 2-D masks) before the acquired-window
        padding is applied; ``mask_result`` is None when the file's own mask was used (fastMRI
        test-set files, whose k-space is already undersampled).
    """
    if f.has_mask:
        return f.mask, None
    seed = seed_from_filename(f.path.name) if options.seed is None else options.seed
    try:
        func = create_mask(options.mask_type, options.center_fractions, options.accelerations)
        # (H, W) only: a 3-D shape of width 2 would read as fastMRI's real view (..., H, W, 2)
        result = func(f.kspace_shape[-2:], seed=seed)
    except InputError as err:
        if err.source is None:  # name the file whose k-space the mask does not fit
            raise InputError(f.path, err.problem) from None
        raise
    return result.mask, result


def undersample_slices(
    f: FastMRIFile, mask: np.ndarray, start: int, stop: int, device: str = "cpu"
) -> tuple[torch.Tensor, np.ndarray]:
    """Masked k-space of slices ``start:stop``, read one slice at a time (never the whole file).

    Returns:
        (masked, mask_used): ``[stop - start, (C,) H, W]`` complex64 on ``device``, unacquired
        samples zero; the bool mask after removing columns outside the acquired window.
    """
    hdr = f.header
    kspace = torch.stack([torch.from_numpy(f.read_kspace(i)) for i in range(start, stop)])
    masked, used = apply_mask(
        kspace.to(device), mask, (hdr.padding_left, hdr.padding_right), source=f.path
    )
    return masked, np.asarray(used.cpu() if isinstance(used, torch.Tensor) else used)


def recon_size(f: FastMRIFile) -> tuple[int, int]:
    """Output image size: the header's recon matrix, clipped to the k-space grid."""
    rx, ry = f.header.recon_size[:2]
    h, w = f.kspace_shape[-2:]
    return min(rx, h), min(ry, w)


def load_sampler(options: ReconOptions):
    """The :class:`~kspace_ldm.sampling.cgs.KspaceLDMSampler` of ``options.model`` (None for
    zero-filled and the CS baselines, which need no model; the
    :class:`~kspace_ldm.models.image_unet.ImageUNet` for ``unet``)."""
    if options.sampler == "zero-filled" or options.sampler in CS_SAMPLERS:
        if options.sampler in CS_SAMPLERS and options.backend != "python":
            raise InputError(
                "--backend",
                f"{options.sampler} runs on the python backend only (not {options.backend})",
            )
        return None
    if not options.model:
        raise InputError("--model", f"the {options.sampler} sampler needs --model RUN_DIR")
    if options.sampler == "unet":
        if options.backend != "python":
            raise InputError("--backend", "the unet sampler has only the python backend")
        from kspace_ldm.models.image_unet import load_unet

        return load_unet(options.model, options.device)
    if options.backend == "cpp":
        from kspace_ldm.sampling.cpp import CppSampler

        if options.sampler in HYBRID_SAMPLERS:
            raise InputError(
                "--backend",
                f"{options.sampler} (cgs + CS refinement) runs on the python backend only; the "
                "C++ sampler has cgs and cgs-ref",
            )
        return CppSampler(options.model, options.device, expect_sha256=options.expect_sha256)
    if options.backend != "python":
        raise InputError("--backend", f"unknown backend {options.backend!r} (python, cpp)")
    from kspace_ldm.sampling.cgs import KspaceLDMSampler

    if options.expect_sha256 is not None:
        from kspace_ldm.pretrained import check_pinned_manifest

        check_pinned_manifest(options.model, options.expect_sha256)

    return KspaceLDMSampler.from_run(options.model, options.device)


def batch_seed(sampler_seed: int, name: str, start: int) -> int:
    """The sampler seed of the batch of file ``name`` starting at slice ``start`` (kldm-recon
    computes the same, so both backends and the executable give the same files)."""
    # crc32 of the file name: stable across processes (Python's hash() is salted per process).
    seed = (sampler_seed * 1_000_003 + zlib.crc32(name.encode())) * 8191 + start
    return seed % (2**63)


def batch_options(options: ReconOptions, name: str, start: int) -> SamplerOptions:
    """The :class:`SamplerOptions` of the batch of file ``name`` starting at slice ``start``:
    ``options.sampling`` with the recon's sampler and the batch's seed (either backend)."""
    seed = batch_seed(options.sampling.seed, name, start)
    if options.sampler in HYBRID_SAMPLERS:
        # cgs-cs: cgs, then the CS-regularised final consistency
        refine = HYBRID_SAMPLERS[options.sampler]
        return replace(options.sampling, sampler="cgs", seed=seed, refine=refine)
    return replace(options.sampling, sampler=options.sampler, seed=seed)


def reconstruct_file(
    path: str | Path, out_dir: str | Path, options: ReconOptions, sampler=None
) -> ReconReport:
    """Reconstruct one fastMRI file into ``out_dir/<same name>``.

    ``sampler``: a loaded :class:`~kspace_ldm.sampling.cgs.KspaceLDMSampler` for ``cgs`` /
    ``cgs-ref`` (loaded here from ``options.model`` when not given).
    """
    if options.sampler not in SAMPLERS:
        raise InputError(
            None, f"unknown sampler {options.sampler!r} (available: {', '.join(SAMPLERS)})"
        )
    if options.sampler not in ("zero-filled", *CS_SAMPLERS) and sampler is None:
        sampler = load_sampler(options)
    path = Path(path)
    t0 = time.perf_counter()
    with open_volume(path) as f:
        mask, result = volume_mask(f, options)
        check_calibration(f, options, mask)
        crop = recon_size(f)
        coil_dim = 1 if f.is_multicoil else None
        recon = np.empty((f.num_slices, *crop), dtype=np.float32)
        for start in range(0, f.num_slices, options.batch_size):
            stop = min(start + options.batch_size, f.num_slices)
            masked, mask_used = undersample_slices(f, mask, start, stop, options.device)
            if options.sampler in CS_SAMPLERS:
                from kspace_ldm.sampling.cs import CSOptions, cs_reconstruct

                k = masked if coil_dim is not None else masked[:, None]  # [b, C, H, W]
                m = torch.as_tensor(mask_used, device=k.device)
                # multi-coil: the checked ESPIRiT maps of the cgs path (same SENSE model)
                maps = coil_maps(k, f.path) if k.shape[1] > 1 else None
                x = cs_reconstruct(
                    options.sampler,
                    k,
                    m,
                    CSOptions(options.cs_lambda, options.cs_iterations),
                    maps=maps,
                )
                image = center_crop(x.abs(), crop)  # [b, R, R]
            elif sampler is None:
                image = zero_filled(masked, crop=crop, coil_dim=coil_dim)  # [b, R, R] float32
            elif options.sampler == "unet":
                # The U-Net's input is the zero-filled image at the target size (its training).
                zf = zero_filled(masked, crop=crop, coil_dim=coil_dim)
                with torch.no_grad():
                    image = sampler(zf[:, None].float())[:, 0]
            else:
                k = masked if coil_dim is not None else masked[:, None]  # [b, C, H, W]
                m = torch.as_tensor(mask_used, device=k.device)
                agnostic = coil_agnostic(options, sampler, k.shape[1], f.path)
                extra = {}
                if options.backend == "cpp":  # kldm::Sampler computes its own ESPIRiT maps
                    extra = {"coil_combine": "espirit" if agnostic else "channels"}
                elif agnostic:
                    extra = {"maps": coil_maps(k, f.path)}
                k_out = _sample_named(
                    f.path, sampler, k, m, batch_options(options, path.name, start), **extra
                )
                image = kspace_to_image(k_out, crop=crop, coil_dim=1)
            recon[start:stop] = image.float().cpu().numpy()
        mask = mask_used
        attrs = {
            "sampler": options.sampler,
            **_sampler_attrs(options, 2 if coil_dim is not None else 1),
            "acceleration_nominal": float(result.acceleration) if result else float("nan"),
            "effective_acceleration": float(mask.size / max(int(mask.sum()), 1)),
        }
        outputs = write_outputs(f, recon, Path(out_dir), options, attrs)
        out = outputs[0]
        if options.png:
            mid = recon.shape[0] // 2
            save_png(recon[mid], Path(out_dir) / "png" / f"{path.stem}.png")
        return ReconReport(
            source=path,
            output=out,
            slices=recon.shape[0],
            seconds=time.perf_counter() - t0,
            acceleration=float(result.acceleration) if result else f.acceleration,
            effective_acceleration=attrs["effective_acceleration"],
            used_file_mask=result is None,
            extra={"outputs": [str(p) for p in outputs]},
        )


COIL_COMBINE = ("auto", "espirit", "channels")


def _sample_named(source, sampler, *args, **kwargs):
    """``sampler.sample(*args, **kwargs)`` with a problem of the data named after ``source``
    (the C++ sampler's errors name no file: no calibration region, maps that do not fit)."""
    try:
        return sampler.sample(*args, **kwargs)
    except InputError as err:
        if err.source is None and kwargs.get("coil_combine") == "espirit":
            raise InputError(source, err.problem) from None
        raise


def coil_agnostic(options: ReconOptions, sampler, coils: int, source) -> bool:
    """Whether this data goes through the coil-agnostic path (:attr:`ReconOptions.coil_combine`);
    one-line :class:`InputError` for combinations that cannot run."""
    mode = options.coil_combine
    if mode not in COIL_COMBINE:
        raise InputError("--coil-combine", f"unknown mode {mode!r} ({', '.join(COIL_COMBINE)})")
    if options.backend == "cpp":
        model_coils = int(sampler.info["coils"])  # from the export's manifest
    else:
        model_coils = sampler.ae.in_channels // 2
    if mode == "channels" or coils == 1 or (mode == "auto" and model_coils != 1):
        return False
    if options.sampler != "cgs" and options.sampler not in HYBRID_SAMPLERS:
        raise InputError(
            source, f"coil-agnostic multi-coil needs --sampler cgs or cgs-cs, not {options.sampler}"
        )
    return True


def coil_maps(kspace: torch.Tensor, source) -> torch.Tensor:
    """ESPIRiT maps ``[b, C, H, W]`` of masked multi-coil k-space, checked (one-line errors)."""
    from kspace_ldm.physics.espirit import espirit_maps
    from kspace_ldm.sampling.sense_dc import check_maps

    try:
        maps = espirit_maps(kspace)
    except InputError as err:
        raise InputError(source, err.problem) from None
    check_maps(maps, kspace, str(source))
    return maps


def _sampler_attrs(options: ReconOptions, coils: int = 1) -> dict:
    if options.sampler == "zero-filled":
        return {}
    if options.sampler in CS_SAMPLERS:
        from kspace_ldm.sampling.cs import CSOptions, resolve_settings

        opts = CSOptions(options.cs_lambda, options.cs_iterations)
        d = resolve_settings(options.sampler, opts, coils)
        return {"cs_lambda": d["lam"], "cs_iterations": d["iterations"]}
    if options.sampler == "unet":
        return {"model": str(options.model)}
    out = {
        "model": str(options.model),
        "sampler_seed": options.sampling.seed,
        "backend": options.backend,
        "eta": options.sampling.eta,
        "samples": options.sampling.samples,
        "refit": options.sampling.refit,
        "coil_combine": options.coil_combine,
    }
    if options.sampler in HYBRID_SAMPLERS:
        from kspace_ldm.sampling.cgs_refine import resolve_refine

        out.update({f"refine_{k}": v for k, v in resolve_refine(options.sampling, coils).items()})
    for key in ("steps", "t0", "guidance"):
        value = getattr(options.sampling, key)
        out[key] = "default" if value is None else value
    if options.sampler != "cgs-ref":
        from kspace_ldm.sampling.cgs import resolve_start

        out["start"] = resolve_start(options.sampling)  # the per-coil-channel path: zero-filled
    return out


def shard_for_rank(files: list[Path]) -> list[Path]:
    """The files of this process under ``torchrun`` (``RANK`` of ``WORLD_SIZE``, round robin);
    all files otherwise. Every output is a separate file, so no communication is needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return files[rank::world] if world > 1 else files


def reconstruct(
    input_path: str | Path, out_dir: str | Path, options: ReconOptions, progress: bool = True
) -> list[ReconReport]:
    """Reconstruct a fastMRI file or every ``*.h5`` in a folder (this rank's share under
    ``torchrun``); returns one report per file."""
    check_backend(options.backend)
    if options.expect_sha256 is not None and options.sampler == "zero-filled":
        raise InputError("--expect-sha256", "needs --model (zero-filled loads no model)")
    all_files = list_h5_files(input_path)
    check_outputs(input_path, all_files, out_dir, options.overwrite, options.formats)
    files = shard_for_rank(all_files)
    if options.device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # one GPU per rank, as torchrun's LOCAL_RANK names it
        options = replace(options, device=f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    if options.sampler not in SAMPLERS:
        raise InputError(
            None, f"unknown sampler {options.sampler!r} (available: {', '.join(SAMPLERS)})"
        )
    sampler = load_sampler(options)
    reports = []
    with output_lock(out_dir):
        for p in tqdm(files, desc=f"recon {options.sampler}", unit="vol", disable=not progress):
            reports.append(reconstruct_file(p, out_dir, options, sampler))
    return reports


def check_outputs(
    input_path: str | Path,
    files: list[Path],
    out_dir: str | Path,
    overwrite: bool,
    formats: Sequence[str] = ("h5",),
) -> None:
    """Refuse, before any work, an output folder whose files would replace data.

    Refused: ``out_dir`` is (or resolves to) the input folder or the folder of an input file
    (the outputs take the inputs' names); an output path that is an input file (symlinks
    included); an existing file of an output's name that is not a reconstruction written by
    kldm, unless ``overwrite``. An existing reconstruction is replaced (re-running is safe).
    """
    input_path, out_dir = Path(input_path), Path(out_dir)
    folders = {input_path if input_path.is_dir() else input_path.parent}
    folders |= {f.parent for f in files}
    check_output_dir(out_dir, sorted(folders))
    # the viewer-side formats write into OUT/<format>/: never an input folder either
    for fmt in dict.fromkeys(formats):
        if fmt != "h5":
            check_output_dir(out_dir / fmt, sorted(folders))
    sources = {f.resolve() for f in files}
    for f in files:
        target = out_dir / f.name
        if target.resolve() in sources:
            raise InputError(target, "is an input file; refusing to overwrite it")
        if (target.exists() or target.is_symlink()) and not overwrite:
            if target.is_dir():
                raise InputError(
                    target, "is a directory, where the reconstruction would be written"
                )
            if not is_kldm_reconstruction(target):
                raise InputError(
                    target,
                    "exists and is not a reconstruction written by kldm; refusing to overwrite "
                    "it (give --overwrite to replace it)",
                )


#: The advisory lock file of an output folder (one per rank under torchrun).
LOCK_NAME = ".kldm-recon.lock"


@contextlib.contextmanager
def output_lock(out_dir: str | Path):
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``out_dir/.kldm-recon.lock`` while
    writing; a second ``kldm recon`` into the same folder fails at once with a one-line error
    instead of racing the first (each file would stay complete, but the last writer would win
    silently). Under torchrun each rank locks its own file (``.kldm-recon.rank<R>.lock``): the
    ranks of one run share the folder, two runs of the same ranks clash."""
    import fcntl

    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    name = LOCK_NAME if world <= 1 else f".kldm-recon.rank{os.environ.get('RANK', '0')}.lock"
    path = out_dir / name
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                out_dir,
                f"another kldm recon is writing into this folder (lock {name} is held); "
                "wait for it to finish or choose another --out",
            ) from None
        try:
            yield path
        finally:
            # The lock file goes while still held (an input error must leave no trace in OUT; a
            # run that opens it after this takes a fresh lock, the previous run being done), and
            # so does an output folder this run created and left empty.
            path.unlink(missing_ok=True)
            fcntl.flock(fh, fcntl.LOCK_UN)
    if created and not any(out_dir.iterdir()):
        out_dir.rmdir()
