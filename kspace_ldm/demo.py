"""``kldm demo``: the product end to end on the bundled pretrained model.

Held-out synthetic volumes (fastMRI format, generated with a seed the training data never used)
-> undersampling with a fastMRI random mask (centre fraction 0.08 at 4x, 0.04 at 8x, seeded per
file) -> zero-filled, compressed-sensing (``cs-wavelet``) and ``cgs`` reconstruction
(:func:`kspace_ldm.recon.reconstruct` on the bundled demo model, :mod:`kspace_ldm.pretrained`)
-> fastMRI-protocol evaluation -> a PNG panel (target, every method, error maps), a Markdown
metrics table and ``metrics.json``::

    {"zero-filled": {"nmse", "psnr", "ssim"}, "cs-wavelet": {...}, "cgs": {...},
     "seconds": {...}, ...}
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kspace_ldm.data.fastmri import FastMRIFile, read_reconstruction
from kspace_ldm.data.synth import synth_dataset
from kspace_ldm.errors import InputError
from kspace_ldm.evaluate import evaluate_folders
from kspace_ldm.io import atomic_write_text
from kspace_ldm.pretrained import demo_model
from kspace_ldm.recon import ReconOptions, check_backend, reconstruct, volume_mask
from kspace_ldm.sampling.cgs import CGS_DEFAULTS, SamplerOptions
from kspace_ldm.tables import markdown_table
from kspace_ldm.viz import panel, save_png

# fastMRI's pairing of acceleration and centre fraction (paper protocol).
CENTER_FRACTION = {4: 0.08, 8: 0.04}
# cs-wavelet: the better CS baseline on the validation split (docs/cs_tuning.md); no model.
METHODS = ("zero-filled", "cs-wavelet", "cgs")
METRICS = ("nmse", "psnr", "ssim")
DEFAULT_SEED = 1000
_PANEL_CELL = 192  # displayed pixels per image side (small images are enlarged, nearest)


@dataclass
class DemoSummary:
    """Where the demo wrote its results, and the metrics table it printed."""

    out_dir: Path
    panel: Path
    markdown: Path
    json: Path
    table: str
    metrics: dict


def _cgs_settings() -> str:
    """The cgs defaults in words (recorded in metrics.json)."""
    d = CGS_DEFAULTS
    return (
        f"cgs defaults ({d['start']} start, {d['steps']} DDIM steps from t0 {d['t0']}, "
        f"guidance {d['guidance']:g}, seed 0)"
    )


def run_demo(
    out_dir: str | Path,
    acceleration: int = 4,
    volumes: int = 4,
    slices: int = 8,
    seed: int = DEFAULT_SEED,
    backend: str = "python",
    samples: int = 1,
    setup_seconds: float | None = None,
    progress: bool = True,
) -> DemoSummary:
    """Run the demo into ``out_dir`` and return what it wrote (its ``data`` and ``recon_*``
    subfolders are replaced).

    Args:
        acceleration: nominal acceleration of the random mask; centre fraction from
            :data:`CENTER_FRACTION` (0.08 for other values).
        volumes, slices: size of the generated held-out set (single-coil, the k-space size and
            recon size of the bundled model's training data).
        seed: data seed; must differ from the seed of the model's training data.
        backend: sampler implementation (:data:`kspace_ldm.recon.BACKENDS`).
        samples: ``cgs`` samples averaged per slice (default sampler settings otherwise).
        setup_seconds: recorded in ``metrics.json`` when given (``scripts/demo.sh`` passes the
            time it spent setting up the environment).
    """
    t_start = time.perf_counter()
    check_backend(backend)
    ldm_dir, manifest = demo_model()
    data = manifest["data"]
    if int(seed) == int(data["seed"]):
        raise InputError(
            "--seed", f"seed {seed} generated the demo model's training data; use another seed"
        )
    cgs_model = _model_for(backend, ldm_dir, tuple(data["shape"]), progress)
    seconds: dict[str, float] = {"verify_model": time.perf_counter() - t_start}
    out = Path(out_dir)
    for own in ("data", *(f"recon_{m}" for m in METHODS)):  # no stale volumes of an earlier run
        shutil.rmtree(out / own, ignore_errors=True)

    t = time.perf_counter()
    written = synth_dataset(
        out / "data",
        0,
        0,
        volumes,
        coils=int(data["coils"]),
        shape=tuple(data["shape"]),
        recon_size=int(data["recon_size"]),
        slices=slices,
        seed=seed,
        progress=progress,
    )
    test_files = written["test"]
    target_dir = test_files[0].parent
    seconds["synthesise"] = time.perf_counter() - t

    cf = CENTER_FRACTION.get(int(acceleration), 0.08)
    metrics: dict = {}
    per_volume: dict[str, dict] = {}
    recon_dirs: dict[str, Path] = {}
    effective = float("nan")
    for method in METHODS:
        rdir = out / f"recon_{method}"
        opts = ReconOptions(
            sampler=method,
            mask_type="random",
            accelerations=(acceleration,),
            center_fractions=(cf,),
            backend=backend if method == "cgs" else "python",
            model=str(cgs_model) if method == "cgs" else None,
            sampling=SamplerOptions(samples=samples),
        )
        t = time.perf_counter()
        reports = reconstruct(target_dir, rdir, opts, progress=progress)
        seconds[method] = time.perf_counter() - t
        seconds[f"{method}_per_slice"] = seconds[method] / sum(r.slices for r in reports)
        effective = float(np.mean([r.effective_acceleration for r in reports]))
        t = time.perf_counter()
        result = evaluate_folders(rdir, target_dir)
        seconds["evaluate"] = seconds.get("evaluate", 0.0) + time.perf_counter() - t
        summ = result.summary()
        metrics[method] = {k: summ[k].mean for k in METRICS}
        per_volume[method] = {
            r.file: {k: getattr(r, k) for k in (*METRICS, "acquisition")} for r in result.rows
        }
        recon_dirs[method] = rdir

    t = time.perf_counter()
    panel_path = _write_panel(out / "panel.png", test_files, recon_dirs, per_volume, opts)
    seconds["panel"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_start
    if setup_seconds is not None:
        seconds["setup"] = float(setup_seconds)

    doc = {
        **metrics,
        "seconds": seconds,
        "acceleration": acceleration,
        "center_fraction": cf,
        "effective_acceleration": effective,
        "mask": "random",
        "torch_threads": torch.get_num_threads(),
        "sampler": {
            "name": "cgs",
            "backend": backend,
            "samples": samples,
            "settings": _cgs_settings(),
        },
        "model": {"bundle": manifest.get("name", "demo"), "path": str(ldm_dir.parent)},
        "data": {
            "volumes": volumes,
            "slices": slices,
            "coils": int(data["coils"]),
            "shape": list(data["shape"]),
            "recon_size": int(data["recon_size"]),
            "seed": seed,
            "files": [p.name for p in test_files],
        },
        "per_volume": per_volume,
    }
    table = format_table(doc)
    md_path, json_path = out / "metrics.md", out / "metrics.json"
    atomic_write_text(md_path, table + "\n")
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    return DemoSummary(out, panel_path, md_path, json_path, table, doc)


def _model_for(backend: str, ldm_dir: Path, size: tuple[int, int], progress: bool) -> Path:
    """What ``--model`` is for ``backend``: the bundled LDM for python; for cpp its export
    (``kldm export``), made on first use into the user cache and reused while the bundle, the
    torch version and the size stay the same. AOTInductor packages are compiled for one torch
    version and one machine's instruction set, so the wheel ships the weights, not packages."""
    if backend == "python":
        return ldm_dir
    import hashlib
    import os

    import torch

    from kspace_ldm.export import export_run, load_manifest

    bundle = hashlib.sha256((ldm_dir.parent / "manifest.json").read_bytes()).hexdigest()[:12]
    key = f"demo-{bundle}-torch{torch.__version__.split('+')[0]}-{size[0]}x{size[1]}"
    cache = Path(os.environ.get("KLDM_CACHE", Path.home() / ".cache" / "kspace-ldm"))
    export = cache / "exports" / key
    if (export / "manifest.json").is_file():
        try:
            load_manifest(export)
            return export
        except InputError:
            pass  # stale or damaged: export again
    log = print if progress else (lambda *_: None)
    log(f"exporting the bundled model for the C++ sampler (once) into {export} ...")
    export_run(ldm_dir, export, "cpu", size, log=log)
    return export


def _zoom(image: np.ndarray) -> np.ndarray:
    """Enlarge a small ``[H, W]`` image by an integer factor (nearest) for display."""
    k = max(1, _PANEL_CELL // max(image.shape))
    return np.kron(image, np.ones((k, k), dtype=image.dtype))


def _write_panel(
    path: Path,
    files: list[Path],
    recon_dirs: dict[str, Path],
    per_volume: dict[str, dict],
    options: ReconOptions,
) -> Path:
    """Middle slice of up to two volumes (one per acquisition when both occur): target and each
    method (labels: the volume's PSNR and SSIM), with the volume's sampling mask and the
    ``|error|`` maps, shown five times brighter, below."""
    acceleration = options.accelerations[0]
    by_acq: dict[str, Path] = {}
    for f in files:
        by_acq.setdefault(per_volume[METHODS[0]][f.name]["acquisition"] or "", f)
    chosen = list(by_acq.values())[:2]
    if len(chosen) < 2:
        chosen = files[:2]
    rows, labels, vmaxes = [], [], []
    for f in chosen:
        with FastMRIFile(f) as fh:
            target = fh.read_volume_target()
            mask, _ = volume_mask(fh, options)  # [W]: the lines every method was given
        mid = target.shape[0] // 2
        tgt, vmax = target[mid], float(target.max())
        mask_image = np.broadcast_to(mask.astype(np.float32), (mask.size, mask.size))
        top, bottom = [_zoom(tgt)], [_zoom(mask_image)]
        top_lab, bot_lab = [f"target {f.stem}"], [f"mask ({mask.size / mask.sum():.2f}x)"]
        for method, rdir in recon_dirs.items():
            rec = read_reconstruction(rdir / f.name)[mid]
            m = per_volume[method][f.name]
            top.append(_zoom(rec))
            top_lab.append(f"{method} {acceleration}x: {m['psnr']:.1f} dB")
            bottom.append(_zoom(np.abs(rec - tgt)))
            bot_lab.append(f"|error| x5, SSIM {m['ssim']:.3f}")
        rows += [top, bottom]
        labels += [top_lab, bot_lab]
        vmaxes += [[vmax] * len(top), [1.0] + [vmax / 5] * (len(bottom) - 1)]
    return save_png(panel(rows, labels, vmax=vmaxes), path)


def format_table(metrics: dict) -> str:
    """Markdown table of the demo: one row per method, fastMRI metrics averaged per volume."""
    d, sec = metrics["data"], metrics["seconds"]
    lines = [
        f"{d['volumes']} held-out synthetic single-coil volumes x {d['slices']} slices "
        f"(seed {d['seed']}), {metrics['acceleration']}x random mask (centre fraction "
        f"{metrics['center_fraction']}, effective R {metrics['effective_acceleration']:.2f}), "
        f"bundled demo model, backend {metrics['sampler']['backend']}",
        "",
    ]
    rows = [
        [
            method,
            f"{metrics[method]['nmse']:.4f}",
            f"{metrics[method]['psnr']:.2f}",
            f"{metrics[method]['ssim']:.4f}",
            f"{sec[f'{method}_per_slice']:.3f}",
        ]
        for method in METHODS
    ]
    header = ["method", "NMSE", "PSNR (dB)", "SSIM", "s/slice"]
    return "\n".join([*lines, markdown_table(header, rows)])
