#!/usr/bin/env python
"""Compare k-space normalisation / loss choices for the first stage on the same data and budget.

    python scripts/compare_kspace_norm.py DATA_DIR OUT_DIR [--steps 300] [--jobs 2]

DATA_DIR is a `kldm data synth` folder. Every variant trains configs/synth_ae_kl_3.yaml for the
same number of steps with the same seed; the table of final validation PSNR/SSIM (images formed
from the decoded k-space vs the targets) is printed as Markdown and written to OUT_DIR/table.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = {
    "reference: standardize + L1(k)": [
        "normalization.mode=standardize",
        "loss.kspace=l1",
        "loss.image_l1_weight=0",
    ],
    "reference SAE_KL: standardize + L1(k) + 0.7 SSIM": [
        "normalization.mode=standardize",
        "loss.kspace=l1",
        "loss.image_l1_weight=0",
        "loss.ssim_weight=0.7",
    ],
    "acs + L1(k)": ["normalization.mode=acs", "loss.kspace=l1", "loss.image_l1_weight=0"],
    "acs + L2(k)": ["normalization.mode=acs", "loss.kspace=l2", "loss.image_l1_weight=0"],
    "acs + L2(k) + L1(image)": ["normalization.mode=acs", "loss.kspace=l2"],
    "acs + radial weight + L2(k) + L1(image)": [
        "normalization.mode=acs",
        "normalization.weighting=radial",
        "loss.kspace=l2",
    ],
}


def run(name: str, overrides: list[str], data: Path, out: Path, steps: int) -> tuple[str, str]:
    slug = "".join(c if c.isalnum() else "_" for c in name)[:60]
    cmd = [
        sys.executable,
        "-m",
        "kspace_ldm.cli",
        "train",
        "--config",
        "configs/synth_ae_kl_3.yaml",
        "--out",
        str(out / slug),
        "--set",
        f"data.train={data / 'singlecoil_train'}",
        "--set",
        f"data.val={data / 'singlecoil_val'}",
        "--set",
        f"train.max_steps={steps}",
        "--set",
        f"train.val_every={steps // 3}",
        "--set",
        f"train.ckpt_every={steps}",
        "--set",
        "train.progress=false",
        "--set",
        "optim.warmup_steps=20",
    ]
    for o in overrides:
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return name, f"FAILED: {res.stderr.strip().splitlines()[-1]}"
    rows = (out / slug / "logs" / "val.csv").read_text().splitlines()
    return name, " | ".join(rows[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run, n, o, args.data, args.out, args.steps) for n, o in VARIANTS.items()
        ]
        results = [f.result() for f in futures]
    lines = ["| variant | val rows (step,psnr,ssim,nmse,slices) |", "|---|---|"]
    lines += [f"| {n} | {r} |" for n, r in results]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
