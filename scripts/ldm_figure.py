"""Figure: target, zero-filled, cgs-ref and cgs (with |error| maps) for one slice per acceleration.

    python scripts/ldm_figure.py --target DATA/singlecoil_test --eval EVAL_DIR --out fig.png
        [--file NAME] [--slice S] [--zoom 4]

EVAL_DIR holds ``<sampler>_<accel>x/<file>.h5`` reconstructions (scripts/eval_ldm_synth.sh).
Error maps are shown x5 on the target's display range.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kspace_ldm.data.fastmri import FastMRIFile, read_reconstruction
from kspace_ldm.metrics import psnr, ssim
from kspace_ldm.viz import panel, save_png

METHODS = ("zero-filled", "cgs-ref", "cgs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--file", default=None)
    ap.add_argument("--slice", type=int, default=None)
    ap.add_argument("--accels", default="4,8")
    ap.add_argument("--zoom", type=int, default=4)
    a = ap.parse_args()
    f = Path(a.target) / a.file if a.file else sorted(Path(a.target).glob("*.h5"))[0]
    with FastMRIFile(f) as fh:
        target = fh.read_volume_target()
        vmax = float(fh.attrs.get("max", target.max())) if hasattr(fh, "attrs") else target.max()
    s = target.shape[0] // 2 if a.slice is None else a.slice
    gt = target[s]
    z = a.zoom

    def up(im: np.ndarray) -> np.ndarray:
        return np.kron(im, np.ones((z, z)))

    rows, labels, vmaxes = [], [], []
    for accel in a.accels.split(","):
        img_row, lab_row, err_row, err_lab = [up(gt)], [f"target ({accel}x)"], [up(gt * 0)], [""]
        for m in METHODS:
            rec = read_reconstruction(a.eval / f"{m}_{accel}x" / f.name)[s]
            p = psnr(gt[None], rec[None], vmax)
            q = ssim(gt[None], rec[None], vmax)
            img_row.append(up(rec))
            lab_row.append(f"{m} {p:.1f}dB {q:.3f}")
            err_row.append(up(np.abs(rec - gt) * 5))
            err_lab.append(f"|{m} - target| x5")
        rows += [img_row, err_row]
        labels += [lab_row, err_lab]
        vmaxes += [[vmax] * len(img_row), [vmax] * len(err_row)]
    save_png(panel(rows, labels, vmaxes), a.out)
    print(f"figure: {a.out} ({f.name}, slice {s})")


if __name__ == "__main__":
    main()
