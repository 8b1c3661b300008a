"""Diagnose and tune ``cgs`` against the CS baselines on a synthetic split.

Everything runs in memory on the same masks as ``kldm recon`` / ``kldm compare`` (fastMRI random
masks seeded by file name; 4x cf 0.08, 8x cf 0.04) and scores with the fastMRI protocol
(per-volume PSNR/SSIM/NMSE with the volume max as data range, mean over volumes). Use it on the
VALIDATION split to choose settings; run the chosen setting once on the test split with
``kldm compare``. Multi-coil files run the coil-agnostic path: the ESPIRiT maps of
``kldm recon`` (:func:`kspace_ldm.recon.coil_maps`) for cgs, its refinement and the CS baselines.

    .venv/bin/python scripts/tune_cgs.py DATA/singlecoil_val --variants default,ae,refine \
        [--model kspace_ldm/pretrained/demo/ldm] [--accel 4,8] [--slices 8]

Variants (comma list; each prints one line per acceleration):
  zf                     zero-filled
  cs-wavelet, cs-tv      the CS baselines at their defaults
  ae                     first-stage ceiling: round trip of the FULLY sampled k-space (oracle stats)
  ae-dc                  the same round trip, then hard DC with the undersampled data
  cgs:S:T0:N             cgs with S DDIM steps from t0 T0, posterior mean of N batched samples
  cgs:S:T0:N:RES         the same keeping the fraction RES of the first stage's error on the start
                         (KspaceLDMSampler.cgs residual; multi-coil default SENSE_DEFAULTS)
  cgsr:S:T0:N:LAM:MU:IT  the same followed by the CS-regularised refinement
                         (kspace_ldm.sampling.cgs_refine) with weights LAM, MU and IT iterations
  cgsrn:...              the same without the final hard data consistency
  cgsrz:...              the same (with it) started from the zero-filled image, as cs-wavelet
(the timing of a refinement variant excludes the cgs run when an earlier variant made it)
--map-crop C: ESPIRiT maps with eigenvalue crop C instead of kldm recon's (multi-coil files)
--start cs-wavelet|zero-filled: what every cgs variant starts from (SamplerOptions.start; default
the sampler's default, cs-wavelet; the tables before 2026-12-03 ran from the zero-filled start)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files
from kspace_ldm.metrics import nmse, psnr, ssim
from kspace_ldm.ops import dc_project
from kspace_ldm.physics.transforms import center_crop, kspace_to_image
from kspace_ldm.recon import ReconOptions, batch_seed, coil_maps, undersample_slices, volume_mask
from kspace_ldm.sampling.cgs import CGS_STARTS, KspaceLDMSampler, SamplerOptions
from kspace_ldm.sampling.cgs_refine import cs_refine
from kspace_ldm.sampling.cs import CSOptions, cs_reconstruct
from kspace_ldm.sampling.sense_dc import coil_agnostic_sample

CF = {4: 0.08, 8: 0.04}
# cgs k-space per (volume, acceleration, steps, t0, samples): refinements share it. (Before
# 2026-12-03 the key lacked the acceleration, so 8x cgs/cgsr rows reused the 4x cgs estimate.)
_CACHE: dict = {}


def load_volumes(data, accel, slices, map_crop=None):
    vols = []
    for path in list_h5_files(data):
        f = FastMRIFile(path)
        opts = ReconOptions(accelerations=(accel,), center_fractions=(CF[accel],))
        mask, _ = volume_mask(f, opts)
        n = min(slices, f.num_slices)
        masked, used = undersample_slices(f, mask, 0, n)
        full = torch.stack([torch.from_numpy(f.read_kspace(i)) for i in range(n)])
        target = np.stack([f.read_target(i) for i in range(n)])
        if masked.dim() == 3:  # single-coil [S, H, W] -> [S, 1, H, W]
            masked, full = masked[:, None], full[:, None]
        vols.append(
            dict(
                name=path.name,
                masked=masked,
                full=full,
                maps=_maps(masked, path, map_crop) if masked.shape[1] > 1 else None,
                mask=torch.as_tensor(used),
                target=target,
            )
        )
    return vols


def _maps(masked, path, crop):
    """``kldm recon``'s ESPIRiT maps, or with the eigenvalue crop ``crop`` (``--map-crop``)."""
    if crop is None:
        return coil_maps(masked, path)
    from kspace_ldm.physics.espirit import espirit_maps

    return espirit_maps(masked, crop=crop)


