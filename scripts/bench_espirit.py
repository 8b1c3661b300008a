"""Seconds per slice of ESPIRiT maps: ``kspace_ldm.physics.espirit`` vs ``bart ecalib -m1``.

    OMP_NUM_THREADS=1 python scripts/bench_espirit.py --coils 15 --shape 640x368 [--device cuda]

One synthetic slice (``kldm data synth`` phantom, ``varied`` coil geometry), 4x random mask with
8 % ACS columns; prints both timings (best of ``--repeat``) and the worst per-pixel agreement
``|<s_ours, s_bart>| / (|s_ours| |s_bart|)`` inside the support.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kspace_ldm.bench.bart import read_cfl, write_cfl
from kspace_ldm.data.masks import create_mask
from kspace_ldm.data.synth import synth_volume
from kspace_ldm.physics.espirit import espirit_maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coils", type=int, default=15)
    ap.add_argument("--shape", default="640x368")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    h, w = map(int, a.shape.split("x"))
    vol = synth_volume(
        7, coils=a.coils, shape=(h, w), recon_size=min(h, w) // 2, slices=1, coil_geometry="varied"
    )
    mask = create_mask("random", [0.08], [4])((1, h, w), seed=0).mask
    k = torch.from_numpy(vol.kspace[0] * mask.astype(np.complex64))  # [C, H, W]
    kd = k[None].to(a.device)
    times = []
    for _ in range(a.repeat):
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        ours = espirit_maps(kd)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    ours = ours[0].cpu()
    print(f"ours ({a.device}): {min(times):.3f} s/slice ({a.coils} coils, {h}x{w})")
    if shutil.which("bart") is None:
        print("bart: not installed")
        return
    d = Path(tempfile.mkdtemp())
    write_cfl(d / "k", k.permute(1, 2, 0).numpy()[:, :, None, :])
    bt = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        subprocess.run(
            ["bart", "ecalib", "-m1", str(d / "k"), str(d / "s")], check=True, capture_output=True
        )
        bt.append(time.perf_counter() - t)
    sb = torch.from_numpy(read_cfl(d / "s").reshape(h, w, a.coils)).permute(2, 0, 1)
    shutil.rmtree(d)
    num = (ours.conj() * sb).sum(0).abs()
    den = ours.abs().square().sum(0).sqrt() * sb.abs().square().sum(0).sqrt()
    both = den > 0
    cos = num[both] / den[both]
    same = ((ours.abs().sum(0) > 0) == (sb.abs().sum(0) > 0)).float().mean()
    print(
        f"bart ecalib -m1: {min(bt):.3f} s/slice; agreement min {cos.min():.6f} "
        f"mean {cos.mean():.6f} on {int(both.sum())} px; same support {100 * same:.2f} %"
    )


if __name__ == "__main__":
    main()
