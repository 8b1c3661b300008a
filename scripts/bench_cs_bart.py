"""``cs-wavelet`` against ``bart pics -l1`` (Debian's bart) on the same slices, masks and metrics.

Each volume of a fastMRI folder with targets (default: the demo model's test split, regenerated
with ``kldm data synth`` seed 0) is undersampled exactly as ``kldm recon`` does (one fastMRI random
mask per volume seeded by file name; 4x cf 0.08, 8x cf 0.04) and reconstructed slice by slice by

* ours: :func:`kspace_ldm.sampling.cs.cs_reconstruct` ``cs-wavelet`` at its defaults;
* BART: ``bart pics -S -l1 -r LAM -i ITERS -w SCALE --wavelet haar`` with the same ``LAM``,
  iterations, wavelet and data scale (our 99th-percentile scaling, so ``LAM`` means the same), its
  random cycle spinning and its FISTA; one ``bart`` process per slice (its time includes the
  process start and the .cfl files, as a user calling it would pay);

then evaluated per volume with the fastMRI metrics (``kspace_ldm.metrics``). Prints and writes a
Markdown table (``--out``)::

    .venv/bin/python scripts/bench_cs_bart.py --out docs/bench_cs_bart.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from kspace_ldm.bench.bart import bart_available, bart_pics
from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files
from kspace_ldm.data.synth import synth_dataset
from kspace_ldm.io import atomic_write_text
from kspace_ldm.metrics import psnr, ssim
from kspace_ldm.physics.transforms import center_crop
from kspace_ldm.recon import ReconOptions, recon_size, undersample_slices, volume_mask
from kspace_ldm.sampling import cs
from kspace_ldm.tables import markdown_row, markdown_rule

ACCELS = {4: 0.08, 8: 0.04}
HEADER = [
    "R",
    "volumes x slices",
    "PSNR ours",
    "PSNR bart",
    "max abs vol. PSNR diff",
    "SSIM ours",
    "SSIM bart",
    "s/slice ours",
    "s/slice bart",
]
# BART's name of our default wavelet (BART has haar, dau2 = db2, cdf44)
BART_WAVELET = {"haar": "haar", "db2": "dau2"}[cs.CS_DEFAULTS["cs-wavelet"]["wavelet"]]


def run(data: Path, accel: int, cf: float) -> dict:
    d = cs.CS_DEFAULTS["cs-wavelet"]
    opts = ReconOptions(sampler="cs-wavelet", accelerations=(accel,), center_fractions=(cf,))
    res = {"ours": {"psnr": [], "ssim": [], "s": 0.0}, "bart": {"psnr": [], "ssim": [], "s": 0.0}}
    diffs, n = [], 0
    for path in list_h5_files(data):
        with FastMRIFile(path) as f:
            mask, _ = volume_mask(f, opts)
            crop = recon_size(f)
            target = f.read_volume_target()
            masked, used = undersample_slices(f, mask, 0, f.num_slices)
        k = masked[:, None] if masked.dim() == 3 else masked  # [S, C, H, W]
        m = torch.as_tensor(used)
        vol = {"ours": [], "bart": []}
        for i in range(k.shape[0]):
            y = k[i : i + 1]
            t = time.perf_counter()
            x = cs.cs_reconstruct("cs-wavelet", y, m)
            res["ours"]["s"] += time.perf_counter() - t
            vol["ours"].append(center_crop(x.abs(), crop)[0].numpy())
            H, W = y.shape[-2:]
            scale = float(cs._scale(cs._Forward(y, m, None, (H, W)).adjoint(y))[0])
            img, sec = bart_pics(
                y[0].numpy(),
                None,
                d["lam"],
                d["iterations"],
                data_scale=scale,
                wavelet=BART_WAVELET,
            )
            res["bart"]["s"] += sec
            vol["bart"].append(center_crop(torch.from_numpy(np.abs(img))[None], crop)[0].numpy())
            n += 1
        for who in ("ours", "bart"):
            rec = np.stack(vol[who]).astype(np.float32)
            res[who]["psnr"].append(psnr(target, rec))
            res[who]["ssim"].append(ssim(target, rec))
        diffs.append(res["ours"]["psnr"][-1] - res["bart"]["psnr"][-1])
    for who in ("ours", "bart"):
        res[who]["s"] /= n
    res["max_abs_psnr_diff"] = float(np.max(np.abs(diffs)))
    res["slices"] = n
    res["volumes"] = len(diffs)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="folder with targets (default: make)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not bart_available():
        raise SystemExit("bart is not installed (Debian package bart)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kldm_bench_cs_") as tmp:
        data = args.data
        if data is None:
            synth_dataset(Path(tmp), 32, 2, 4, shape=(96, 96), recon_size=48, slices=8, seed=0)
            data = Path(tmp) / "singlecoil_test"
        d = cs.CS_DEFAULTS["cs-wavelet"]
        lines = [
            f"`cs-wavelet` vs `bart pics -l1` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{platform.machine()}, torch {torch.__version__} on 1 thread, bart "
            f"v0.8.00 from Debian; {d['wavelet']} wavelet, lam "
            f"{d['lam']}, {d['iterations']} iterations for both; command "
            "`.venv/bin/python scripts/bench_cs_bart.py`)",
            "",
            markdown_row(HEADER),
            markdown_rule(len(HEADER)),
        ]
        for accel, cf in ACCELS.items():
            r = run(data, accel, cf)
            o, b = r["ours"], r["bart"]
            row = [
                f"{accel}x",
                f"{r['volumes']} x {r['slices'] // r['volumes']}",
                f"{np.mean(o['psnr']):.2f}",
                f"{np.mean(b['psnr']):.2f}",
                f"{r['max_abs_psnr_diff']:.2f}",
                f"{np.mean(o['ssim']):.4f}",
                f"{np.mean(b['ssim']):.4f}",
                f"{o['s']:.3f}",
                f"{b['s']:.3f}",
            ]
            lines.append(markdown_row(row))
            print(lines[-1])
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
