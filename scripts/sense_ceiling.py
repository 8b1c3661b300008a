"""The ceiling of a SENSE reconstruction with ESPIRiT maps: the fully sampled coil images
projected onto the maps (``S S^H``, what any SENSE-model method can reach at best), scored against
the RSS target with the fastMRI protocol, for several eigenvalue crops.

Used to choose nothing by itself: it diagnoses what the maps cost before any undersampling
(docs/results.md, "Multi-coil: the ESPIRiT crop and the kept first-stage error").

    .venv/bin/python scripts/sense_ceiling.py VAL8/multicoil_val [--crops 0.8,0.7,0.6,0.5,0]
"""

from __future__ import annotations

import argparse

import torch
from tune_cgs import load_volumes, score

from kspace_ldm.ops import fft2c, ifft2c
from kspace_ldm.physics.espirit import espirit_maps
from kspace_ldm.physics.transforms import kspace_to_image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--crops", default="0.8,0.7,0.6,0.5,0")
    ap.add_argument("--accel", type=int, default=8, help="mask whose ACS the maps come from")
    ap.add_argument("--slices", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    vols = load_volumes(a.data, a.accel, a.slices)
    for crop in (float(c) for c in a.crops.split(",")):
        images = []
        for v in vols:
            maps = espirit_maps(v["masked"], crop=crop)  # from the ACS of the undersampled scan
            x = (ifft2c(v["full"]) * maps.conj()).sum(1, keepdim=True)  # S^H of the full coils
            coils = fft2c(x * maps)
            images.append(kspace_to_image(coils, crop=v["target"].shape[-2:], coil_dim=1).numpy())
        e, p, s = score(vols, images)
        print(f"crop {crop:.2f}: NMSE {e:.4f} PSNR {p:6.2f} SSIM {s:.4f}")


if __name__ == "__main__":
    main()
