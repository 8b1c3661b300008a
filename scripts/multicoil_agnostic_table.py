"""Per-volume markdown table of ``scripts/eval_multicoil_agnostic.sh`` results.

python scripts/multicoil_agnostic_table.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kspace_ldm.tables import markdown_row, markdown_table

METHODS = ("zero-filled", "cg-sense", "cs-wavelet", "cs-tv", "bart-pics", "cgs")


def main() -> None:
    out = Path(sys.argv[1])
    # the header and its rule; the rows follow per file
    print(markdown_table(["accel", "coils", "volume", *(f"{m} PSNR / SSIM" for m in METHODS)], []))
    means = {}
    for accel in (4, 8):
        for coils in (6, 12, 15):
            runs = {}
            for m in METHODS:
                path = out / f"{m}_{coils}c_{accel}x.json"
                if path.is_file():
                    runs[m] = {v["file"]: v for v in json.loads(path.read_text())["volumes"]}
            if not runs:
                continue
            for name in sorted(next(iter(runs.values()))):
                cells = []
                for m in METHODS:
                    v = runs.get(m, {}).get(name)
                    cells.append(f"{v['psnr']:.2f} / {v['ssim']:.4f}" if v else "-")
                    if v:
                        means.setdefault((accel, m), []).append((v["psnr"], v["ssim"]))
                print(markdown_row([f"{accel}x", coils, name, *cells]))
    for accel in (4, 8):
        cells = []
        for m in METHODS:
            vals = means.get((accel, m), [])
            if vals:
                p = sum(v[0] for v in vals) / len(vals)
                s = sum(v[1] for v in vals) / len(vals)
                cells.append(f"**{p:.2f} / {s:.4f}**")
            else:
                cells.append("-")
        n = len(means.get((accel, "cgs"), []))
        print(markdown_row([f"{accel}x", "all", f"mean of {n} volumes", *cells]))


if __name__ == "__main__":
    main()
