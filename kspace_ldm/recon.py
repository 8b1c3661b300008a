"""``kldm recon``: reconstruct fastMRI files into fastMRI submission files.

Each input volume is undersampled with one mask for all its slices (seeded from the file name, as
fastMRI does, so every method sees the same mask), or, for fastMRI test-set files, with the mask
stored in the file. The reconstruction is written as ``reconstruction`` ``[slices, R, R]`` float32,
``R`` the header's recon size (320 for fastMRI), under the input's file name.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files, write_reconstruction
from kspace_ldm.data.masks import MaskResult, apply_mask, create_mask, seed_from_filename
from kspace_ldm.errors import InputError
from kspace_ldm.physics.transforms import center_crop, kspace_to_image, zero_filled
from kspace_ldm.viz import save_png

SAMPLERS = ("zero-filled", "cgs", "cgs-ref", "cs-wavelet", "cs-tv")
# Classical compressed-sensing baselines (kspace_ldm.sampling.cs): no model, Python backend only.
CS_SAMPLERS = ("cs-wavelet", "cs-tv")
# The sampler implementations: "python" (kspace_ldm.sampling.cgs, eager PyTorch on an LDM run) and
# "cpp" (kldm::Sampler through kspace_ldm.sampling.cpp, on an export directory).
BACKENDS = ("python", "cpp")


def check_backend(backend: str) -> None:
    """One-line :class:`InputError` unless ``backend`` is in :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise InputError(
            "--backend", f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})"
        )


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
            (``kldm export``) for ``backend="cpp"``.
        backend: ``python`` (the reference implementation, eager PyTorch) or ``cpp``
            (``kldm::Sampler`` on AOTInductor packages; same algorithm, defaults and seeds).
        steps / t0 / guidance / eta: sampler settings (:class:`SamplerOptions`; None = default).
        cs_lambda / cs_iterations: regularisation weight and iterations of the CS baselines
            (``cs-wavelet``, ``cs-tv``; None = :data:`kspace_ldm.sampling.cs.CS_DEFAULTS`).
        sampler_seed: seeds the sampler's generator, per file and batch (with the file name and
            the first slice index), so a file's result does not depend on the other files.
        png: also write a preview PNG of the middle slice per volume into ``out/png``.
        device: torch device of the computation.
        batch_size: slices processed together (memory: one batch of k-space at a time).
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
    steps: int | None = None
    t0: int | None = None
    guidance: float | None = None
    eta: float = 0.0
    sampler_seed: int = 0
    samples: int = 1
    backend: str = "python"
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


def volume_mask(f: FastMRIFile, options: ReconOptions) -> tuple[np.ndarray, MaskResult | None]:
    """The sampling mask of a volume: one mask for all its slices.

    Returns:
        (mask, mask_result): bool ``[W]`` (or ``[H, W]`` for 2-D masks) before the acquired-window
        padding is applied; ``mask_result`` is None when the file's own mask was used (fastMRI
        test-set files, whose k-space is already undersampled).
    """
    if f.has_mask:
        return f.mask, None
    func = create_mask(options.mask_type, options.center_fractions, options.accelerations)
    seed = seed_from_filename(f.path.name) if options.seed is None else options.seed
    result = func(f.kspace_shape, seed=seed)
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
    zero-filled and the CS baselines, which need no model)."""
    if options.sampler == "zero-filled" or options.sampler in CS_SAMPLERS:
        if options.sampler in CS_SAMPLERS and options.backend != "python":
            raise InputError(
                "--backend",
                f"{options.sampler} runs on the python backend only (not {options.backend})",
            )
        return None
    if not options.model:
        raise InputError("--model", f"the {options.sampler} sampler needs --model RUN_DIR")
    if options.backend == "cpp":
        from kspace_ldm.sampling.cpp import CppSampler

        return CppSampler(options.model, options.device)
    if options.backend != "python":
        raise InputError("--backend", f"unknown backend {options.backend!r} (python, cpp)")
    from kspace_ldm.sampling.cgs import KspaceLDMSampler

    return KspaceLDMSampler.from_run(options.model, options.device)


def batch_seed(sampler_seed: int, name: str, start: int) -> int:
    """The sampler seed of the batch of file ``name`` starting at slice ``start`` (kldm-recon
    computes the same, so both backends and the executable give the same files)."""
    # crc32 of the file name: stable across processes (Python's hash() is salted per process).
    seed = (sampler_seed * 1_000_003 + zlib.crc32(name.encode())) * 8191 + start
    return seed % (2**63)


def _batch_generator(options: ReconOptions, name: str, start: int) -> torch.Generator:
    return torch.Generator().manual_seed(batch_seed(options.sampler_seed, name, start))


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
    with FastMRIFile(path) as f:
        mask, result = volume_mask(f, options)
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
                x = cs_reconstruct(
                    options.sampler, k, m, CSOptions(options.cs_lambda, options.cs_iterations)
                )
                image = center_crop(x.abs(), crop)  # [b, R, R]
            elif sampler is None:
                image = zero_filled(masked, crop=crop, coil_dim=coil_dim)  # [b, R, R] float32
            else:
                from kspace_ldm.sampling.cgs import SamplerOptions

                k = masked if coil_dim is not None else masked[:, None]  # [b, C, H, W]
                m = torch.as_tensor(mask_used, device=k.device)
                k_out = sampler.sample(
                    options.sampler,
                    k,
                    m,
                    SamplerOptions(
                        options.steps,
                        options.t0,
                        options.guidance,
                        options.eta,
                        samples=options.samples,
                    ),
                    batch_seed(options.sampler_seed, path.name, start)
                    if options.backend == "cpp"
                    else _batch_generator(options, path.name, start),
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
        out = write_reconstruction(Path(out_dir) / path.name, recon, attrs=attrs)
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
        )


def _sampler_attrs(options: ReconOptions, coils: int = 1) -> dict:
    if options.sampler == "zero-filled":
        return {}
    if options.sampler in CS_SAMPLERS:
        from kspace_ldm.sampling.cs import CSOptions, resolve_settings

        opts = CSOptions(options.cs_lambda, options.cs_iterations)
        d = resolve_settings(options.sampler, opts, coils)
        return {"cs_lambda": d["lam"], "cs_iterations": d["iterations"]}
    out = {
        "model": str(options.model),
        "sampler_seed": options.sampler_seed,
        "backend": options.backend,
        "eta": options.eta,
        "samples": options.samples,
    }
    for key in ("steps", "t0", "guidance"):
        value = getattr(options, key)
        out[key] = "default" if value is None else value
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
    files = shard_for_rank(list_h5_files(input_path))
    if options.device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # one GPU per rank, as torchrun's LOCAL_RANK names it
        options = replace(options, device=f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    if options.sampler not in SAMPLERS:
        raise InputError(
            None, f"unknown sampler {options.sampler!r} (available: {', '.join(SAMPLERS)})"
        )
    sampler = load_sampler(options)
    reports = []
    for p in tqdm(files, desc=f"recon {options.sampler}", unit="vol", disable=not progress):
        reports.append(reconstruct_file(p, out_dir, options, sampler))
    return reports