def score(vols, images):
    rows = []
    for v, im in zip(vols, images, strict=True):
        gt = v["target"].astype(np.float32)
        pr = np.asarray(im, dtype=np.float32)
        rows.append((nmse(gt, pr), psnr(gt, pr, gt.max()), ssim(gt, pr, gt.max())))
    return np.mean(rows, axis=0)


def run_variant(name, vols, sampler, accel, start=None):
    parts = name.split(":")
    kind = parts[0]
    out = []
    for v in vols:
        y, m, maps = v["masked"], v["mask"], v["maps"]
        crop = v["target"].shape[-2:]
        if kind == "zf":
            k = y
        elif kind in ("cs-wavelet", "cs-tv"):
            x = cs_reconstruct(kind, y, m, CSOptions(), maps=maps)
            out.append(center_crop(x.abs(), crop).numpy())
            continue
        elif kind in ("ae", "ae-dc"):
            xn, stats = sampler.norm.normalize(v["full"])
            z, pad = sampler.encode(xn)
            k = sampler.norm.denormalize(sampler.decode(z, pad), stats).to(y.dtype)
            if kind == "ae-dc":
                mm = m.reshape(1, 1, 1, -1).bool()
                k = dc_project(k, y, mm, 1.0)
        elif kind in ("cgs", "cgsr", "cgsrn", "cgsrz"):
            # per acceleration (the data differ) and residual
            key = (v["name"], accel, start, *parts[1:4], *parts[4:5] * (kind == "cgs"))
            if key not in _CACHE:
                steps, t0, n = (int(p) for p in parts[1:4])
                gen = torch.Generator().manual_seed(batch_seed(0, v["name"], 0))
                opts = SamplerOptions(steps=steps, t0=t0, samples=n, start=start)
                if kind == "cgs" and len(parts) > 4:  # cgs:S:T0:N:RES, the kept first-stage error
                    res = float(parts[4])
                    if maps is not None:
                        _CACHE[key] = coil_agnostic_sample(
                            sampler, y, m, maps, opts, gen, residual=res
                        )
                    else:
                        k0 = sampler.start_kspace(y, m, opts)
                        _CACHE[key] = sampler.cgs(y, m, opts, gen, start=k0, residual=res)
                else:
                    _CACHE[key] = sampler.sample(y, m, opts, gen, maps=maps)
            k = _CACHE[key]
            if kind != "cgs":
                lam, mu, it = float(parts[4]), float(parts[5]), int(parts[6])
                rstart = "zero-filled" if kind == "cgsrz" else "cgs"
                k = cs_refine(k, y, m, lam, mu, it, dc=kind != "cgsrn", start=rstart, maps=maps)
        else:
            raise SystemExit(f"unknown variant {name}")
        out.append(kspace_to_image(k, crop=crop, coil_dim=1).numpy())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default="kspace_ldm/pretrained/demo/ldm")
    ap.add_argument("--variants", default="zf,cs-wavelet,cgs:5:150:1")
    ap.add_argument("--accel", default="4,8")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--start", choices=CGS_STARTS, default=None)
    ap.add_argument("--map-crop", type=float, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sampler = KspaceLDMSampler.from_run(a.model)
    for accel in (int(x) for x in a.accel.split(",")):
        vols = load_volumes(a.data, accel, a.slices, a.map_crop)
        n_slices = sum(v["masked"].shape[0] for v in vols)
        for name in a.variants.split(","):
            t, c = time.perf_counter(), time.process_time()
            images = run_variant(name, vols, sampler, accel, a.start)
            dt = (time.perf_counter() - t) / n_slices
            dc = (time.process_time() - c) / n_slices  # CPU seconds: less sensitive to load
            e, p, s = score(vols, images)
            line = f"{accel}x {name:32s} NMSE {e:.4f} PSNR {p:6.2f} SSIM {s:.4f}"
            print(f"{line} {dt:.3f} s/slice (CPU {dc:.3f})")


if __name__ == "__main__":
    main()
