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

from kspace_ldm.tables import markdown_table

_IMG = "loss.image_l1_weight=1.0"
_NO_IMG = "loss.image_l1_weight=0"
_SAMPLE = "model.sample_posterior=true"
_MODE = "model.sample_posterior=false"
# Each variant sets every switch it depends on, so the table does not change with the config's
# own defaults. The rows of docs/results.md.
VARIANTS = {
    "standardize + L1(k) [reference], sample": [
        "normalization.mode=standardize",
        "loss.kspace=l1",
        _NO_IMG,
        _SAMPLE,
    ],
    "acs + L2(k), sample": ["normalization.mode=acs", "loss.kspace=l2", _NO_IMG, _SAMPLE],
    "acs + L2(k) + L1(image), sample": ["normalization.mode=acs", "loss.kspace=l2", _IMG, _SAMPLE],
    "acs + radial + L2(k) + L1(image), sample": [
        "normalization.mode=acs",
        "normalization.weighting=radial",
        "loss.kspace=l2",
        _IMG,
        _SAMPLE,
    ],
    "acs + log + L2(k) + L1(image), sample": [
        "normalization.mode=acs",
        "normalization.weighting=log",
        "normalization.log_c=0.01",
        "loss.kspace=l2",
        _IMG,
        _SAMPLE,
    ],
    "acs + L2(k), mode": ["normalization.mode=acs", "loss.kspace=l2", _NO_IMG, _MODE],
    "acs + log + L2(k) + L1(image), mode": [
        "normalization.mode=acs",
        "normalization.weighting=log",
        "normalization.log_c=0.01",
        "loss.kspace=l2",
        _IMG,
        _MODE,
    ],
    "acs + L2(k) + L1(image), mode": ["normalization.mode=acs", "loss.kspace=l2", _IMG, _MODE],
    "standardize + L2(k) + L1(image), mode": [
        "normalization.mode=standardize",
        "loss.kspace=l2",
        _IMG,
        _MODE,
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
    text = markdown_table(["variant", "val rows (step,psnr,ssim,nmse,slices)"], results) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
