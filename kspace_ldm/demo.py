"""``kldm demo``: the whole reconstruction path on generated data, end to end.

Synthetic held-out volumes (fastMRI format) -> undersampling with fastMRI random masks at each
acceleration (centre fraction 0.08 at 4x, 0.04 at 8x, per-file seeds) -> reconstruction ->
fastMRI-protocol evaluation -> a PNG panel (target, reconstructions, error maps) and a metrics table
(Markdown and JSON). The reconstruction is zero-filled until the diffusion models are bundled.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kspace_ldm.data.fastmri import FastMRIFile, read_reconstruction
from kspace_ldm.data.synth import synth_dataset
from kspace_ldm.evaluate import evaluate_folders
from kspace_ldm.io import atomic_write_text
from kspace_ldm.recon import ReconOptions, reconstruct
from kspace_ldm.viz import panel, save_png

# fastMRI's pairing of acceleration and centre fraction (paper protocol).
CENTER_FRACTION = {4: 0.08, 8: 0.04}
METHODS = ("zero-filled",)


@dataclass
class DemoSummary:
    """Where the demo wrote its results, and the metrics table it printed."""

    out_dir: Path
    panel: Path
    markdown: Path
    json: Path
    table: str
    metrics: dict


def run_demo(
    out_dir: str | Path,
    accelerations: list[int] | tuple[int, ...] = (4, 8),
    coils: int = 1,
    volumes: int = 2,
    slices: int = 4,
    seed: int = 1000,
    shape: tuple[int, int] = (640, 368),
    progress: bool = True,
) -> DemoSummary:
    """Run the demo into ``out_dir`` and return what it wrote.

    Args:
        accelerations: nominal accelerations; centre fraction from :data:`CENTER_FRACTION`
            (0.08 for others).
        coils: 1 for single-coil volumes, more for multi-coil (RSS targets).
        volumes, slices, shape: size of the generated held-out set.
        seed: data seed (the demo's test split is never used for anything else).
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    written = synth_dataset(
        out / "data",
        0,
        0,
        volumes,
        coils=coils,
        shape=shape,
        slices=slices,
        seed=seed,
        progress=progress,
    )
    test_files = next(paths for split, paths in written.items() if split.endswith("test"))
    target_dir = test_files[0].parent
    seconds: dict[str, float] = {"synthesise": time.perf_counter() - t0}

    metrics: dict = {
        "data": {
            "volumes": volumes,
            "slices": slices,
            "coils": coils,
            "shape": list(shape),
            "seed": seed,
        },
        "accelerations": {},
        "seconds": seconds,
    }
    recon_dirs: dict[tuple[str, int], Path] = {}
    for acc in accelerations:
        cf = CENTER_FRACTION.get(acc, 0.08)
        per_method = {}
        for method in METHODS:
            rdir = out / f"recon_{method}_{acc}x"
            opts = ReconOptions(
                sampler=method, mask_type="random", accelerations=(acc,), center_fractions=(cf,)
            )
            t = time.perf_counter()
            reports = reconstruct(target_dir, rdir, opts, progress=progress)
            n_slices = sum(r.slices for r in reports)
            seconds[f"{method}_{acc}x_per_slice"] = (time.perf_counter() - t) / n_slices
            result = evaluate_folders(rdir, target_dir)
            summ = result.summary()
            per_method[method] = {k: summ[k].mean for k in ("nmse", "psnr", "ssim")} | {
                "effective_acceleration": float(
                    np.mean([r.effective_acceleration for r in reports])
                )
            }
            recon_dirs[(method, acc)] = rdir
        metrics["accelerations"][str(acc)] = {"center_fraction": cf, **per_method}

    # Panel: middle slice of the first volume.
    first = test_files[0]
    with FastMRIFile(first) as f:
        target = f.read_volume_target()
    mid = target.shape[0] // 2
    tgt = target[mid]
    vmax = float(target.max())
    top, bottom, top_lab, bot_lab = [tgt], [np.zeros_like(tgt)], ["target"], [""]
    for (method, acc), rdir in recon_dirs.items():
        rec = read_reconstruction(rdir / first.name)[mid]
        top.append(rec)
        top_lab.append(f"{method} {acc}x")
        bottom.append(np.abs(rec - tgt))
        bot_lab.append(f"|error| x5 {acc}x")
    # Error maps are shown five times brighter (vmax / 5), as is usual for MRI error maps.
    fig = panel(
        [top, bottom],
        [top_lab, bot_lab],
        vmax=[[vmax] * len(top), [vmax] + [vmax / 5] * (len(bottom) - 1)],
    )
    panel_path = save_png(fig, out / "panel.png")

    seconds["total"] = time.perf_counter() - t0
    table = format_table(metrics)
    md_path, json_path = out / "metrics.md", out / "metrics.json"
    atomic_write_text(md_path, table + "\n")
    atomic_write_text(json_path, json.dumps(metrics, indent=2) + "\n")
    return DemoSummary(out, panel_path, md_path, json_path, table, metrics)


def format_table(metrics: dict) -> str:
    """Markdown table: one row per (acceleration, method), fastMRI metrics averaged per volume."""
    lines = [
        "| acceleration | centre fraction | effective R | method | NMSE | PSNR (dB) | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for acc, entry in metrics["accelerations"].items():
        for method in METHODS:
            m = entry[method]
            lines.append(
                f"| {acc}x | {entry['center_fraction']} | {m['effective_acceleration']:.2f} | "
                f"{method} | {m['nmse']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} |"
            )
    return "\n".join(lines)
