"""Markdown tables of an evaluation folder written by scripts/eval_ldm_synth.sh.

    python scripts/ldm_results_table.py EVAL_DIR [--json OUT.json]

Per acceleration: one row per test volume (NMSE / PSNR / SSIM of zero-filled, cgs-ref, cgs), the
mean +- sample std (ddof 1) over volumes, and the seconds per slice that ``kldm recon`` logged.
``--json`` also writes the per-volume numbers as one JSON file.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from kspace_ldm.tables import markdown_row, markdown_table

METHODS = ("zero-filled", "cgs-ref", "cgs")
ACCELS = (("4", "0.08"), ("8", "0.04"))


def _seconds(log: Path) -> str:
    if not log.is_file():
        return "?"
    m = re.search(r"\(([\d.]+) s/slice", log.read_text())
    return m.group(1) if m else "?"


def tables(ev: Path) -> tuple[str, dict]:
    lines, out = [], {}
    for acc, cf in ACCELS:
        data = {}
        for m in METHODS:
            f = ev / f"{m}_{acc}x.json"
            if f.is_file():
                data[m] = json.loads(f.read_text())
        if not data:
            continue
        methods = [m for m in METHODS if m in data]
        lines += [f"**{acc}x** (random mask, centre fraction {cf})", ""]
        first = data[methods[0]]["volumes"]
        rows = []
        for i, vol in enumerate(first):
            cells = []
            for m in methods:
                v = data[m]["volumes"][i]
                assert v["file"] == vol["file"], (v["file"], vol["file"])
                cells.append(f"{v['nmse']:.4f} / {v['psnr']:.2f} / {v['ssim']:.4f}")
            rows.append([vol["file"], *cells])
        header = ["volume", *(f"{m} NMSE / PSNR / SSIM" for m in methods)]
        lines.append(markdown_table(header, rows))
        cells = []
        for m in methods:
            s = data[m]["summary"]
            cells.append(
                f"**{s['nmse']['mean']:.4f} / {s['psnr']['mean']:.2f} / {s['ssim']['mean']:.4f}**"
            )
        lines.append(markdown_row(["mean", *cells]))
        cells = []
        for m in methods:
            s = data[m]["summary"]
            sd = {k: s[k]["std"] for k in ("nmse", "psnr", "ssim")}
            cells.append(f"{sd['nmse']:.4f} / {sd['psnr']:.2f} / {sd['ssim']:.4f}")
        lines.append(markdown_row(["std (ddof 1)", *cells]))
        lines.append(
            markdown_row(["s/slice", *(_seconds(ev / f"{m}_{acc}x.log") for m in methods)])
        )
        lines.append("")
        out[f"{acc}x"] = {
            m: {
                "summary": {k: data[m]["summary"][k] for k in ("nmse", "psnr", "ssim")},
                "volumes": [
                    {k: v[k] for k in ("file", "acquisition", "nmse", "psnr", "ssim")}
                    for v in data[m]["volumes"]
                ],
                "seconds_per_slice": _seconds(ev / f"{m}_{acc}x.log"),
            }
            for m in methods
        }
    return "\n".join(lines), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    text, data = tables(args.eval_dir)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
