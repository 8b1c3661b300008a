"""``bart pics -l1`` with ``bart ecalib`` maps (multi-coil), written as fastMRI reconstructions.

    python scripts/bart_pics_baseline.py TEST_DIR OUT_DIR --accel 4 --center-fraction 0.08

Same masks as ``kldm recon`` (seeded by file name). Per slice: ``bart ecalib -m1`` on the masked
coil k-space (BART's ESPIRiT; kernel clamped to the calibration extent minus 1 like
:func:`kspace_ldm.physics.espirit.espirit_maps`, which BART would otherwise refuse at 8x with 4
ACS columns), then ``bart pics -S -l1 -r LAM -i ITERS --wavelet haar -w SCALE`` with the data
scale of ``cs-wavelet`` (99th percentile of the zero-filled SENSE image, computed with BART's
maps), so ``LAM`` means what ``--cs-lambda`` means for ``cs-wavelet``. Output ``|x|``
centre-cropped (BART's maps are normalised like ours, so it compares with the RSS target).
Needs Debian's ``bart`` on PATH. Score with ``kldm evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kspace_ldm.bench.bart import bart_available, bart_ecalib, bart_pics
from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files, write_reconstruction
from kspace_ldm.physics.espirit import ESPIRIT_DEFAULTS, calibration_region
from kspace_ldm.physics.transforms import center_crop
from kspace_ldm.recon import ReconOptions, recon_size, undersample_slices, volume_mask
from kspace_ldm.sampling import cs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("test_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--accel", type=float, default=4)
    ap.add_argument("--center-fraction", type=float, default=0.08)
    # -r chosen on the 8-coil validation volumes of cs.CS_DEFAULTS_MULTICOIL (mean PSNR 4x/8x:
    # 0.01 22.06/20.63, 0.03 22.76/20.34, 0.1 21.07/18.61 dB; docs/cs_tuning_multicoil.md)
    ap.add_argument("--lam", type=float, default=0.03)
    ap.add_argument("--iters", type=int, default=cs.CS_DEFAULTS["cs-wavelet"]["iterations"])
    a = ap.parse_args()
    if not bart_available():
        raise SystemExit("bart is not installed (Debian package bart)")
    torch.set_num_threads(1)
    opts = ReconOptions(accelerations=(a.accel,), center_fractions=(a.center_fraction,))
    for path in list_h5_files(a.test_dir):
        with FastMRIFile(path) as f:
            mask, _ = volume_mask(f, opts)
            k, used = undersample_slices(f, mask, 0, f.num_slices)  # [S, C, H, W]
            crop = recon_size(f)
        m = torch.as_tensor(used)
        H, W = k.shape[-2:]
        images = []
        for i in range(k.shape[0]):
            y = k[i : i + 1]  # [1, C, H, W]
            r0, r1, c0, c1 = calibration_region(y[0].abs().sum(0) > 0)
            kernel = min(ESPIRIT_DEFAULTS["kernel"], r1 - r0 - 1, c1 - c0 - 1)
            maps, _ = bart_ecalib(y[0].numpy(), kernel)
            maps_t = torch.from_numpy(maps)[None]
            scale = float(cs._scale(cs._Forward(y, m, maps_t, (H, W)).adjoint(y))[0])
            img, _ = bart_pics(y[0].numpy(), maps, a.lam, a.iters, data_scale=scale, wavelet="haar")
            images.append(center_crop(torch.from_numpy(np.abs(img))[None], crop)[0].numpy())
        write_reconstruction(
            Path(a.out_dir) / path.name,
            np.stack(images).astype(np.float32),
            attrs={"sampler": f"bart pics -l1 lam={a.lam} iters={a.iters} (bart ecalib maps)"},
        )


if __name__ == "__main__":
    main()
