"""BART (the Berkeley Advanced Reconstruction Toolbox, Debian's ``bart``) as a reference for the CS
baselines: .cfl/.hdr files, ``bart pics`` and ``bart ecalib``.

A ``.cfl`` is raw complex64 in column-major (Fortran) order; its ``.hdr`` lists the dims (16 of
them, BART's ``DIMS``). BART's dim 0 is read-out, 1 phase-encode, 3 coils, so a fastMRI k-space
slice ``[C, H, W]`` (``H`` read-out rows, ``W`` phase-encode columns) is written as BART
``[H, W, 1, C]``. BART's centred unitary FFT (``fftuc``, built from ``fftmod``) puts DC at
``N // 2`` like this project's ``fft2c`` (docs/fft_centering.md), so k-space needs no shift.
Nothing here is needed by ``pip install .``; callers check :func:`bart_available` first.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..physics.espirit import ESPIRIT_DEFAULTS

__all__ = ["bart_available", "bart_ecalib", "bart_pics", "read_cfl", "write_cfl"]


def bart_available() -> bool:
    return shutil.which("bart") is not None


def write_cfl(stem: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (any shape, <= 16 dims, BART dim order) as ``stem.cfl`` + ``stem.hdr``."""
    a = np.asarray(array, dtype=np.complex64)
    dims = list(a.shape) + [1] * (16 - a.ndim)
    Path(f"{stem}.hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    a.ravel(order="F").tofile(f"{stem}.cfl")


def read_cfl(stem: str | Path) -> np.ndarray:
    """Read ``stem.cfl`` (trailing singleton dims dropped)."""
    lines = Path(f"{stem}.hdr").read_text().splitlines()
    dims = [int(d) for d in lines[1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(f"{stem}.cfl", dtype=np.complex64)
    return data.reshape(dims, order="F")


def bart_pics(
    kspace: np.ndarray,
    maps: np.ndarray | None,
    lam: float,
    iterations: int = 100,
    data_scale: float | None = None,
    wavelet: str | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[np.ndarray, float]:
    """``bart pics -l1 -r lam`` on one slice.

    Args:
        kspace: ``[C, H, W]`` complex masked k-space (zeros where not sampled).
        maps: ``[C, H, W]`` sensitivities, or None (single-coil: all ones).
        lam: BART's regularisation parameter ``-r``.
        iterations: ``-i``.
        data_scale: ``-w``: BART divides the data by this before solving (else it picks its own
            scale); ``-S`` scales the image back, so the output is in ``kspace``'s units.
        wavelet: ``--wavelet`` (haar, dau2, cdf44; BART's default dau2).
        extra: further pics flags (e.g. ``("-n",)`` to turn off random cycle spinning).

    Returns:
        (image ``[H, W]`` complex64, seconds of the ``bart`` process).
    """
    k = np.asarray(kspace)
    H, W = k.shape[-2:]
    s = np.ones((1, H, W), np.complex64) if maps is None else np.asarray(maps)
    with tempfile.TemporaryDirectory(prefix="kldm_bart_") as tmp:
        write_cfl(f"{tmp}/k", np.transpose(k, (1, 2, 0))[:, :, None, :])
        write_cfl(f"{tmp}/s", np.transpose(s, (1, 2, 0))[:, :, None, :])
        cmd = ["bart", "pics", "-S", "-l1", "-r", str(lam), "-i", str(iterations)]
        if data_scale is not None:
            cmd += ["-w", str(data_scale)]
        if wavelet is not None:
            cmd += ["--wavelet", wavelet]
        cmd += [*extra, f"{tmp}/k", f"{tmp}/s", f"{tmp}/x"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"bart pics failed ({proc.returncode}): {proc.stderr.strip()}")
        image = read_cfl(f"{tmp}/x").reshape(H, W)
    return image, seconds


def bart_ecalib(
    kspace: np.ndarray, kernel: int | None = None, crop: float | None = None
) -> tuple[np.ndarray, float]:
    """``bart ecalib -m1 -c crop`` (one set of ESPIRiT maps, BART's defaults otherwise) on one
    slice; ``crop`` defaults to the project's (``ESPIRIT_DEFAULTS``, 0.6; BART's own is 0.8), so
    both compute the same maps.

    Args:
        kspace: ``[C, H, W]`` complex masked k-space with a fully sampled centre block.
        kernel: ``-k`` (BART's default 6). BART refuses a kernel wider than the calibration
            region (4 ACS columns at 8x), so callers pass ``min(6, acs - 1)`` there, the clamp
            :func:`kspace_ldm.physics.espirit.espirit_maps` applies itself.

    Returns:
        (maps ``[C, H, W]`` complex64, seconds of the ``bart`` process).
    """
    k = np.asarray(kspace)
    C, H, W = k.shape
    with tempfile.TemporaryDirectory(prefix="kldm_bart_") as tmp:
        write_cfl(f"{tmp}/k", np.transpose(k, (1, 2, 0))[:, :, None, :])
        crop = ESPIRIT_DEFAULTS["crop"] if crop is None else crop
        cmd = ["bart", "ecalib", "-m1", "-c", str(float(crop))]
        if kernel is not None:
            cmd += ["-k", str(int(kernel))]
        cmd += [f"{tmp}/k", f"{tmp}/s"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"bart ecalib failed ({proc.returncode}): {proc.stderr.strip()}")
        maps = read_cfl(f"{tmp}/s").reshape(H, W, C)
    return np.ascontiguousarray(np.transpose(maps, (2, 0, 1))), seconds
