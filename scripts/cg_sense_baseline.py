"""Regularised CG-SENSE baseline with ESPIRiT maps, written as fastMRI reconstructions.

    python scripts/cg_sense_baseline.py TEST_DIR OUT_DIR --accel 4 --center-fraction 0.08

Same masks as ``kldm recon`` (seeded by file name), ESPIRiT maps from the calibration region,
``start_iters`` CG steps on ``(A^H A + start_lam I) x = A^H y`` (early-stopped, the settings of
the coil-agnostic sampler's start, :data:`kspace_ldm.sampling.sense_dc.SENSE_DEFAULTS`), then the
per-coil hard data consistency and RSS. Score with ``kldm evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files, write_reconstruction
from kspace_ldm.ops import fft2c
from kspace_ldm.physics.transforms import kspace_to_image
from kspace_ldm.recon import ReconOptions, coil_maps, recon_size, undersample_slices, volume_mask
from kspace_ldm.sampling.cgs import _as_mask
from kspace_ldm.sampling.sense_dc import SenseConsistency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("test_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--accel", type=float, default=4)
    ap.add_argument("--center-fraction", type=float, default=0.08)
    ap.add_argument("--lam", type=float, default=0.05)
    ap.add_argument("--iters", type=int, default=10)
    a = ap.parse_args()
    opts = ReconOptions(accelerations=(a.accel,), center_fractions=(a.center_fraction,))
    for path in list_h5_files(a.test_dir):
        with FastMRIFile(path) as f:
            mask, _ = volume_mask(f, opts)
            k, used = undersample_slices(f, mask, 0, f.num_slices)
            crop = recon_size(f)
        maps = coil_maps(k, path)
        dc = SenseConsistency(k, _as_mask(torch.as_tensor(used), k), maps, final_iters=0)
        x = dc.solve(torch.zeros_like(dc._aty), a.iters, a.lam)
        img = kspace_to_image(dc.final(fft2c(x)), crop=crop, coil_dim=1)
        write_reconstruction(
            Path(a.out_dir) / path.name,
            img.numpy().astype(np.float32),
            attrs={"sampler": f"cg-sense lam={a.lam} iters={a.iters}"},
        )


if __name__ == "__main__":
    main()
