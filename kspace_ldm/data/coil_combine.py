"""Training data for the coil-agnostic model: multi-coil volumes as ESPIRiT-combined single-coil
volumes.

The coil-agnostic sampler (:mod:`kspace_ldm.sampling.sense_dc`) shows a single-coil model the
coil-combined k-space ``F S^H F^-1 y`` (ESPIRiT maps ``S``, ``sum_c |S_c|^2 = 1`` on the support,
0 outside). Training the model on exactly that quantity, computed from *fully sampled*
multi-coil data, puts the training distribution where the sampler works: the ESPIRiT phase (a
common phase from the first principal component of the calibration data), the map support
(zero background outside the ESPIRiT crop) and the combined noise level. docs/training.md
("Coil-agnostic multi-coil model") has the measurement behind this choice.

Each output file is a fastMRI **single-coil** file (``kspace [S, H, W]`` complex64) with

* ``kspace``: ``fft2c(sum_c conj(S_c) ifft2c(y_c))`` of every slice, maps from the fully
  sampled 24 x 24 calibration centre (:func:`~kspace_ldm.physics.espirit.espirit_maps` at its
  defaults, the settings ``kldm recon`` uses);
* ``reconstruction_esc``: ``|ifft2c(kspace)|`` centre-cropped to the recon size (the image the
  combined k-space represents; what the first stage's validation PSNR is scored against);
* ``reconstruction_rss``: the source's RSS target, unchanged;
* the source's ISMRMRD header and attributes, plus ``coil_combine = "espirit"``,
  ``source_coils`` and ``source_file``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..ops import fft2c, ifft2c, sense_adjoint
from ..physics.espirit import espirit_maps
from ..physics.transforms import center_crop
from .fastmri import FastMRIFile, list_h5_files, write_fastmri_file

__all__ = ["coil_combine_file", "coil_combine_folder", "combine_kspace"]


def combine_kspace(kspace: torch.Tensor, where: str = "coil_combine") -> torch.Tensor:
    """ESPIRiT-combined k-space of fully sampled coil k-space.

    Args:
        kspace: ``[B, C, H, W]`` complex (fully sampled; the maps use its 24 x 24 centre).
        where: name in error messages.

    Returns:
        ``[B, H, W]`` complex, same dtype: ``F S^H F^-1 y`` (native ``kldm::sense_adjoint`` with
        an all-ones mask, the adjoint of the sampler's SENSE operator).
    """
    maps = espirit_maps(kspace, where=where)  # [B, C, H, W]
    ones = torch.ones(1, 1, 1, kspace.shape[-1], dtype=torch.bool, device=kspace.device)
    image = sense_adjoint(kspace.contiguous(), maps.to(kspace.dtype), ones)  # [B, 1, H, W]
    return fft2c(image)[:, 0]


def coil_combine_file(src: str | Path, dst: str | Path, batch: int = 8) -> Path:
    """One multi-coil fastMRI file -> one ESPIRiT-combined single-coil file (module docstring)."""
    src, dst = Path(src), Path(dst)
    with FastMRIFile(src) as f:
        if not f.is_multicoil:
            raise InputError(src, "is single-coil; coil combination needs multi-coil k-space")
        coils = f.num_coils
        h, w = f.kspace_shape[-2:]  # the recon matrix clipped to the grid (kldm recon's size)
        crop = (min(f.header.recon_size[0], h), min(f.header.recon_size[1], w))
        rss = f.read_volume_target("reconstruction_rss")
        header = f.header_xml
        attrs = dict(f.attrs)
        out = []
        for start in range(0, f.num_slices, batch):
            stop = min(start + batch, f.num_slices)
            k = torch.from_numpy(np.stack([f.read_kspace(i) for i in range(start, stop)]))
            out.append(combine_kspace(k, where=str(src)))
    kspace = torch.cat(out)  # [S, H, W]
    esc = center_crop(ifft2c(kspace[:, None])[:, 0].abs(), crop).numpy().astype(np.float32)
    for key in ("max", "norm"):  # recomputed by the writer from the new target
        attrs.pop(key, None)
    attrs.update(coil_combine="espirit", source_coils=int(coils), source_file=src.name)
    return write_fastmri_file(
        dst,
        kspace.numpy(),
        reconstruction_esc=esc,
        reconstruction_rss=rss,
        header=header,
        attrs=attrs,
    )


def coil_combine_folder(src_dir: str | Path, dst_dir: str | Path) -> list[Path]:
    """Every ``*.h5`` of ``src_dir`` through :func:`coil_combine_file` into ``dst_dir`` (same
    names)."""
    files = list_h5_files(src_dir)
    if not files:
        raise InputError(src_dir, "no .h5 files")
    return [coil_combine_file(p, Path(dst_dir) / p.name) for p in files]
