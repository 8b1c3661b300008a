#!/usr/bin/env python
"""docs/images/phantom_families.png: a few slices of each ``kldm data synth`` phantom family.

Each family gets one row per contrast draw: the middle slice of ``--volumes`` random volumes at
fastMRI geometry (640x368 k-space, 320x320 target, single-coil, default noise), i.e. exactly the
``reconstruction_esc`` targets ``kldm data synth --phantom FAMILY`` writes (same seeds as a
dataset's train split), plus, for the anatomy family, one 2x zoom of the first volume (fine
structure and noise). Every image is scaled to its own 99.5th percentile.

    .venv/bin/python scripts/make_phantom_figure.py [--out docs/images/phantom_families.png]
        [--volumes 4] [--shape 640x368] [--recon-size 320] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kspace_ldm.data.synth import PHANTOMS, synth_volume
from kspace_ldm.viz import panel, save_png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/images/phantom_families.png"))
    p.add_argument("--volumes", type=int, default=4)
    p.add_argument("--shape", default="640x368")
    p.add_argument("--recon-size", type=int, default=320)
    p.add_argument("--slices", type=int, default=3, help="slices per volume (middle one shown)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.shape.lower().split("x"))
    rows, labels, vmax = [], [], []
    for family in PHANTOMS:
        row, lab, vm = [], [], []
        for v in range(args.volumes):
            t0 = time.perf_counter()
            vol = synth_volume(
                np.random.SeedSequence([args.seed, 0, v]),
                shape=(h, w),
                recon_size=args.recon_size,
                slices=args.slices,
                phantom=family,
            )
            sec = time.perf_counter() - t0
            img = vol.reconstruction_rss[args.slices // 2]
            row.append(img)
            lab.append(f"{family} #{v} {vol.attrs['acquisition']}")
            vm.append(float(np.percentile(img, 99.5)))
            print(f"{family} volume {v}: {args.slices} slices in {sec:.2f} s", file=sys.stderr)
        if family == "anatomy":
            img = row[0]
            r = img.shape[0]
            zoom = img[r // 4 : r // 4 + r // 2, r // 4 : r // 4 + r // 2]
            row.append(np.kron(zoom, np.ones((2, 2), np.float32)))
            lab.append("anatomy #0, 2x zoom")
            vm.append(vm[0])
        rows.append(row)
        labels.append(lab)
        vmax.append(vm)
    save_png(panel(rows, labels, vmax), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
